"""The Ollama wire protocol: ``/api/chat`` (JSON or NDJSON), ``/api/embed``, ``/api/tags``.

As in Ollama, ``stream`` defaults to true; a stream is one JSON object per line, the last
with ``done: true``, ``done_reason`` and the counts (``prompt_eval_count``, ``eval_count``)
and durations in nanoseconds. Tool calls carry their arguments as an object. Errors are
``{"error": "..."}``; Ollama has no rate-limit headers, so none are sent.
"""

from __future__ import annotations

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
)
from llmrelay.testing._script import ChatPlan, estimate_tokens, text_pieces

__all__ = ["OllamaDialect"]

_ERRORS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid request"),
    "auth": (401, "unauthorized"),
    "permission": (403, "forbidden"),
    "not_found": (404, "404 page not found"),
    "method_not_allowed": (405, "405 method not allowed"),
    "rate_limit": (429, "too many requests"),
    "server_error": (500, "an internal error occurred"),
    "unavailable": (503, "server busy, please try again. maximum pending requests exceeded"),
    "overloaded": (503, "server busy, please try again. maximum pending requests exceeded"),
    "context_length": (400, "the input length exceeds the context length"),
}
_DONE_REASON = {"stop": "stop", "length": "length", "tool_calls": "stop"}


_second: list[Any] = [0, ""]


def _created_at() -> str:
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


class OllamaDialect(Dialect):
    name: ClassVar[str] = "ollama"
    default_model: ClassVar[str] = "llama3.2"
    request_id_header: ClassVar[str] = "x-request-id"
    json_type: ClassVar[str] = "application/json; charset=utf-8"
    stream_type: ClassVar[str] = "application/x-ndjson"
    malformed_stream: ClassVar[bytes] = b'{"model": "broken", "message": {\n'

    def routes(self) -> dict[str, dict[str, Handler]]:
        return {
            "/": {"GET": self.root},
            "/api/chat": {"POST": self.chat},
            "/api/embed": {"POST": self.embed},
            "/api/tags": {"GET": self.tags},
            "/api/version": {"GET": self.version},
        }

    def error(self, kind: ErrorKind, message: str | None, ctx: dict[str, Any]) -> tuple[int, bytes]:
        status, default = _ERRORS[kind]
        return status, encode({"error": message or default})

    async def chat(self, ex: Exchange) -> None:
        body = ex.body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return await self.send_error(ex, "invalid_request", "model is required")
        messages = body.get("messages", [])
        if not isinstance(messages, list):
            return await self.send_error(
                ex, "invalid_request", "json: cannot unmarshal messages into []api.Message"
            )
        tokens = 0
        last_user = ""
        for m in messages:
            if not isinstance(m, dict):
                return await self.send_error(ex, "invalid_request", "invalid message")
            text = content_text(m.get("content"))
            tokens += estimate_tokens(text) + 3
            if m.get("role") in ("user", "tool"):
                last_user = text
        options = body.get("options")
        max_tokens = int_param(options, "num_predict") if isinstance(options, dict) else None
        if max_tokens is not None and max_tokens < 0:
            max_tokens = None  # -1 means "no limit" in Ollama
        plan = ex.plan(tokens, last_user, max_tokens)
        name = ex.model(model)
        if body.get("stream", True) is not False:
            return await self.send_stream(ex, self._lines(plan, name))
        message: dict[str, Any] = {"role": "assistant", "content": plan.text}
        if plan.reasoning is not None:
            message["thinking"] = plan.reasoning
        if plan.tool_calls:
            message["tool_calls"] = self._tool_calls(plan)
        await self.send_json(
            ex,
            {"model": name, "created_at": _created_at(), "message": message, **self._done(plan)},
        )

    @staticmethod
    def _tool_calls(plan: ChatPlan) -> list[dict[str, Any]]:
        return [
            {"function": {"index": i, "name": c.name, "arguments": c.arguments}}
            for i, c in enumerate(plan.tool_calls)
        ]

    @staticmethod
    def _done(plan: ChatPlan) -> dict[str, Any]:
        return {
            "done_reason": _DONE_REASON[plan.finish],
            "done": True,
            "total_duration": 1_000_000 * (1 + plan.completion_tokens),
            "load_duration": 100_000,
            "prompt_eval_count": plan.prompt_tokens,
            "prompt_eval_duration": 10_000 * (1 + plan.prompt_tokens),
            "eval_count": plan.completion_tokens,
            "eval_duration": 1_000_000 * plan.completion_tokens,
        }

    def _lines(self, plan: ChatPlan, model: str) -> list[bytes]:
        created = _created_at().encode()
        head = b'{"model":%s,"created_at":"%s","message":' % (encode(model), created)
        lines = [
            head
            + encode({"role": "assistant", "content": "", "thinking": piece})
            + b',"done":false}\n'
            for piece in text_pieces(plan.reasoning or "")
        ]
        lines += [
            head + encode({"role": "assistant", "content": piece}) + b',"done":false}\n'
            for piece in text_pieces(plan.text)
        ]
        if plan.tool_calls:
            message = {"role": "assistant", "content": "", "tool_calls": self._tool_calls(plan)}
            lines.append(head + encode(message) + b',"done":false}\n')
        final = {
            "model": model,
            "created_at": created.decode(),
            "message": {"role": "assistant", "content": ""},
            **self._done(plan),
        }
        lines.append(encode(final) + b"\n")
        return lines

    async def embed(self, ex: Exchange) -> None:
        body = ex.body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return await self.send_error(ex, "invalid_request", "model is required")
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            return await self.send_error(ex, "invalid_request", "invalid input type")
        vectors = ex.embeddings(inputs)
        tokens = sum(estimate_tokens(t) for t in inputs)
        await self.send_json(
            ex,
            {
                "model": ex.model(model),
                "embeddings": vectors,
                "total_duration": 1_000_000,
                "load_duration": 100_000,
                "prompt_eval_count": tokens,
            },
        )

    async def tags(self, ex: Exchange) -> None:
        models = [
            {
                "name": m if ":" in m else f"{m}:latest",
                "model": m if ":" in m else f"{m}:latest",
                "modified_at": "2025-10-01T00:00:00Z",
                "size": 2_019_393_189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for m in ex.fake.models
        ]
        await self.send_json(ex, {"models": models})

    async def version(self, ex: Exchange) -> None:
        await self.send_json(ex, {"version": "0.12.0"})

    async def root(self, ex: Exchange) -> None:
        await ex.responder.send(200, b"Ollama is running", "text/plain; charset=utf-8", ex.headers)
