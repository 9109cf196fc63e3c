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
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from llmrelay._structured import instruction, is_object_schema, schema_of
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
from llmrelay.providers._sse import SSEDecoder, SSEEvent

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


def _usage(u: Any, output: int | None = None) -> Usage:
    if not isinstance(u, dict):
        return Usage()
    cached = u.get("cache_read_input_tokens") or 0
    prompt = (u.get("input_tokens") or 0) + cached + (u.get("cache_creation_input_tokens") or 0)
    completion = output if output is not None else u.get("output_tokens") or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cached,
    )


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
        forced = _forced_tool(req)
        if req.response_format is not None and forced is None:
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
        if forced is not None:  # the schema as the one tool it must call
            body["tools"] = [forced]
            body["tool_choice"] = {"type": "tool", "name": forced["name"]}
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


class _AnthropicStream:
    """Decodes the Messages SSE events up to ``message_stop``."""

    __slots__ = (
        "_adapter",
        "_id",
        "_input_usage",
        "_model",
        "_resp_model",
        "_sse",
        "_tools",
        "done",
    )

    def __init__(self, adapter: AnthropicAdapter, model: str) -> None:
        self._adapter = adapter
        self._model = model
        self._sse = SSEDecoder()
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._input_usage: dict[str, Any] = {}
        self._id: str | None = None
        self._resp_model: str | None = None
        self.done = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        return self._events(self._sse.feed(data))

    def close(self) -> list[ChatChunk]:
        return self._events(self._sse.close())

    def _events(self, events: list[SSEEvent]) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in events:
            if self.done:
                break
            try:
                chunk = self._event(ev)
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
                raise response_error(
                    f"stream event {ev.event!r} has a wrong shape ({type(exc).__name__})",
                    self._adapter.deployment,
                    self._model,
                ) from None
            if chunk is not None:
                out.append(chunk)
        return out

    def _chunk(self, **kw: Any) -> ChatChunk:
        return ChatChunk(
            model=self._resp_model, provider=self._adapter.deployment, id=self._id, **kw
        )

    def _event(self, ev: SSEEvent) -> ChatChunk | None:
        kind = ev.event
        if kind == "ping":
            return None
        try:
            data = _decode(ev.data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise response_error(
                f"stream event {kind!r} is not valid JSON", self._adapter.deployment, self._model
            ) from None
        if not isinstance(data, dict):
            raise TypeError("event is not an object")
        kind = data.get("type", kind)
        if kind == "content_block_delta":
            delta = data["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                return self._chunk(text=delta["text"])
            if dtype == "input_json_delta":
                index = self._tools[data["index"]]
                part = delta.get("partial_json") or ""
                return self._chunk(tool_calls=[ToolCallDelta(index=index, arguments_delta=part)])
            return None  # thinking, signature, citations: not part of the answer text
        if kind == "content_block_start":
            block = data["content_block"]
            if block.get("type") == "tool_use":
                index = self._tools[data["index"]] = len(self._tools)
                args = block.get("input")
                delta = _encode(args).decode() if args else ""
                return self._chunk(
                    tool_calls=[
                        ToolCallDelta(
                            index=index, id=block["id"], name=block["name"], arguments_delta=delta
                        )
                    ]
                )
            if block.get("type") == "text" and block.get("text"):
                return self._chunk(text=block["text"])
            return None
        if kind == "message_start":
            message = data["message"]
            self._id = message.get("id")
            self._resp_model = message.get("model")
            self._input_usage = message.get("usage") or {}
            return None
        if kind == "message_delta":
            usage = {**self._input_usage, **(data.get("usage") or {})}
            reason = (data.get("delta") or {}).get("stop_reason")
            return self._chunk(finish_reason=map_stop_reason(reason), usage=_usage(usage))
        if kind == "message_stop":
            self.done = True
            return None
        if kind == "error":
            adapter = self._adapter
            raise error_from_payload(
                None, data, provider=adapter.deployment, model=self._model, secret=adapter._api_key
            )
        return None  # content_block_stop and event types added later
