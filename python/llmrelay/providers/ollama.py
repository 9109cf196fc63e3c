"""Ollama's native API (``base_url`` is the host root, e.g. ``http://127.0.0.1:11434``).

``/api/chat`` plain or NDJSON-streamed, sampling settings in ``options``, tools
(arguments as JSON objects), ``/api/embed`` and ``/api/tags``. ``extra`` keys
``keep_alive``, ``think`` and ``format`` go top level, all others into ``options``
(``num_ctx``...). OpenAI parameters: the penalties go into ``options``,
``logprobs``/``top_logprobs`` top level (answered as ``ChatResponse.logprobs``),
``reasoning_effort`` is ``think`` (``none`` is ``false``), ``max_completion_tokens``
is ``num_predict``; ``logit_bias``, ``service_tier``, ``parallel_tool_calls`` and
``n`` > 1 have no equivalent and are refused before sending.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import msgspec

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
from llmrelay.errors import InvalidRequestError
from llmrelay.providers._base import ProviderAdapter, well_typed
from llmrelay.providers._errors import error_from_payload, response_error
from llmrelay.providers._sse import NDJSONDecoder

__all__ = ["OllamaAdapter"]

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_TOP_LEVEL = frozenset(("keep_alive", "think", "format"))
# OpenAI's reasoning_effort as Ollama's think: levels (gpt-oss) or off
_THINK: dict[str, bool | str] = {"none": False, "low": "low", "medium": "medium", "high": "high"}


def _call_id() -> str:
    return f"call_{secrets.token_hex(6)}"


def _count(value: Any) -> int:
    """A token count from the reply; anything but a non-negative int counts as 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _usage(data: dict[str, Any]) -> Usage:
    prompt = _count(data.get("prompt_eval_count"))
    completion = _count(data.get("eval_count"))
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def _logprobs(raw: Any) -> list[TokenLogprob] | None:
    """The reply's ``logprobs`` (``{token, logprob, top_logprobs}`` each) as typed structs."""
    return None if raw is None else msgspec.convert(raw, list[TokenLogprob])


def _finish(data: dict[str, Any], has_calls: bool) -> str:
    reason = data.get("done_reason") or "stop"
    if reason == "length":
        return "length"
    return "tool_calls" if has_calls else "stop"


def _tool_calls(raw: Any) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for c in raw or ():
        fn = c["function"]
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            args = _decode(args) if args.strip() else {}
        if not isinstance(args, dict):
            raise TypeError("tool call arguments are not an object")
        calls.append(ToolCall(id=c.get("id") or _call_id(), name=fn["name"], arguments=args))
    return calls


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

    def build_chat_request(self, req: ChatRequest, model: str, *, stream: bool) -> httpx.Request:
        headers = self._auth()
        if stream:
            headers["accept"] = "application/x-ndjson"
        return self._request(
            "POST", f"{self.base_url}/api/chat", self.chat_body(req, model, stream=stream), headers
        )

    def parse_chat_response(self, resp: httpx.Response, model: str) -> ChatResponse:
        data = self._json(resp, model)
        try:
            if "error" in data:
                raise error_from_payload(
                    resp.status_code,
                    data,
                    provider=self.deployment,
                    model=model,
                    headers=resp.headers,
                    secret=self._api_key,
                )
            msg = data["message"]
            text = msg.get("content") or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            calls = _tool_calls(msg.get("tool_calls"))
            return well_typed(
                ChatResponse(
                    id=f"ollama-{secrets.token_hex(8)}",
                    model=str(data.get("model") or model),
                    provider=self.deployment,
                    text=text,
                    message=Message(
                        role="assistant",
                        content=text if text or not calls else None,
                        tool_calls=calls or None,
                    ),
                    tool_calls=calls,
                    finish_reason=_finish(data, bool(calls)),
                    usage=_usage(data),
                    logprobs=_logprobs(data.get("logprobs")),
                ),
                self.deployment,
                model,
                resp,
            )
        except (
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            ValueError,
            msgspec.DecodeError,
        ) as exc:
            raise response_error(
                f"reply is not a chat message ({type(exc).__name__}: {exc})",
                self.deployment,
                model,
                resp,
            ) from None

    def stream_decoder(self, model: str) -> _OllamaStream:
        return _OllamaStream(self, model)

    async def embed(
        self, client: httpx.AsyncClient, inputs: list[str], model: str, **params: Any
    ) -> EmbeddingResponse:
        extra = params.pop("extra", None) or {}
        # encoding_format is how OpenAI ships vectors, user is for its abuse checks:
        # neither means anything here (Ollama answers floats)
        params.pop("encoding_format", None)
        params.pop("user", None)
        body: dict[str, Any] = {"model": model, "input": inputs, **params, **extra}
        request = self._request("POST", f"{self.base_url}/api/embed", body, self._auth())
        resp, data = await self._call_json(client, request, model)
        try:
            vectors = [[float(x) for x in row] for row in data["embeddings"]]
            prompt = data.get("prompt_eval_count") or 0
            return EmbeddingResponse(
                embeddings=vectors,
                model=str(data.get("model") or model),
                provider=self.deployment,
                usage=Usage(prompt_tokens=prompt, total_tokens=prompt),
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise response_error(
                f"reply is not an embedding list ({type(exc).__name__})",
                self.deployment,
                model,
                resp,
            ) from None

    async def list_models(self, client: httpx.AsyncClient) -> list[str]:
        request = self._request("GET", f"{self.base_url}/api/tags", None, self._auth())
        resp, data = await self._call_json(client, request, None)
        try:
            return [str(m.get("name") or m["model"]) for m in data["models"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise response_error(
                f"reply is not a model list ({type(exc).__name__})", self.deployment, None, resp
            ) from None


class _OllamaStream:
    """Decodes NDJSON chat lines up to the one with ``done: true``."""

    __slots__ = ("_adapter", "_calls", "_lines", "_model", "done")

    def __init__(self, adapter: OllamaAdapter, model: str) -> None:
        self._adapter = adapter
        self._model = model
        self._lines = NDJSONDecoder()
        self._calls = 0
        self.done = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        return self._parse(self._lines.feed(data))

    def close(self) -> list[ChatChunk]:
        return self._parse(self._lines.close())

    def _parse(self, lines: list[bytes]) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        adapter = self._adapter
        for line in lines:
            if self.done:
                break
            try:
                data = _decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError):
                raise response_error(
                    "stream line is not valid JSON", adapter.deployment, self._model
                ) from None
            if not isinstance(data, dict):
                raise response_error(
                    "stream line is not an object", adapter.deployment, self._model
                )
            if "error" in data:
                raise error_from_payload(
                    None,
                    data,
                    provider=adapter.deployment,
                    model=self._model,
                    secret=adapter._api_key,
                )
            try:
                msg = data.get("message") or {}
                text = msg.get("content") or ""
                deltas = []
                for call in _tool_calls(msg.get("tool_calls")):
                    deltas.append(
                        ToolCallDelta(
                            index=self._calls,
                            id=call.id,
                            name=call.name,
                            arguments_delta=_encode(call.arguments).decode(),
                        )
                    )
                    self._calls += 1
                done = data.get("done") is True
                logprobs = _logprobs(data.get("logprobs"))
            except (
                KeyError,
                IndexError,
                TypeError,
                AttributeError,
                ValueError,
                msgspec.DecodeError,
            ) as exc:
                raise response_error(
                    f"stream line has a wrong shape ({type(exc).__name__})",
                    adapter.deployment,
                    self._model,
                ) from None
            if done:
                self.done = True
            if not text and not deltas and not done and not logprobs:
                continue
            out.append(
                ChatChunk(
                    text=text,
                    tool_calls=deltas,
                    finish_reason=_finish(data, self._calls > 0) if done else None,
                    usage=_usage(data) if done else None,
                    model=data.get("model"),
                    provider=adapter.deployment,
                    logprobs=logprobs,
                )
            )
        return out
