"""OpenAI Chat Completions, and any OpenAI-compatible server by ``base_url`` (with ``/v1``).

Chat (plain and SSE-streamed with ``stream_options.include_usage``), tools and
streamed tool-call deltas, ``response_format`` (a JSON schema natively, or as JSON
mode or an instruction where the model lacks it: ``structured_mode``) and the other
OpenAI parameters passed through (``n`` gives ``ChatResponse.alternatives``, ``logprobs`` the
token log probabilities), ``/embeddings`` (``encoding_format="base64"`` decoded
to floats) and ``/models``.

Reasoning: an OpenAI-compatible server's ``reasoning_content`` (DeepSeek, vLLM,
llama.cpp; ``reasoning`` on newer vLLM), plain and streamed, is
``ChatResponse.reasoning`` and the message's ``reasoning``, sent back as
``reasoning_content`` on that assistant turn (never to ``api.openai.com``, which
has no such field); Anthropic's signed thinking blocks are never sent.
``cache_control`` (Anthropic's) is left out. Usage: ``prompt_tokens_details.
cached_tokens`` and ``completion_tokens_details.reasoning_tokens``, None when
the server does not report them.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any, ClassVar

import httpx
import msgspec

from llmrelay._outputspec import instruction, schema_of, with_instruction
from llmrelay._transport import Events
from llmrelay._types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    EmbeddingResponse,
    Message,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
    parse_arguments,
)
from llmrelay._wire import HeaderPairs, WireRequest
from llmrelay.errors import ConfigError
from llmrelay.providers._base import ProviderAdapter
from llmrelay.providers._errors import error_from_payload, response_error
from llmrelay.providers._registry import UNKNOWN_MODEL, capabilities
from llmrelay.providers._sse import FramedDecoder

__all__ = ["OpenAIAdapter"]

_decode = msgspec.json.decode
# models that take max_completion_tokens instead of max_tokens
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


# ---- the wire format of a reply: decoded in one step, every field typed ----------------------


class _Function(msgspec.Struct, gc=False):
    name: str
    arguments: str | dict[str, Any] = ""


class _Call(msgspec.Struct):
    id: str
    function: _Function
    type: str = "function"


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_Call] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class _Logprobs(msgspec.Struct):
    content: list[TokenLogprob] | None = None


class _Choice(msgspec.Struct):
    message: _Message
    index: int | None = None
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _PromptDetails(msgspec.Struct, gc=False):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct, gc=False):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _Embedding(msgspec.Struct):
    embedding: list[float] | str
    index: int = 0


class _EmbedUsage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    total_tokens: int | None = None


class _Embeddings(msgspec.Struct):
    data: list[_Embedding]
    model: str | None = None
    usage: _EmbedUsage | None = None


_SSE = {"accept": "text/event-stream"}
_COMPLETION = msgspec.json.Decoder(_Completion)
_EMBEDDINGS = msgspec.json.Decoder(_Embeddings)
_NO_USAGE = Usage()


def _wire_usage(u: _Usage | None) -> Usage:
    if u is None:
        return _NO_USAGE
    prompt = u.prompt_tokens or 0
    completion = u.completion_tokens or 0
    details = u.prompt_tokens_details
    out = u.completion_tokens_details
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=u.total_tokens or prompt + completion,
        cached_tokens=details.cached_tokens if details is not None else None,
        reasoning_tokens=out.reasoning_tokens if out is not None else None,
    )


def _wire_call(c: _Call) -> ToolCall:
    """A tool call of the reply; ValueError names what is wrong with it."""
    if not c.id or not c.function.name or c.type != "function":
        raise ValueError("a tool call needs an id, a name and type 'function'")
    args = c.function.arguments
    if isinstance(args, dict):
        return ToolCall(id=c.id, name=c.function.name, arguments=args)
    parsed = parse_arguments(args)
    if parsed is None:
        return ToolCall(id=c.id, name=c.function.name, arguments={}, raw_arguments=args)
    return ToolCall(id=c.id, name=c.function.name, arguments=parsed)


def _wire_choice(raw: _Choice, position: int) -> Choice:
    """One entry of ``choices`` (ordered by ``index``, which OpenAI sends in order)."""
    msg = raw.message
    text = msg.content or ""
    calls = [_wire_call(c) for c in msg.tool_calls] if msg.tool_calls else []
    lp = raw.logprobs
    reasoning = msg.reasoning_content if msg.reasoning_content is not None else msg.reasoning
    return Choice(
        index=raw.index if raw.index is not None else position,
        text=text,
        message=Message(
            role="assistant",
            content=text if text or not calls else None,
            tool_calls=calls or None,
            reasoning=reasoning or None,
        ),
        finish_reason=raw.finish_reason,
        logprobs=lp.content if lp is not None else None,
    )


def openai_message(msg: Message, reasoning: bool) -> dict[str, Any]:
    """A message as the Chat Completions API takes it: no ``thinking_blocks`` or
    ``cache_control`` (Anthropic's), ``reasoning_content`` only when ``reasoning``
    and the reasoning is not one of Anthropic's signed blocks."""
    d = msg.to_dict()
    d.pop("thinking_blocks", None)
    d.pop("cache_control", None)
    if not reasoning or msg.reasoning_blocks:
        d.pop("reasoning_content", None)
    content = d.get("content")
    if isinstance(content, list) and msg.content is not None:
        d["content"] = [{k: v for k, v in p.items() if k != "cache_control"} for p in content]
    return d


def _openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if "cache_control" not in tool:
        return tool
    return {k: v for k, v in tool.items() if k != "cache_control"}


def _plain_message(m: Message) -> bool:
    """Whether ``m.to_dict()`` is already what the Chat Completions API takes."""
    if m.reasoning is not None or m.reasoning_blocks or m.cache_control is not None:
        return False
    return not isinstance(m.content, list) or all(p.cache_control is None for p in m.content)


def _vector(raw: list[float] | str) -> list[float]:
    """One embedding: a float list, or (``encoding_format="base64"``) little-endian float32s."""
    if isinstance(raw, str):
        packed = base64.b64decode(raw, validate=True)
        if len(packed) % 4:
            raise ValueError("base64 embedding is not a whole number of float32s")
        values = list(struct.unpack(f"<{len(packed) // 4}f", packed))
        if not math.isfinite(sum(values)):  # NaN or infinity: JSON floats cannot be either
            raise ValueError("base64 embedding holds a NaN or an infinity")
        return values
    return raw


class OpenAIAdapter(ProviderAdapter):
    """The OpenAI Chat Completions wire protocol."""

    kind = "openai"
    supports_n = True
    #: How a JSON schema is asked for when the model's capabilities do not say:
    #: ``"json_schema"``, ``"json_object"`` or ``"prompt"`` (see ``structured_mode``).
    structured_default: ClassVar[str] = "json_schema"

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def check_request(self, req: ChatRequest, *, stream: bool) -> None:
        """Refuse Anthropic's ``thinking``: Chat Completions takes ``reasoning_effort``."""
        super().check_request(req, stream=stream)
        if req.thinking is not None:
            raise self.unsupported("thinking", req.thinking, "; use reasoning_effort")

    def chat_body(self, req: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
        """The JSON body of a chat call."""
        self.check_request(req, stream=stream)
        reasoning = "api.openai.com" not in self.base_url  # OpenAI has no reasoning_content
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                m.to_dict() if _plain_message(m) else openai_message(m, reasoning)
                for m in req.messages
            ],
        }
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.max_completion_tokens is not None:
            body["max_completion_tokens"] = req.max_completion_tokens
        elif req.max_tokens is not None:
            key = "max_completion_tokens" if model.startswith(_REASONING_PREFIXES) else "max_tokens"
            body[key] = req.max_tokens
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None:
            body["seed"] = req.seed
        if req.tools:
            body["tools"] = [_openai_tool(t) for t in req.tools]
        if req.tool_choice is not None:
            body["tool_choice"] = req.tool_choice
        if req.response_format is not None:
            self._response_format(body, req.response_format, model)
        if req.user is not None:
            body["user"] = req.user
        if req.frequency_penalty is not None:
            body["frequency_penalty"] = req.frequency_penalty
        if req.presence_penalty is not None:
            body["presence_penalty"] = req.presence_penalty
        if req.logprobs is not None:
            body["logprobs"] = req.logprobs
        if req.top_logprobs is not None:
            body["top_logprobs"] = req.top_logprobs
        if req.parallel_tool_calls is not None and req.tools:
            body["parallel_tool_calls"] = req.parallel_tool_calls
        if req.reasoning_effort is not None:
            body["reasoning_effort"] = req.reasoning_effort
        if req.n is not None:
            body["n"] = req.n
        if req.logit_bias is not None:
            body["logit_bias"] = req.logit_bias
        if req.service_tier is not None:
            body["service_tier"] = req.service_tier
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if req.extra:
            body.update(req.extra)
        return body

    def structured_mode(self, model: str) -> str:
        """How this deployment asks ``model`` for a JSON schema: ``"json_schema"``
        (native), ``"json_object"`` (JSON mode plus the schema as an instruction) or
        ``"prompt"`` (the instruction alone), from the model's ``ModelInfo.json_schema``
        and ``json_mode``, else the kind's ``structured_default``."""
        try:
            info = capabilities(self.kind, model)
        except ConfigError:  # a subclass whose kind is not registered
            info = UNKNOWN_MODEL
        default = self.structured_default
        if info.json_schema or (info.json_schema is None and default == "json_schema"):
            return "json_schema"
        if info.json_mode or (info.json_mode is None and default == "json_object"):
            return "json_object"
        return "prompt"

    def _response_format(self, body: dict[str, Any], fmt: dict[str, Any], model: str) -> None:
        schema = schema_of(fmt)
        mode = "json_schema" if schema is None else self.structured_mode(model)
        if mode == "json_schema":
            body["response_format"] = fmt
            return
        body["messages"] = with_instruction(body["messages"], instruction(schema))
        if mode == "json_object":
            body["response_format"] = {"type": "json_object"}

    def wire_chat(self, req: ChatRequest, model: str, *, stream: bool) -> WireRequest:
        return self._wire(
            "POST",
            f"{self.base_url}/chat/completions",
            self.chat_body(req, model, stream=stream),
            _SSE if stream else None,
            key=("chat", stream),
            secret=self._auth(),
        )

    def decode_chat(
        self, status: int, headers: HeaderPairs, body: bytes, model: str
    ) -> ChatResponse:
        data = self._decode_reply(status, headers, body, model, _COMPLETION, "a chat completion")
        try:
            if not data.choices:
                raise ValueError("no choices")
            first, *rest = (_wire_choice(c, i) for i, c in enumerate(data.choices))
        except ValueError as exc:
            raise self.bad_reply(
                f"reply is not a chat completion ({exc})", status, headers, model
            ) from None
        return ChatResponse(
            id=data.id or "",
            model=data.model or model,
            provider=self.deployment,
            text=first.text,
            message=first.message,
            tool_calls=first.tool_calls,
            finish_reason=first.finish_reason,
            usage=_wire_usage(data.usage),
            logprobs=first.logprobs,
            alternatives=rest,
            reasoning=first.message.reasoning,
        )

    def stream_decoder(self, model: str) -> _OpenAIStream:
        return _OpenAIStream(self, model)

    def wire_embed(self, inputs: list[str], model: str, params: dict[str, Any]) -> WireRequest:
        params = dict(params)
        extra = params.pop("extra", None) or {}
        body = {"model": model, "input": inputs, **params, **extra}
        return self._wire(
            "POST", f"{self.base_url}/embeddings", body, key="embed", secret=self._auth()
        )

    def decode_embed(
        self, status: int, headers: HeaderPairs, body: bytes, model: str
    ) -> EmbeddingResponse:
        data = self._decode_reply(status, headers, body, model, _EMBEDDINGS, "an embedding list")
        try:
            rows = sorted(data.data, key=lambda r: r.index)
            vectors = [_vector(r.embedding) for r in rows]
        except (ValueError, struct.error) as exc:
            raise self.bad_reply(
                f"reply is not an embedding list ({type(exc).__name__})", status, headers, model
            ) from None
        usage = data.usage
        prompt = (usage.prompt_tokens or 0) if usage is not None else 0
        total = (usage.total_tokens or prompt) if usage is not None else prompt
        return EmbeddingResponse(
            embeddings=vectors,
            model=data.model or model,
            provider=self.deployment,
            usage=Usage(prompt_tokens=prompt, total_tokens=total),
        )

    async def list_models(self, client: httpx.AsyncClient) -> list[str]:
        request = self._request("GET", f"{self.base_url}/models", secret=self._auth())
        resp, data = await self._call_json(client, request, None)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError) as exc:
            raise response_error(
                f"reply is not a model list ({type(exc).__name__})", self.deployment, None, resp
            ) from None


class _DeltaFunction(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _DeltaCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _DeltaFunction | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_DeltaCall] | None = None
    #: DeepSeek, llama.cpp and most OpenAI-compatible servers; vLLM calls it ``reasoning``
    reasoning_content: str | None = None
    reasoning: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _CompletionChunk(msgspec.Struct):
    """One ``chat.completion.chunk`` event (or an ``{"error": ...}`` event)."""

    choices: list[_ChunkChoice] | None = None
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None
    error: Any = msgspec.UNSET


_CHUNK = msgspec.json.Decoder(_CompletionChunk)


class _OpenAIStream(FramedDecoder):
    """Decodes ``chat.completion.chunk`` SSE events up to ``data: [DONE]``, each with a
    typed struct in one step."""

    __slots__ = ()

    framing = "sse"

    def events(self, batch: Events) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for _, data in batch:
            if self.done:
                break
            if data == b"[DONE]":
                self.done = True
                break
            chunk = self._chunk(data)
            if chunk is not None:
                out.append(chunk)
        return out

    def _chunk(self, data: bytes) -> ChatChunk | None:
        try:
            ev = _CHUNK.decode(data)
        except msgspec.ValidationError as exc:
            self._raise_error_event(data)
            raise self.bad(f"stream event has a wrong shape ({exc})") from None
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise self.bad("stream event is not valid JSON") from None
        if ev.error is not msgspec.UNSET:
            self._raise_error_event(data)
        text = ""
        reasoning = None
        finish = None
        deltas: list[ToolCallDelta] = []
        logprobs = None
        if ev.choices:
            choice = ev.choices[0]
            finish = choice.finish_reason
            if choice.logprobs is not None:
                logprobs = choice.logprobs.content
            delta = choice.delta
            if delta is not None:
                text = delta.content or ""
                reasoning = delta.reasoning_content or delta.reasoning or None
                for tc in delta.tool_calls or ():
                    fn = tc.function
                    deltas.append(
                        ToolCallDelta(
                            index=tc.index,
                            id=tc.id,
                            name=fn.name if fn is not None else None,
                            arguments_delta=(fn.arguments or "") if fn is not None else "",
                        )
                    )
        usage = _wire_usage(ev.usage) if ev.usage is not None else None
        if (
            not text
            and not deltas
            and finish is None
            and usage is None
            and not logprobs
            and reasoning is None
        ):
            return None
        return ChatChunk(
            text=text,
            tool_calls=deltas,
            finish_reason=finish,
            usage=usage,
            model=ev.model,
            provider=self._adapter.deployment,
            id=ev.id,
            logprobs=logprobs,
            reasoning=reasoning,
        )

    def _raise_error_event(self, data: bytes) -> None:
        """Raise the typed error of an ``{"error": ...}`` event (else return)."""
        try:
            payload = _decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return
        if isinstance(payload, dict) and "error" in payload:
            adapter = self._adapter
            raise error_from_payload(
                None,
                payload,
                provider=adapter.deployment,
                model=self._model,
                secret=adapter._api_key,
            )
