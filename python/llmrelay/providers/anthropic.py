"""Anthropic Messages API (``base_url`` is the host root, e.g. ``https://api.anthropic.com``).

System messages become the top-level ``system``; images become base64 or URL
image blocks; assistant tool calls become ``tool_use`` blocks and ``tool``
messages become ``tool_result`` blocks of a user turn (consecutive ones merged).
Every SSE event type is handled; an ``error`` event raises a typed error.
OpenAI parameters: ``max_completion_tokens`` is ``max_tokens``,
``parallel_tool_calls=False`` is ``tool_choice.disable_parallel_tool_use``,
``reasoning_effort`` is ``output_config.effort``, ``service_tier="default"`` is
``standard_only``; ``response_format`` with a JSON schema is a forced tool (an
instruction in the system prompt when the call has tools of its own; JSON mode,
which Anthropic lacks, always is one); the penalties, ``logprobs``, ``logit_bias``
and ``n`` > 1 have no equivalent and are refused before sending.

Extended thinking: ``thinking`` is sent as is; ``thinking`` and
``redacted_thinking`` blocks (plain, and streamed as ``thinking_delta`` /
``signature_delta``) become ``ChatResponse.reasoning`` and the message's
``reasoning_blocks``, which go back first in that assistant turn, signatures
intact. Reasoning without blocks (from another provider) is left out: Anthropic
takes only its own signed blocks. Prompt caching: ``cache_control`` on system
and message parts, on messages and on tools passes through;
``cache_breakpoints="auto"`` places them on the last system block, the last tool
and the last block of the turn before the newest (at most 4 in all).
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import msgspec

from llmrelay._outputspec import instruction, is_object_schema, schema_of
from llmrelay._transport import Events
from llmrelay._types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Message,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from llmrelay._wire import HeaderPairs, WireRequest
from llmrelay.errors import InvalidRequestError
from llmrelay.providers._base import ProviderAdapter
from llmrelay.providers._errors import error_from_payload, response_error
from llmrelay.providers._registry import capabilities
from llmrelay.providers._sse import FramedDecoder

__all__ = ["ANTHROPIC_VERSION", "AnthropicAdapter", "map_stop_reason"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_decode = msgspec.json.decode
_encode = msgspec.json.encode
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# OpenAI's reasoning_effort values that output_config.effort takes as they are
_EFFORTS = frozenset(("low", "medium", "high", "xhigh", "max"))
# OpenAI's service_tier values with an Anthropic equivalent ("auto" is the default: unset)
_TIERS = {"default": "standard_only"}


class _Block(msgspec.Struct):
    """A content block: text, tool_use, thinking / redacted_thinking, or a kind the answer
    does not use."""

    type: str = ""
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _Message(msgspec.Struct):
    content: list[_Block]
    id: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


_MESSAGE = msgspec.json.Decoder(_Message)
_HEADERS = {"anthropic-version": ANTHROPIC_VERSION}
_SSE_HEADERS = {**_HEADERS, "accept": "text/event-stream"}


def _counted(
    input_tokens: int | None, read: int | None, write: int | None, output: int | None
) -> Usage:
    """Anthropic's counts as a Usage: ``input_tokens`` excludes the cache's reads and
    writes, our ``prompt_tokens`` counts them all; an unreported cache count is None."""
    prompt = (input_tokens or 0) + (read or 0) + (write or 0)
    completion = output or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=read,
        cache_write_tokens=write,
    )


def _wire_usage(u: _Usage | None) -> Usage:
    if u is None:
        return Usage()
    return _counted(
        u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens, u.output_tokens
    )


def map_stop_reason(reason: str | None) -> str | None:
    """Anthropic's ``stop_reason`` as an OpenAI finish reason."""
    if reason is None:
        return None
    return _STOP_REASONS.get(reason, reason)


def _own_blocks(msg: Message) -> list[dict[str, Any]]:
    """The message's reasoning blocks Anthropic takes back, each with only its own keys."""
    out: list[dict[str, Any]] = []
    for b in msg.reasoning_blocks or ():
        if b.get("type") == "thinking":
            out.append({"type": "thinking", "thinking": b["thinking"], "signature": b["signature"]})
        elif b.get("type") == "redacted_thinking":
            out.append({"type": "redacted_thinking", "data": b["data"]})
    return out


def _image_block(url: str, field: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        media_type = head[5:].split(";", 1)[0]
        if not sep or ";base64" not in head or not media_type:
            raise InvalidRequestError(
                f"{field}: expected a base64 data: URL (data:<type>;base64,...)", field=field
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(msg: Message, field: str) -> list[dict[str, Any]]:
    content = msg.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if part.type == "text":
            block: dict[str, Any] = {"type": "text", "text": part.text or ""}
        else:
            block = _image_block(part.image_url or "", f"{field}.content[{j}].image_url")
        if part.cache_control is not None:
            block["cache_control"] = part.cache_control
        out.append(block)
    return out


def _mark(content: Any, cc: dict[str, Any]) -> Any:
    """``content`` (a string or a block list) with ``cc`` on its last block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content, "cache_control": cc}] if content else content
    if content:
        content[-1] = {**content[-1], "cache_control": cc}
    return content


def to_anthropic_messages(
    messages: list[Message],
) -> tuple[list[dict[str, Any]], str | list[dict[str, Any]] | None]:
    """(messages, system) in Anthropic's shape from OpenAI-style messages.

    ``system`` is one string, or a list of text blocks when one of the system
    messages carries ``cache_control``.
    """
    system: list[dict[str, Any]] = []
    texts: list[str] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        field = f"messages[{i}]"
        if msg.role == "system":
            texts.append(msg.text)
            parts = msg.content if isinstance(msg.content, list) else ()
            blocks = [
                {"type": "text", "text": p.text or ""}
                | ({"cache_control": p.cache_control} if p.cache_control is not None else {})
                for p in parts
                if p.type == "text"  # a system prompt takes text only
            ] or [{"type": "text", "text": msg.text}]
            if msg.cache_control is not None:
                blocks = _mark(blocks, msg.cache_control)
            system.extend(blocks)
        elif msg.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id}
            if isinstance(msg.content, str):
                block["content"] = msg.content
            elif msg.content:
                block["content"] = _blocks(msg, field)
            if msg.cache_control is not None:
                block["cache_control"] = msg.cache_control
            prev = out[-1] if out else None
            if (
                prev is not None
                and prev["role"] == "user"
                and isinstance(prev["content"], list)
                and prev["content"]
                and prev["content"][-1].get("type") == "tool_result"
            ):
                prev["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif msg.role == "assistant":
            blocks = _own_blocks(msg) + _blocks(msg, field)
            for call in msg.tool_calls or ():
                blocks.append(
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                )
            if msg.cache_control is not None:
                blocks = _mark(blocks, msg.cache_control)
            out.append({"role": "assistant", "content": blocks})
        else:
            user: Any = msg.content if isinstance(msg.content, str) else _blocks(msg, field)
            if msg.cache_control is not None:
                user = _mark(user, msg.cache_control)
            out.append({"role": "user", "content": user})
    if not system:
        return out, None
    if any("cache_control" in b for b in system):
        return out, system
    return out, "\n\n".join(texts)


#: Anthropic takes at most this many cache_control breakpoints in one request.
MAX_BREAKPOINTS = 4


def _count_breakpoints(body: dict[str, Any]) -> int:
    n = sum("cache_control" in t for t in body.get("tools") or ())
    system = body.get("system")
    if isinstance(system, list):
        n += sum("cache_control" in b for b in system)
    for m in body["messages"]:
        if isinstance(m["content"], list):
            n += sum("cache_control" in b for b in m["content"])
    return n


def place_breakpoints(body: dict[str, Any]) -> None:
    """Add cache_control breakpoints (``cache_breakpoints="auto"``): the last tool, the
    last system block and the last block of the turn before the newest, where none is
    yet, up to Anthropic's 4 in all."""
    mark = {"type": "ephemeral"}
    room = MAX_BREAKPOINTS - _count_breakpoints(body)
    tools = body.get("tools")
    if tools and room > 0 and "cache_control" not in tools[-1]:
        tools[-1] = {**tools[-1], "cache_control": mark}
        room -= 1
    system = body.get("system")
    if system and room > 0:
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
        if "cache_control" not in blocks[-1]:
            body["system"] = _mark(blocks, mark)
            room -= 1
    messages = body["messages"]
    if len(messages) >= 2 and room > 0:
        prev = messages[-2]
        content = prev["content"]
        if content and (isinstance(content, str) or "cache_control" not in content[-1]):
            prev["content"] = _mark(list(content) if isinstance(content, list) else content, mark)


def _tool(t: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style tool as an Anthropic one (its ``cache_control`` kept)."""
    fn = t["function"]
    tool = {
        "name": fn["name"],
        "description": fn.get("description", ""),
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    cc = t.get("cache_control")
    if cc is not None:
        tool["cache_control"] = cc
    return tool


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["function"]["name"]}
    return None


def _json_instruction(fmt: dict[str, Any]) -> str | None:
    if fmt.get("type") == "json_object":
        return instruction(None)
    if fmt.get("type") == "json_schema":
        return instruction(schema_of(fmt))
    return None


def _forced_tool(req: ChatRequest) -> dict[str, Any] | None:
    """The tool a JSON-schema ``response_format`` becomes: its input is the answer.

    None (the schema goes into the system prompt instead) when the call has tools
    of its own, asks for extended thinking (which takes no forced tool), or the
    schema's root is not an object (a tool's input must be one).
    """
    fmt = req.response_format
    schema = schema_of(fmt) if fmt is not None else None
    if schema is None or req.tools or "thinking" in (req.extra or {}):
        return None
    if not is_object_schema(schema):
        return None
    assert fmt is not None
    return {
        "name": fmt["json_schema"]["name"],
        "description": "Give your answer as this tool's input; it is the reply.",
        "input_schema": schema,
    }


class AnthropicAdapter(ProviderAdapter):
    """The Anthropic Messages wire protocol."""

    kind = "anthropic"

    def check_request(self, req: ChatRequest, *, stream: bool) -> None:
        """Refuse the OpenAI parameters the Messages API has no equivalent for."""
        super().check_request(req, stream=stream)
        if req.frequency_penalty is not None:
            raise self.unsupported("frequency_penalty", req.frequency_penalty)
        if req.presence_penalty is not None:
            raise self.unsupported("presence_penalty", req.presence_penalty)
        if req.logprobs is not None:
            raise self.unsupported("logprobs", req.logprobs, ": it returns no log probabilities")
        if req.logit_bias is not None:
            raise self.unsupported("logit_bias", req.logit_bias)
        effort = req.reasoning_effort
        if effort is not None and effort not in _EFFORTS:
            raise self.unsupported(
                "reasoning_effort",
                effort,
                " (output_config.effort takes low, medium, high, xhigh, max)",
            )
        if req.thinking is not None:
            if req.temperature is not None and req.temperature != 1.0:
                raise self.unsupported(
                    "temperature", req.temperature, " with thinking (extended thinking takes 1)"
                )
            if req.tool_choice in ("required",) or isinstance(req.tool_choice, dict):
                raise self.unsupported(
                    "tool_choice", req.tool_choice, " with thinking (only auto or none)"
                )
        tier = req.service_tier
        if tier is not None and tier not in _TIERS:
            raise self.unsupported(
                "service_tier", tier, " (it takes 'auto' and 'default', sent as 'standard_only')"
            )

    def chat_body(self, req: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
        """The JSON body of a chat call."""
        self.check_request(req, stream=stream)
        messages, system = to_anthropic_messages(req.messages)
        max_tokens = req.max_tokens
        budget = (req.thinking or {}).get("budget_tokens")
        if max_tokens is None:
            max_tokens = capabilities(self.kind, model).max_output_tokens or DEFAULT_MAX_TOKENS
            if budget is not None and max_tokens <= budget:
                max_tokens = budget + DEFAULT_MAX_TOKENS  # room for the answer after thinking
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
        forced = _forced_tool(req)
        if req.response_format is not None and forced is None:
            hint = _json_instruction(req.response_format)
            if isinstance(system, list) and hint is not None:
                system = [*system, {"type": "text", "text": hint}]
            elif hint is not None:
                system = f"{system}\n\n{hint}" if system else hint
        if system is not None:
            body["system"] = system
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)  # Anthropic's range is 0..1
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop:
            body["stop_sequences"] = req.stop
        if req.tools and req.tool_choice != "none":
            body["tools"] = [_tool(t) for t in req.tools]
            choice = _tool_choice(req.tool_choice) if req.tool_choice is not None else None
            if req.parallel_tool_calls is False:
                choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
            if choice is not None:
                body["tool_choice"] = choice
        if forced is not None:  # the schema as the one tool it must call
            body["tools"] = [forced]
            body["tool_choice"] = {"type": "tool", "name": forced["name"]}
        if req.user is not None:
            body["metadata"] = {"user_id": req.user}
        if req.reasoning_effort is not None:
            body["output_config"] = {"effort": req.reasoning_effort}
        if req.service_tier is not None:
            body["service_tier"] = _TIERS[req.service_tier]
        if req.thinking is not None:
            body["thinking"] = req.thinking
        if stream:
            body["stream"] = True
        if req.extra:
            body.update(req.extra)
        if req.cache_breakpoints == "auto":
            place_breakpoints(body)
        return body

    def _auth(self) -> dict[str, str]:
        return {"x-api-key": self._api_key} if self._api_key else {}

    def wire_chat(self, req: ChatRequest, model: str, *, stream: bool) -> WireRequest:
        return self._wire(
            "POST",
            f"{self.base_url}/v1/messages",
            self.chat_body(req, model, stream=stream),
            _SSE_HEADERS if stream else _HEADERS,
            key=("chat", stream),
            secret=self._auth(),
        )

    def decode_chat(
        self, status: int, headers: HeaderPairs, body: bytes, model: str
    ) -> ChatResponse:
        data = self._decode_reply(status, headers, body, model, _MESSAGE, "a message")
        texts: list[str] = []
        calls: list[ToolCall] = []
        thoughts: list[str] = []
        kept: list[dict[str, Any]] = []
        for block in data.content:
            if block.type == "thinking":
                if block.thinking is None or block.signature is None:
                    raise self.bad_reply(
                        "reply is not a message (thinking block without thinking or signature)",
                        status,
                        headers,
                        model,
                    )
                thoughts.append(block.thinking)
                kept.append(
                    {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
                )
            elif block.type == "redacted_thinking":
                if block.data is None:
                    raise self.bad_reply(
                        "reply is not a message (redacted_thinking without data)",
                        status,
                        headers,
                        model,
                    )
                kept.append({"type": "redacted_thinking", "data": block.data})
            elif block.type == "text":
                if block.text is None:
                    raise self.bad_reply(
                        "reply is not a message (text block without text)", status, headers, model
                    )
                texts.append(block.text)
            elif block.type == "tool_use":
                if block.id is None or block.name is None:
                    raise self.bad_reply(
                        "reply is not a message (tool_use without id or name)",
                        status,
                        headers,
                        model,
                    )
                calls.append(ToolCall(id=block.id, name=block.name, arguments=block.input or {}))
        text = "".join(texts)
        reasoning = "".join(thoughts) if thoughts else None
        return ChatResponse(
            id=data.id or "",
            model=data.model or model,
            provider=self.deployment,
            text=text,
            message=Message(
                role="assistant",
                content=text if text or not (calls or kept) else None,
                tool_calls=calls or None,
                reasoning=reasoning,
                reasoning_blocks=kept or None,
            ),
            tool_calls=calls,
            finish_reason=map_stop_reason(data.stop_reason),
            usage=_wire_usage(data.usage),
            reasoning=reasoning,
        )

    def stream_decoder(self, model: str) -> _AnthropicStream:
        return _AnthropicStream(self, model)

    def wire_embed(self, inputs: list[str], model: str, params: dict[str, Any]) -> WireRequest:
        raise InvalidRequestError(
            f"model={model!r}: anthropic has no embeddings API; use an openai or ollama deployment",
            field="model",
        )

    async def list_models(self, client: httpx.AsyncClient) -> list[str]:
        request = self._request(
            "GET", f"{self.base_url}/v1/models", headers=_HEADERS, secret=self._auth()
        )
        resp, data = await self._call_json(client, request, None)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError) as exc:
            raise response_error(
                f"reply is not a model list ({type(exc).__name__})", self.deployment, None, resp
            ) from None


class _StreamDelta(msgspec.Struct, gc=False):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None
    thinking: str | None = None
    signature: str | None = None


class _StreamMessage(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _StreamEvent(msgspec.Struct):
    """One Messages stream event (its ``type`` names it; the SSE event name if absent)."""

    type: str | None = None
    index: int | None = None
    delta: _StreamDelta | None = None
    content_block: _Block | None = None
    message: _StreamMessage | None = None
    usage: _Usage | None = None


_EVENT = msgspec.json.Decoder(_StreamEvent)


def _merged(first: _Usage | None, last: _Usage | None) -> _Usage | None:
    """``message_start``'s usage updated by ``message_delta``'s (its fields win when set)."""
    if first is None or last is None:
        return last or first
    return _Usage(
        input_tokens=last.input_tokens if last.input_tokens is not None else first.input_tokens,
        output_tokens=last.output_tokens if last.output_tokens is not None else first.output_tokens,
        cache_read_input_tokens=last.cache_read_input_tokens
        if last.cache_read_input_tokens is not None
        else first.cache_read_input_tokens,
        cache_creation_input_tokens=last.cache_creation_input_tokens
        if last.cache_creation_input_tokens is not None
        else first.cache_creation_input_tokens,
    )


class _AnthropicStream(FramedDecoder):
    """Decodes the Messages SSE events up to ``message_stop``, each with a typed struct
    in one step."""

    __slots__ = ("_id", "_input_usage", "_resp_model", "_thinking", "_tools")

    framing = "sse"

    def __init__(self, adapter: AnthropicAdapter, model: str) -> None:
        super().__init__(adapter, model)
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        # content block index -> the thinking block being streamed (text, signature)
        self._thinking: dict[int, dict[str, Any]] = {}
        self._input_usage: _Usage | None = None
        self._id: str | None = None
        self._resp_model: str | None = None

    def events(self, batch: Events) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for name, data in batch:
            if self.done:
                break
            if name == "ping":
                continue
            chunk = self._event(name, data)
            if chunk is not None:
                out.append(chunk)
        return out

    def _chunk(self, **kw: Any) -> ChatChunk:
        return ChatChunk(
            model=self._resp_model, provider=self._adapter.deployment, id=self._id, **kw
        )

    def _event(self, name: str, data: bytes) -> ChatChunk | None:
        try:
            ev = _EVENT.decode(data)
        except msgspec.ValidationError as exc:
            self._raise_error_event(name, data)
            raise self.bad(f"stream event {name!r} has a wrong shape ({exc})") from None
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise self.bad(f"stream event {name!r} is not valid JSON") from None
        kind = ev.type or name
        if kind == "error":
            self._raise_error_event(name, data)
            raise self.bad("error event is not an object")
        try:
            return self._typed(kind, ev)
        except (KeyError, TypeError, ValueError) as exc:
            raise self.bad(f"stream event {kind!r} has a wrong shape ({exc})") from None

    def _typed(self, kind: str, ev: _StreamEvent) -> ChatChunk | None:
        if kind == "content_block_delta":
            delta = _need(ev.delta, "delta")
            if delta.type == "text_delta":
                return self._chunk(text=_need(delta.text, "delta.text"))
            if delta.type == "input_json_delta":
                index = self._tools[_need(ev.index, "index")]
                part = delta.partial_json or ""
                return self._chunk(tool_calls=[ToolCallDelta(index=index, arguments_delta=part)])
            if delta.type == "thinking_delta":
                piece = _need(delta.thinking, "delta.thinking")
                self._thinking[_need(ev.index, "index")]["thinking"] += piece
                return self._chunk(reasoning=piece) if piece else None
            if delta.type == "signature_delta":
                streaming = self._thinking[_need(ev.index, "index")]
                streaming["signature"] += _need(delta.signature, "delta.signature")
            return None  # citations: not part of the answer text
        if kind == "content_block_stop":
            # a thinking block goes out whole (signature intact) when it ends
            done = self._thinking.pop(ev.index if ev.index is not None else -1, None)
            return None if done is None else self._chunk(reasoning_blocks=[done])
        if kind == "content_block_start":
            block = _need(ev.content_block, "content_block")
            if block.type == "tool_use":
                index = self._tools[_need(ev.index, "index")] = len(self._tools)
                args = block.input
                call = ToolCallDelta(
                    index=index,
                    id=_need(block.id, "content_block.id"),
                    name=_need(block.name, "content_block.name"),
                    arguments_delta=_encode(args).decode() if args else "",
                )
                return self._chunk(tool_calls=[call])
            if block.type == "text" and block.text:
                return self._chunk(text=block.text)
            if block.type == "thinking":
                first = block.thinking or ""
                self._thinking[_need(ev.index, "index")] = {
                    "type": "thinking",
                    "thinking": first,
                    "signature": block.signature or "",
                }
                return self._chunk(reasoning=first) if first else None
            if block.type == "redacted_thinking":
                redacted = {"type": "redacted_thinking", "data": _need(block.data, "data")}
                return self._chunk(reasoning_blocks=[redacted])
            return None
        if kind == "message_start":
            message = _need(ev.message, "message")
            self._id = message.id
            self._resp_model = message.model
            self._input_usage = message.usage
            return None
        if kind == "message_delta":
            reason = ev.delta.stop_reason if ev.delta is not None else None
            usage = _wire_usage(_merged(self._input_usage, ev.usage))
            return self._chunk(finish_reason=map_stop_reason(reason), usage=usage)
        if kind == "message_stop":
            self.done = True
        return None  # event types added later

    def _raise_error_event(self, name: str, data: bytes) -> None:
        """Raise the typed error of an error event (its ``type``, else its SSE name, is
        ``error``), else return."""
        try:
            payload = _decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return
        if isinstance(payload, dict) and payload.get("type", name) == "error":
            adapter = self._adapter
            raise error_from_payload(
                None,
                payload,
                provider=adapter.deployment,
                model=self._model,
                secret=adapter._api_key,
            )


_V = TypeVar("_V")


def _need(value: _V | None, what: str) -> _V:
    """``value``, or KeyError naming the missing field."""
    if value is None:
        raise KeyError(what)
    return value
