"""What every wire protocol shares: the per-request exchange and the dialect base class.

A dialect (OpenAI, Anthropic, Ollama) maps paths to handlers, renders errors in its
provider's shape and rate-limit headers in its provider's format. Sending goes through
``Dialect.send_json`` / ``send_stream`` / ``send_error``, which apply the body-shaping faults
(``cut_stream``, ``malformed_json``, ``wrong_content_type``) and the chunk delay in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec

from llmrelay.testing._faults import Fault
from llmrelay.testing._ratelimit import RateLimitInfo
from llmrelay.testing._script import (
    ChatPlan,
    ScriptedChat,
    embedding_vector,
    plan_chat,
)
from llmrelay.testing._server import HttpRequest, Responder

if TYPE_CHECKING:
    from llmrelay.testing._fake import FakeProvider

__all__ = ["Dialect", "ErrorKind", "Exchange", "Handler"]

ErrorKind = Literal[
    "invalid_request",
    "auth",
    "permission",
    "not_found",
    "method_not_allowed",
    "rate_limit",
    "server_error",
    "unavailable",
    "overloaded",
    "context_length",
]

_HTML = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
)
encode = msgspec.json.encode


class Exchange:
    """One request being answered: the request, its parsed JSON, headers to send, the fault."""

    __slots__ = ("fake", "fault", "headers", "json", "request", "request_id", "responder")

    def __init__(
        self,
        fake: FakeProvider,
        request: HttpRequest,
        responder: Responder,
        json: Any,
        request_id: str,
        headers: list[tuple[str, str]],
    ) -> None:
        self.fake = fake
        self.request = request
        self.responder = responder
        self.json = json
        self.request_id = request_id
        self.headers = headers
        self.fault: Fault | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body as a dict (dispatch guarantees it for POST handlers)."""
        assert isinstance(self.json, dict)
        return self.json

    def model(self, requested: Any) -> str:
        """The model to report: the fake's configured model, else the requested one."""
        fixed = self.fake.model
        if fixed is not None:
            return fixed
        return requested if isinstance(requested, str) and requested else self.fake.default_model

    def plan(self, prompt_tokens: int, last_user_text: str, max_tokens: int | None) -> ChatPlan:
        script: ScriptedChat | None = self.fake._next_chat_script(self.request.path, self.json)
        plan = plan_chat(script, prompt_tokens, last_user_text, max_tokens)
        self.fake._count_completion(plan.completion_tokens)
        return plan

    def embeddings(self, texts: list[str], dims: int | None = None) -> list[list[float]]:
        """The vectors to answer: the next embedding script's, else hashed ones of ``dims``."""
        script = self.fake._next_embedding_script(self.request.path, self.json)
        if script is not None and script.vectors is not None:
            return [list(v) for v in script.vectors]
        if script is not None and script.dims is not None:
            dims = script.dims
        return [embedding_vector(t, dims or self.fake.embedding_dims) for t in texts]


Handler = Callable[[Exchange], Awaitable[None]]


class Dialect:
    """Base of the three protocols; subclasses fill in the class attributes and ``error``."""

    name: ClassVar[str]
    default_model: ClassVar[str]
    request_id_header: ClassVar[str]
    json_type: ClassVar[str] = "application/json"
    stream_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    malformed_stream: ClassVar[bytes] = b'data: {"id": "broken", "choices": [\n\n'

    def routes(self) -> dict[str, dict[str, Handler]]:
        """``{path: {method: handler}}``."""
        raise NotImplementedError  # pragma: no cover - each dialect defines its routes

    def route(self, routes: dict[str, dict[str, Handler]], path: str) -> dict[str, Handler] | None:
        """The handlers of ``path`` (``routes`` is what :meth:`routes` gave); a dialect
        whose paths carry a name (Azure's deployments) matches them here."""
        return routes.get(path)

    def error(self, kind: ErrorKind, message: str | None, ctx: dict[str, Any]) -> tuple[int, bytes]:
        """Status and body of an error in the provider's shape."""
        raise NotImplementedError  # pragma: no cover - each dialect defines its errors

    def check(self, ex: Exchange) -> tuple[ErrorKind, str] | None:
        """Header checks the real API makes before anything else (credentials, versions)."""
        return None

    def rate_limit_headers(self, info: RateLimitInfo) -> list[tuple[str, str]]:
        """The provider's rate-limit headers for ``info`` (none by default)."""
        return []

    def request_id(self, n: int) -> str:
        return f"req_{n:024x}"

    # sending ---------------------------------------------------------------------------------

    async def send_error(
        self,
        ex: Exchange,
        kind: ErrorKind,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        **ctx: Any,
    ) -> None:
        status, body = self.error(kind, message, {"request_id": ex.request_id, **ctx})
        headers = ex.headers
        if retry_after is not None:
            headers = [
                *headers,
                ("retry-after", str(max(0, int(-(-retry_after // 1))))),
                ("retry-after-ms", str(round(retry_after * 1000))),
            ]
        if kind == "overloaded" and self.name == "anthropic":
            headers = [*headers, ("x-should-retry", "true")]
        await ex.responder.send(status, body, self.json_type, headers)

    async def send_json(self, ex: Exchange, obj: Any, status: int = 200) -> None:
        fault = ex.fault
        if fault is not None and fault.kind in _SHAPING:
            body = encode(obj)
            if fault.kind == "malformed_json":
                await ex.responder.send(status, body[: len(body) // 2], self.json_type, ex.headers)
            elif fault.kind == "wrong_content_type":
                await ex.responder.send(status, _HTML, "text/html; charset=utf-8", ex.headers)
            else:  # cut_stream on a whole reply: declare the full length, send half, close
                await ex.responder.send_partial(
                    status, body[: len(body) // 2], len(body), self.json_type, ex.headers
                )
                if fault.args["abrupt"]:
                    ex.responder.abort()
            return
        await ex.responder.send(status, encode(obj), self.json_type, ex.headers)

    async def send_stream(self, ex: Exchange, events: list[bytes]) -> None:
        """Stream pre-rendered events; the last one is the protocol's end marker."""
        responder = ex.responder
        fault = ex.fault
        if fault is not None and fault.kind in _SHAPING:
            if fault.kind == "wrong_content_type":
                await responder.send(200, _HTML, "text/html; charset=utf-8", ex.headers)
                return
            if fault.kind == "malformed_json":
                events = [self.malformed_stream, *events[1:]]
            else:
                events = events[: min(fault.args["after"], len(events) - 1)]
                responder.close_after = True
        await responder.start_stream(200, self.stream_type, ex.headers)
        delay = ex.fake.stream_chunk_delay_s
        if delay <= 0:
            await responder.write_chunk(b"".join(events))
        else:
            for i, event in enumerate(events):
                if i:
                    await asyncio.sleep(delay)
                await responder.write_chunk(event)
        if fault is not None and fault.kind == "cut_stream" and fault.args["abrupt"]:
            responder.abort()
            return
        await responder.end_stream()


_SHAPING = frozenset({"cut_stream", "malformed_json", "wrong_content_type"})


def sse(data: bytes, event: str | None = None) -> bytes:
    """One server-sent event."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif part.get("type") == "tool_result":
                    parts.append(content_text(part.get("content")))
        return " ".join(parts)
    return ""


def int_param(body: dict[str, Any], *names: str) -> int | None:
    """The first of ``names`` present in ``body`` as an int (None when absent)."""
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
