"""Ollama's native API (``base_url`` is the host root, e.g. ``http://127.0.0.1:11434``).

``/api/chat`` plain or NDJSON-streamed, sampling settings in ``options``, tools
(arguments as JSON objects), ``/api/embed`` and ``/api/tags``. ``extra`` keys
``keep_alive``, ``think`` and ``format`` go top level, all others into ``options``
(``num_ctx``...). OpenAI parameters: the penalties go into ``options``,
``logprobs``/``top_logprobs`` top level (answered as ``ChatResponse.logprobs``),
``reasoning_effort`` is ``think`` (``none`` is ``false``), ``thinking`` enabled is
``think=true``, ``max_completion_tokens`` is ``num_predict``; the reply's
``message.thinking`` is ``ChatResponse.reasoning``, sent back as ``thinking`` on
that assistant turn; ``logit_bias``, ``service_tier``, ``parallel_tool_calls`` and
``n`` > 1 have no equivalent and are refused before sending.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import httpx
import msgspec

from llmrelay._transport import Events
from llmrelay._types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    Message,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from llmrelay._wire import HeaderPairs, WireRequest, header, header_map
from llmrelay.errors import InvalidRequestError, ProviderError, ProviderResponseError
from llmrelay.providers._base import ProviderAdapter
from llmrelay.providers._errors import error_from_payload, response_error
from llmrelay.providers._sse import FramedDecoder

__all__ = ["OllamaAdapter"]

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_TOP_LEVEL = frozenset(("keep_alive", "think", "format"))
# OpenAI's reasoning_effort as Ollama's think: levels (gpt-oss) or off
_THINK: dict[str, bool | str] = {"none": False, "low": "low", "medium": "medium", "high": "high"}


class _Function(msgspec.Struct):
    name: str
    arguments: dict[str, Any] | str | None = None


class _Call(msgspec.Struct):
    function: _Function
    id: str | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_Call] | None = None
    thinking: str | None = None


class _Chat(msgspec.Struct):
    message: _Message
    model: str | None = None
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    logprobs: list[TokenLogprob] | None = None
    error: Any = msgspec.UNSET


class _Embed(msgspec.Struct):
    embeddings: list[list[float]]
    model: str | None = None
    prompt_eval_count: int | None = None


_NDJSON = {"accept": "application/x-ndjson"}
_CHAT = msgspec.json.Decoder(_Chat)
_EMBED = msgspec.json.Decoder(_Embed)


def _wire_calls(raw: list[_Call] | None) -> list[ToolCall]:
    """The reply's tool calls (arguments as an object, or a JSON object string)."""
    calls: list[ToolCall] = []
    for c in raw or ():
        args = c.function.arguments or {}
        if isinstance(args, str):
            args = _decode(args) if args.strip() else {}
        if not isinstance(args, dict):
            raise TypeError("tool call arguments are not an object")
        calls.append(ToolCall(id=c.id or _call_id(), name=c.function.name, arguments=args))
    return calls


def _call_id() -> str:
    return f"call_{secrets.token_hex(6)}"


def _count(value: Any) -> int:
    """A token count from the reply; anything but a non-negative int counts as 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _finish_reason(reason: str | None, has_calls: bool) -> str:
    if reason == "length":
        return "length"
    return "tool_calls" if has_calls else "stop"


def _counts(prompt_eval: int | None, evals: int | None) -> Usage:
    prompt = _count(prompt_eval)
    completion = _count(evals)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def to_ollama_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages in Ollama's shape: text content, base64 ``images``, object arguments."""
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        d: dict[str, Any] = {"role": msg.role}
        content = msg.content
        if isinstance(content, list):
            images: list[str] = []
            for j, part in enumerate(content):
                if part.type != "image_url":
                    continue
                url = part.image_url or ""
                head, sep, data = url.partition(",")
                if not url.startswith("data:") or not sep or ";base64" not in head:
                    field = f"messages[{i}].content[{j}].image_url"
                    raise InvalidRequestError(
                        f"{field}: ollama takes only base64 data: URLs, not {url[:40]!r}",
                        field=field,
                    )
                images.append(data)
            d["content"] = msg.text
            if images:
                d["images"] = images
        else:
            d["content"] = content or ""
        if msg.tool_calls:
            d["tool_calls"] = [
                {"function": {"name": c.name, "arguments": c.arguments}} for c in msg.tool_calls
            ]
        if msg.role == "tool" and msg.name:
            d["tool_name"] = msg.name
        if msg.reasoning and not msg.reasoning_blocks:
            d["thinking"] = msg.reasoning  # Anthropic's signed blocks are not Ollama's
        out.append(d)
    return out


class OllamaAdapter(ProviderAdapter):
    """The Ollama native wire protocol."""

    kind = "ollama"
    stream_content_types = ("application/x-ndjson", "application/json")

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def check_request(self, req: ChatRequest, *, stream: bool) -> None:
        """Refuse the OpenAI parameters the Ollama API has no equivalent for."""
        super().check_request(req, stream=stream)
        if req.parallel_tool_calls is not None and req.tools:
            raise self.unsupported(
                "parallel_tool_calls", req.parallel_tool_calls, " (the model decides)"
            )
        if req.logit_bias is not None:
            raise self.unsupported("logit_bias", req.logit_bias)
        if req.service_tier is not None:
            raise self.unsupported("service_tier", req.service_tier)
        effort = req.reasoning_effort
        if effort is not None and effort not in _THINK:
            raise self.unsupported(
                "reasoning_effort", effort, " (think takes low, medium, high; none is think=false)"
            )

    def chat_body(self, req: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
        """The JSON body of a chat call."""
        self.check_request(req, stream=stream)
        body: dict[str, Any] = {
            "model": model,
            "messages": to_ollama_messages(req.messages),
            "stream": stream,
        }
        options: dict[str, Any] = {}
        if req.temperature is not None:
            options["temperature"] = req.temperature
        if req.frequency_penalty is not None:
            options["frequency_penalty"] = req.frequency_penalty
        if req.presence_penalty is not None:
            options["presence_penalty"] = req.presence_penalty
        if req.logprobs is not None:
            body["logprobs"] = req.logprobs
        if req.top_logprobs is not None:
            body["top_logprobs"] = req.top_logprobs
        if req.reasoning_effort is not None:
            body["think"] = _THINK[req.reasoning_effort]
        elif req.thinking is not None:
            body["think"] = True
        if req.top_p is not None:
            options["top_p"] = req.top_p
        if req.max_tokens is not None:
            options["num_predict"] = req.max_tokens
        if req.stop:
            options["stop"] = req.stop
        if req.seed is not None:
            options["seed"] = req.seed
        if req.tools and req.tool_choice != "none":
            body["tools"] = req.tools
        fmt = req.response_format
        if fmt is not None and fmt.get("type") == "json_object":
            body["format"] = "json"
        elif fmt is not None and fmt.get("type") == "json_schema":
            body["format"] = fmt["json_schema"].get("schema", fmt["json_schema"])
        for key, value in (req.extra or {}).items():
            if key in _TOP_LEVEL:
                body[key] = value
            elif key == "options" and isinstance(value, dict):
                options.update(value)
            else:
                options[key] = value
        if options:
            body["options"] = options
        return body

    def wire_chat(self, req: ChatRequest, model: str, *, stream: bool) -> WireRequest:
        return self._wire(
            "POST",
            f"{self.base_url}/api/chat",
            self.chat_body(req, model, stream=stream),
            _NDJSON if stream else None,
            key=("chat", stream),
            secret=self._auth(),
        )

    def decode_chat(
        self, status: int, headers: HeaderPairs, body: bytes, model: str
    ) -> ChatResponse:
        try:
            data = self._decode_reply(status, headers, body, model, _CHAT, "a chat message")
        except ProviderResponseError as exc:
            raise (self._error_in(status, headers, body, model) or exc) from None
        if data.error is not msgspec.UNSET:
            raise self._error_in(status, headers, body, model) or self.bad_reply(
                "reply carries an error", status, headers, model
            )
        msg = data.message
        try:
            calls = _wire_calls(msg.tool_calls)
        except (TypeError, ValueError, msgspec.DecodeError) as exc:
            raise self.bad_reply(
                f"reply is not a chat message ({type(exc).__name__}: {exc})", status, headers, model
            ) from None
        text = msg.content or ""
        thinking = msg.thinking or None
        return ChatResponse(
            id=f"ollama-{secrets.token_hex(8)}",
            model=data.model or model,
            provider=self.deployment,
            text=text,
            reasoning=thinking,
            message=Message(
                role="assistant",
                content=text if text or not calls else None,
                tool_calls=calls or None,
                reasoning=thinking,
            ),
            tool_calls=calls,
            finish_reason=_finish_reason(data.done_reason, bool(calls)),
            usage=_counts(data.prompt_eval_count, data.eval_count),
            logprobs=data.logprobs,
        )

    def _error_in(
        self, status: int, headers: HeaderPairs, body: bytes, model: str
    ) -> ProviderError | None:
        """The typed error of a 2xx JSON reply carrying ``{"error": ...}`` (Ollama sends
        some failures so, whatever the rest of the reply), else None."""
        if "json" not in (header(headers, b"content-type") or ""):
            return None
        err = None
        with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):
            payload = _decode(body)
            if isinstance(payload, dict) and "error" in payload:
                err = error_from_payload(
                    status,
                    payload,
                    provider=self.deployment,
                    model=model,
                    headers=header_map(headers),
                    secret=self._api_key,
                )
        return err

    def stream_decoder(self, model: str) -> _OllamaStream:
        return _OllamaStream(self, model)

    def wire_embed(self, inputs: list[str], model: str, params: dict[str, Any]) -> WireRequest:
        params = dict(params)
        extra = params.pop("extra", None) or {}
        # encoding_format is how OpenAI ships vectors, user is for its abuse checks:
        # neither means anything here (Ollama answers floats)
        params.pop("encoding_format", None)
        params.pop("user", None)
        body: dict[str, Any] = {"model": model, "input": inputs, **params, **extra}
        return self._wire(
            "POST", f"{self.base_url}/api/embed", body, key="embed", secret=self._auth()
        )

    def decode_embed(
        self, status: int, headers: HeaderPairs, body: bytes, model: str
    ) -> EmbeddingResponse:
        data = self._decode_reply(status, headers, body, model, _EMBED, "an embedding list")
        prompt = _count(data.prompt_eval_count)
        return EmbeddingResponse(
            embeddings=data.embeddings,
            model=data.model or model,
            provider=self.deployment,
            usage=Usage(prompt_tokens=prompt, total_tokens=prompt),
        )

    async def list_models(self, client: httpx.AsyncClient) -> list[str]:
        request = self._request("GET", f"{self.base_url}/api/tags", secret=self._auth())
        resp, data = await self._call_json(client, request, None)
        try:
            return [str(m.get("name") or m["model"]) for m in data["models"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise response_error(
                f"reply is not a model list ({type(exc).__name__})", self.deployment, None, resp
            ) from None


class _ChatLine(msgspec.Struct):
    """One line of a streamed chat (the last has ``done: true`` and the counts)."""

    message: _Message | None = None
    model: str | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    logprobs: list[TokenLogprob] | None = None
    error: Any = msgspec.UNSET


_LINE = msgspec.json.Decoder(_ChatLine)


class _OllamaStream(FramedDecoder):
    """Decodes NDJSON chat lines up to the one with ``done: true``, each with a typed
    struct in one step."""

    __slots__ = ("_calls",)

    framing = "ndjson"

    def __init__(self, adapter: OllamaAdapter, model: str) -> None:
        super().__init__(adapter, model)
        self._calls = 0

    def events(self, batch: Events) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for _, data in batch:
            if self.done:
                break
            chunk = self._line(data)
            if chunk is not None:
                out.append(chunk)
        return out

    def _line(self, data: bytes) -> ChatChunk | None:
        try:
            line = _LINE.decode(data)
        except msgspec.ValidationError as exc:
            self._raise_error_line(data)
            raise self.bad(f"stream line has a wrong shape ({exc})") from None
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise self.bad("stream line is not valid JSON") from None
        if line.error is not msgspec.UNSET:
            self._raise_error_line(data)
        msg = line.message
        text = (msg.content if msg is not None else None) or ""
        thinking = (msg.thinking if msg is not None else None) or None
        try:
            calls = _wire_calls(msg.tool_calls if msg is not None else None)
        except (TypeError, ValueError, msgspec.DecodeError) as exc:
            raise self.bad(f"stream line has a wrong shape ({type(exc).__name__})") from None
        deltas = []
        for call in calls:
            deltas.append(
                ToolCallDelta(
                    index=self._calls,
                    id=call.id,
                    name=call.name,
                    arguments_delta=_encode(call.arguments).decode(),
                )
            )
            self._calls += 1
        done = line.done
        if done:
            self.done = True
        if not text and not deltas and not done and not line.logprobs and thinking is None:
            return None
        return ChatChunk(
            text=text,
            tool_calls=deltas,
            finish_reason=_finish_reason(line.done_reason, self._calls > 0) if done else None,
            usage=_counts(line.prompt_eval_count, line.eval_count) if done else None,
            model=line.model,
            provider=self._adapter.deployment,
            logprobs=line.logprobs,
            reasoning=thinking,
        )

    def _raise_error_line(self, data: bytes) -> None:
        """Raise the typed error of an ``{"error": ...}`` line (else return)."""
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
