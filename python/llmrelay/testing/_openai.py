"""The OpenAI wire protocol: Chat Completions (JSON and SSE), embeddings, models.

Shapes follow the public API reference: ``chat.completion`` objects, ``chat.completion.chunk``
events ending with ``data: [DONE]`` (with a final usage chunk when
``stream_options.include_usage`` is set), tool calls as ``function`` calls whose arguments
are a JSON string, errors as ``{"error": {"message", "type", "param", "code"}}``, and
``x-ratelimit-*`` headers with Go-style reset durations.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import Any, ClassVar

from llmrelay.testing._dialect import (
    Dialect,
    ErrorKind,
    Exchange,
    Handler,
    content_text,
    encode,
    int_param,
    sse,
)
from llmrelay.testing._ratelimit import RateLimitInfo, go_duration
from llmrelay.testing._script import (
    ChatPlan,
    estimate_tokens,
    json_pieces,
    text_pieces,
)

__all__ = ["OpenAIDialect"]

_DONE = b"data: [DONE]\n\n"

_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    # kind: (status, type, code, default message)
    "invalid_request": (400, "invalid_request_error", None, "Invalid request."),
    "auth": (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    "permission": (403, "invalid_request_error", None, "You are not allowed to do this."),
    "not_found": (404, "invalid_request_error", "unknown_url", "Unknown request URL."),
    "method_not_allowed": (405, "invalid_request_error", None, "Method not allowed."),
    "rate_limit": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    "server_error": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "unavailable": (503, "server_error", None, "The server is overloaded or not ready yet."),
    "overloaded": (503, "server_error", None, "The engine is currently overloaded."),
    "context_length": (400, "invalid_request_error", "context_length_exceeded", ""),
}

_USAGE_DETAILS = {
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def _usage(plan: ChatPlan) -> dict[str, Any]:
    """The usage object: cached prompt tokens (a script's, else 0, as OpenAI reports when
    nothing was cached) and the reasoning tokens of the completion."""
    prompt = dict(_USAGE_DETAILS["prompt_tokens_details"])
    prompt["cached_tokens"] = plan.cached_tokens or 0
    completion = dict(_USAGE_DETAILS["completion_tokens_details"])
    completion["reasoning_tokens"] = plan.reasoning_tokens
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        "prompt_tokens_details": prompt,
        "completion_tokens_details": completion,
    }


class OpenAIDialect(Dialect):
    name: ClassVar[str] = "openai"
    default_model: ClassVar[str] = "gpt-4o-mini"
    request_id_header: ClassVar[str] = "x-request-id"

    def routes(self) -> dict[str, dict[str, Handler]]:
        return {
            "/v1/chat/completions": {"POST": self.chat},
            "/v1/embeddings": {"POST": self.embeddings},
            "/v1/models": {"GET": self.models},
        }

    def error(self, kind: ErrorKind, message: str | None, ctx: dict[str, Any]) -> tuple[int, bytes]:
        status, type_, code, default = _ERRORS[kind]
        if kind == "context_length":
            limit = ctx.get("limit", 128_000)
            default = (
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {ctx.get('tokens', limit + 1)} tokens. Please reduce the length of "
                "the messages."
            )
            ctx.setdefault("param", "messages")
        if kind == "not_found" and "method" in ctx:
            default = f"Invalid URL ({ctx['method']} {ctx['path']})"
        body = {
            "error": {
                "message": message or default,
                "type": type_,
                "param": ctx.get("param"),
                "code": ctx.get("code", code),
            }
        }
        return status, encode(body)

    def rate_limit_headers(self, info: RateLimitInfo) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for kind, limit, remaining, reset in info.by_kind():
            if limit is not None:
                out.append((f"x-ratelimit-limit-{kind}", str(limit)))
            if remaining is not None:
                out.append((f"x-ratelimit-remaining-{kind}", str(remaining)))
            if reset is not None:
                out.append((f"x-ratelimit-reset-{kind}", go_duration(reset)))
        return out

    def check(self, ex: Exchange) -> tuple[ErrorKind, str] | None:
        auth = ex.request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return "auth", (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        key = ex.fake.api_key
        if key is not None and auth[7:].strip() != key:
            return "auth", _ERRORS["auth"][3]
        return None

    async def _missing(self, ex: Exchange, param: str) -> None:
        await self.send_error(
            ex,
            "invalid_request",
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )

    async def chat(self, ex: Exchange) -> None:
        body = ex.body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return await self._missing(ex, "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return await self._missing(ex, "messages")
        texts: list[str] = []
        last_user = ""
        for m in messages:
            if not isinstance(m, dict):
                return await self.send_error(
                    ex, "invalid_request", "Invalid type for 'messages'.", param="messages"
                )
            text = content_text(m.get("content"))
            texts.append(text)
            if m.get("role") in ("user", "tool"):
                last_user = text
        prompt_tokens = sum(estimate_tokens(t) + 3 for t in texts) + 3
        max_tokens = int_param(body, "max_completion_tokens", "max_tokens")
        plan = ex.plan(prompt_tokens, last_user, max_tokens)
        n = int_param(body, "n") or 1
        reported = ex.model(model)
        ident = f"chatcmpl-{ex.fake._next_id():024x}"
        created = int(time.time())
        if body.get("stream") is True:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            events = self._chunks(ex, plan, ident, created, reported, n, usage)
            return await self.send_stream(ex, events)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": plan.text if plan.text or not plan.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if plan.reasoning is not None:  # OpenAI-compatible servers (DeepSeek, vLLM, llama.cpp)
            message["reasoning_content"] = plan.reasoning
        if plan.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id or f"call_{ex.fake._next_id():024x}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json},
                }
                for c in plan.tool_calls
            ]
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": plan.finish}
            for i in range(n)
        ]
        await self.send_json(
            ex,
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": reported,
                "choices": choices,
                "usage": _usage(plan),
                "service_tier": "default",
                "system_fingerprint": "fp_llmrelay_fake",
            },
        )

    def _chunks(
        self,
        ex: Exchange,
        plan: ChatPlan,
        ident: str,
        created: int,
        model: str,
        n: int,
        include_usage: bool,
    ) -> list[bytes]:
        head = (
            b'{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
            b'"system_fingerprint":"fp_llmrelay_fake","choices":['
            % (ident.encode(), created, encode(model))
        )
        tail = b'],"usage":null}' if include_usage else b"]}"

        def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse(head + encode(choice) + tail)

        events: list[bytes] = []
        call_ids = [c.id or f"call_{ex.fake._next_id():024x}" for c in plan.tool_calls]
        for index in range(n):
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}, None, index))
            for piece in text_pieces(plan.reasoning or ""):
                events.append(chunk({"reasoning_content": piece}, None, index))
            for piece in text_pieces(plan.text):
                events.append(chunk({"content": piece}, None, index))
            for i, call in enumerate(plan.tool_calls):
                first = {
                    "index": i,
                    "id": call_ids[i],
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                events.append(chunk({"tool_calls": [first]}, None, index))
                for piece in json_pieces(call.arguments_json):
                    delta = {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                    events.append(chunk(delta, None, index))
            events.append(chunk({}, plan.finish, index))
        if include_usage:
            usage = head + b'],"usage":' + encode(_usage(plan)) + b"}"
            events.append(sse(usage))
        events.append(_DONE)
        return events

    async def embeddings(self, ex: Exchange) -> None:
        body = ex.body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return await self._missing(ex, "model")
        raw = body.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            inputs: list[Any] = [raw]
        elif isinstance(raw, list) and raw:
            inputs = raw
        else:
            return await self._missing(ex, "input")
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in inputs]
        vectors = ex.embeddings(texts, int_param(body, "dimensions"))
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": (
                    base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if as_base64 else v
                ),
            }
            for i, v in enumerate(vectors)
        ]
        tokens = sum(estimate_tokens(t) for t in texts)
        await self.send_json(
            ex,
            {
                "object": "list",
                "data": data,
                "model": ex.model(model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    async def models(self, ex: Exchange) -> None:
        await self.send_json(
            ex,
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "llmrelay"}
                    for m in ex.fake.models
                ],
            },
        )
