"""The provider adapter base: one deployment's wire protocol over an injected httpx client.

An adapter builds ``httpx.Request``s and reads ``httpx.Response``s; it owns no
client, pool or retry logic (the service does). Subclasses implement the request
building, the reply parsing and a synchronous stream decoder; this base sends,
maps every failure to a typed error, and drives streams with an idle timeout,
closing the reply on every exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import httpx
import msgspec

from llmrelay._params import short
from llmrelay._transport import BODY_IDLE_EXT
from llmrelay._types import ChatChunk, ChatRequest, ChatResponse, EmbeddingResponse
from llmrelay.errors import (
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from llmrelay.providers._errors import error_from_status, error_from_transport, response_error
from llmrelay.providers._ratelimit import RateLimitInfo, parse_rate_limit_headers

__all__ = ["ProviderAdapter", "StreamDecoder", "well_typed"]

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_T = TypeVar("_T", ChatResponse, ChatChunk)


def well_typed(obj: _T, provider: str, model: str | None, resp: httpx.Response | None = None) -> _T:
    """``obj`` with every field of its declared type, or ProviderResponseError.

    Adapters build replies from whatever the provider sent; a field of the wrong
    type (a list as ``finish_reason``) would otherwise reach the caller, or the
    cache, and fail later and untyped.
    """
    try:
        return _decode(_encode(obj), type=type(obj))
    except (msgspec.ValidationError, msgspec.EncodeError, TypeError, ValueError) as exc:
        raise response_error(f"reply has a wrong shape ({exc})", provider, model, resp) from None


class StreamDecoder(Protocol):
    """Turns a streamed reply's bytes into chunks; ``done`` once the end marker was seen."""

    done: bool

    def feed(self, data: bytes) -> list[ChatChunk]:
        """Chunks completed by ``data``; raises a typed error for an error event."""
        ...

    def close(self) -> list[ChatChunk]:
        """Chunks left at the end of the bytes."""
        ...


class ProviderAdapter:
    """Base of the adapters: a deployment's name, base URL, key and extra headers.

    The API key never appears in ``repr``, ``str`` or any error message.
    """

    #: The provider kind this adapter speaks (``openai``, ``anthropic``, ``ollama``...).
    kind: ClassVar[str] = "base"
    #: Whether a call with ``n`` > 1 gets its alternatives (``ChatResponse.alternatives``).
    supports_n: ClassVar[bool] = False
    #: Content types a streamed reply may have.
    stream_content_types: ClassVar[tuple[str, ...]] = ("text/event-stream",)

    __slots__ = ("_api_key", "_urls", "base_url", "deployment", "headers")

    def __init__(
        self,
        *,
        deployment: str,
        base_url: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.deployment = deployment
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self.headers: dict[str, str] = dict(headers or {})
        # parsed once per endpoint: httpx parses a str URL on every Request
        self._urls: dict[str, httpx.URL] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(deployment={self.deployment!r}, base_url={self.base_url!r}, "
            f"api_key={'***' if self._api_key else None})"
        )

    __str__ = __repr__

    # ------------------------------------------------------------ to implement

    def build_chat_request(self, req: ChatRequest, model: str, *, stream: bool) -> httpx.Request:
        """The HTTP request of a chat call."""
        raise NotImplementedError

    def parse_chat_response(self, resp: httpx.Response, model: str) -> ChatResponse:
        """The ChatResponse of a successful (2xx) chat reply."""
        raise NotImplementedError

    def stream_decoder(self, model: str) -> StreamDecoder:
        """A fresh decoder for one streamed chat reply."""
        raise NotImplementedError

    async def embed(
        self, client: httpx.AsyncClient, inputs: list[str], model: str, **params: Any
    ) -> EmbeddingResponse:
        """Embeddings of ``inputs``, in order."""
        raise NotImplementedError(f"{self.kind} adapter has no embeddings")

    async def list_models(self, client: httpx.AsyncClient) -> list[str]:
        """The model names the deployment serves."""
        raise NotImplementedError(f"{self.kind} adapter cannot list models")

    def check_request(self, req: ChatRequest, *, stream: bool) -> None:
        """Raise InvalidRequestError (``params.<name>``) for a parameter of ``req`` this
        provider has no equivalent for; called before anything is sent.

        The base refuses ``n`` > 1 unless the adapter ``supports_n``, and always on a
        stream (a chunk carries one answer). Adapters extend it.
        """
        if req.n is not None:
            if stream:
                raise InvalidRequestError(
                    f"params.n={req.n}: a stream carries one answer; call without stream "
                    "for n alternatives",
                    field="params.n",
                )
            if not self.supports_n:
                raise self.unsupported("n", req.n, "; make n calls (a batch) instead")

    def unsupported(self, name: str, value: Any, hint: str = "") -> InvalidRequestError:
        """The error of a parameter this provider cannot honour."""
        return InvalidRequestError(
            f"params.{name}={short(value)}: {self.kind} (deployment {self.deployment!r}) "
            f"has no equivalent{hint}",
            field=f"params.{name}",
        )

    # ------------------------------------------------------------ shared

    def error_from_response(self, resp: httpx.Response, model: str, body: bytes) -> ProviderError:
        """The typed error of an HTTP error reply (status, body, headers)."""
        return error_from_status(resp, self.deployment, model, body, self._api_key)

    def rate_limit_info(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """The rate-limit state a reply's headers report."""
        return parse_rate_limit_headers(headers)

    def _request(
        self, method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Request:
        hdrs = {"accept": "application/json"}
        if headers:
            hdrs.update(headers)
        hdrs.update(self.headers)
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        if body is None:
            return httpx.Request(method, parsed, headers=hdrs)
        hdrs["content-type"] = "application/json"
        return httpx.Request(method, parsed, headers=hdrs, content=_encode(body))

    async def _send(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        model: str | None,
        timeout: httpx.Timeout | None,
        *,
        stream: bool = False,
    ) -> httpx.Response:
        if timeout is not None:
            request.extensions["timeout"] = timeout.as_dict()
        elif "timeout" not in request.extensions:
            request.extensions["timeout"] = client.timeout.as_dict()
        try:
            resp = await client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, self.deployment, model, self._api_key) from None
        if resp.status_code >= 400:
            try:
                body = await resp.aread() if stream else resp.content
            except httpx.HTTPError:
                body = b""
            finally:
                if stream:
                    await resp.aclose()
            raise self.error_from_response(resp, model or "", body)
        return resp

    def _json(self, resp: httpx.Response, model: str | None) -> Any:
        ctype = resp.headers.get("content-type", "")
        if "json" not in ctype:
            raise response_error(
                f"expected a JSON reply, got content-type {ctype!r}", self.deployment, model, resp
            )
        try:
            return _decode(resp.content)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise response_error("reply is not valid JSON", self.deployment, model, resp) from None

    async def _call_json(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        model: str | None,
        timeout: httpx.Timeout | None = None,
    ) -> tuple[httpx.Response, Any]:
        resp = await self._send(client, request, model, timeout)
        return resp, self._json(resp, model)

    async def chat(
        self,
        client: httpx.AsyncClient,
        req: ChatRequest,
        model: str,
        *,
        timeout: httpx.Timeout | None = None,
    ) -> ChatResponse:
        """Send a chat request and parse its answer; failures raise typed ProviderErrors."""
        request = self.build_chat_request(req, model, stream=False)
        resp = await self._send(client, request, model, timeout)
        return self.parse_chat_response(resp, model)

    async def stream(
        self,
        client: httpx.AsyncClient,
        req: ChatRequest,
        model: str,
        *,
        timeout: httpx.Timeout | None = None,
        stream_idle_s: float | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream a chat answer as chunks (an async generator: ``aclose()`` it if you stop early).

        A stream cut before its end marker raises ProviderUnavailableError; no bytes
        for ``stream_idle_s`` seconds raises ProviderTimeoutError. The reply is
        closed on every exit, cancellation included. ``on_response`` sees the reply
        (its headers) once it is known to be a success.

        The idle gap is timed by the transport where it can (the core's transport
        times it on its runtime, where the bytes arrive); otherwise here, and then a
        timer that fires is not believed until the loop has had a chance to deliver
        data that already arrived (after a loop stall, asyncio runs expired timers
        before the callbacks of data received meanwhile).
        """
        request = self.build_chat_request(req, model, stream=True)
        if stream_idle_s is not None:
            request.extensions[BODY_IDLE_EXT] = stream_idle_s
        resp = await self._send(client, request, model, timeout, stream=True)
        byte_iter = resp.aiter_bytes()
        timed_below = stream_idle_s is not None and BODY_IDLE_EXT in resp.extensions
        try:
            ctype = resp.headers.get("content-type", "")
            if not any(t in ctype for t in self.stream_content_types):
                raise response_error(
                    f"expected a streamed reply ({', '.join(self.stream_content_types)}), "
                    f"got content-type {ctype!r}",
                    self.deployment,
                    model,
                    resp,
                )
            if on_response is not None:
                on_response(resp)
            decoder = self.stream_decoder(model)
            while not decoder.done:
                try:
                    if stream_idle_s is None or timed_below:
                        data = await anext(byte_iter)
                    else:
                        data = await _next_within(byte_iter, stream_idle_s)
                except StopAsyncIteration:
                    for chunk in decoder.close():
                        yield well_typed(chunk, self.deployment, model)
                    break
                except (TimeoutError, httpx.ReadTimeout):
                    raise ProviderTimeoutError(
                        f"no stream data for {stream_idle_s}s",
                        provider=self.deployment,
                        model=model,
                        status_code=resp.status_code,
                    ) from None
                except httpx.HTTPError as exc:
                    raise error_from_transport(exc, self.deployment, model, self._api_key) from None
                for chunk in decoder.feed(data):
                    yield well_typed(chunk, self.deployment, model)
            if not decoder.done:
                raise ProviderUnavailableError(
                    "stream ended before its end marker",
                    provider=self.deployment,
                    model=model,
                    status_code=resp.status_code,
                )
        finally:
            with contextlib.suppress(Exception):
                await byte_iter.aclose()  # type: ignore[attr-defined]  # httpx gives a generator
            await resp.aclose()


#: Turns of the loop a fired idle timer waits for data that already arrived.
_STALL_GRACE_TURNS = 3


async def _next_within(it: AsyncIterator[bytes], idle_s: float) -> bytes:
    """The next piece of ``it``, or TimeoutError after ``idle_s`` with nothing.

    The read runs as its own task, so a timer that fired late (a stalled loop) can
    let already-arrived data through first instead of cancelling the read.
    """
    step: asyncio.Future[bytes] = asyncio.ensure_future(anext(it))
    try:
        done, _ = await asyncio.wait((step,), timeout=idle_s)
        for _ in range(_STALL_GRACE_TURNS):
            if done or step.done():
                return step.result()
            await asyncio.sleep(0)
        if step.done():
            return step.result()
    except BaseException:
        step.cancel()
        raise
    step.cancel()
    await asyncio.wait((step,))  # let the read finish cancelling before the body is closed
    raise TimeoutError
