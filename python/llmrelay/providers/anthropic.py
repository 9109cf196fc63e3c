"""Anthropic Messages API (``base_url`` is the host root, e.g. ``https://api.anthropic.com``).

System messages become the top-level ``system``; images become base64 or URL
image blocks; assistant tool calls become ``tool_use`` blocks and ``tool``
messages become ``tool_result`` blocks of a user turn (consecutive ones merged).
Every SSE event type is handled; an ``error`` event raises a typed error.
OpenAI parameters: ``max_completion_tokens`` is ``max_tokens``,
``parallel_tool_calls=False`` is ``tool_choice.disable_parallel_tool_use``,
``reasoning_effort`` is ``output_config.effort``, ``service_tier="default"`` is
``standard_only``; the penalties, ``logprobs``, ``logit_bias`` and ``n`` > 1 have
no equivalent and are refused before sending.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import msgspec

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
    """A content block: text, tool_use, or a kind the answer does not use (thinking...)."""

    type: str = ""
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None


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


def _wire_usage(u: _Usage | None) -> Usage:
    if u is None:
        return Usage()
    cached = u.cache_read_input_tokens or 0
    prompt = (u.input_tokens or 0) + cached + (u.cache_creation_input_tokens or 0)
    completion = u.output_tokens or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cached,
    )


def map_stop_reason(reason: str | None) -> str | None:
    """Anthropic's ``stop_reason`` as an OpenAI finish reason."""
    if reason is None:
        return None
    return _STOP_REASONS.get(reason, reason)


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
            out.append({"type": "text", "text": part.text or ""})
        else:
            out.append(_image_block(part.image_url or "", f"{field}.content[{j}].image_url"))
    return out


def to_anthropic_messages(
    messages: list[Message],
) -> tuple[list[dict[str, Any]], str | None]:
    """(messages, system) in Anthropic's shape from OpenAI-style messages."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        field = f"messages[{i}]"
        if msg.role == "system":
            system.append(msg.text)
        elif msg.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id}
            if isinstance(msg.content, str):
                block["content"] = msg.content
            elif msg.content:
                block["content"] = _blocks(msg, field)
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
            blocks = _blocks(msg, field)
            for call in msg.tool_calls or ():
                blocks.append(
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                )
            out.append({"role": "assistant", "content": blocks})
        elif isinstance(msg.content, str):
            out.append({"role": "user", "content": msg.content})
        else:
            out.append({"role": "user", "content": _blocks(msg, field)})
    return out, ("\n\n".join(system) if system else None)


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
        return "Respond with a single valid JSON object and nothing else."
    if fmt.get("type") == "json_schema":
        schema = fmt["json_schema"].get("schema", fmt["json_schema"])
        return (
            "Respond with a single valid JSON object, and nothing else, that follows this "
            f"JSON schema: {_encode(schema).decode()}"
        )
    return None


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
        if max_tokens is None:
            max_tokens = capabilities(self.kind, model).max_output_tokens or DEFAULT_MAX_TOKENS
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
        if req.response_format is not None:
            hint = _json_instruction(req.response_format)
            if hint is not None:
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
            body["tools"] = [
                {
                    "name": t["function"]["name"],
                    "description": t["function"].get("description", ""),
                    "input_schema": t["function"].get("parameters")
                    or {"type": "object", "properties": {}},
                }
                for t in req.tools
            ]
            choice = _tool_choice(req.tool_choice) if req.tool_choice is not None else None
            if req.parallel_tool_calls is False:
                choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
            if choice is not None:
                body["tool_choice"] = choice
        if req.user is not None:
            body["metadata"] = {"user_id": req.user}
        if req.reasoning_effort is not None:
            body["output_config"] = {"effort": req.reasoning_effort}
        if req.service_tier is not None:
            body["service_tier"] = _TIERS[req.service_tier]
        if stream:
            body["stream"] = True
        if req.extra:
            body.update(req.extra)
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
        for block in data.content:
            if block.type == "text":
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
        return ChatResponse(
            id=data.id or "",
            model=data.model or model,
            provider=self.deployment,
            text=text,
            message=Message(
                role="assistant",
                content=text if text or not calls else None,
                tool_calls=calls or None,
            ),
            tool_calls=calls,
            finish_reason=map_stop_reason(data.stop_reason),
            usage=_wire_usage(data.usage),
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

    __slots__ = ("_id", "_input_usage", "_resp_model", "_tools")

    framing = "sse"

    def __init__(self, adapter: AnthropicAdapter, model: str) -> None:
        super().__init__(adapter, model)
        self._tools: dict[int, int] = {}  # content block index -> tool call index
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
            return None  # thinking, signature, citations: not part of the answer text
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
        return None  # content_block_stop and event types added later

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
