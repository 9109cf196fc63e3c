"""The provider adapter base: one deployment's wire protocol, spoken in bytes.

An adapter turns a call into a :class:`~llmrelay.providers._wire.WireRequest`
(method, URL, header pairs, body bytes encoded by msgspec) and decodes a reply's
bytes with typed msgspec structs of the provider's wire format, in one step; it
owns no client, pool or retry logic (the service does). The execute stage hands
the bytes to the core's HTTP client directly; any httpx transport gets them
through one shim (:mod:`llmrelay._transport`). Subclasses implement
``wire_chat``/``decode_chat`` (or, the older way, ``build_chat_request``/
``parse_chat_response`` on httpx objects: each pair falls back on the other),
``wire_embed``/``decode_embed`` and a stream decoder (a
:class:`~llmrelay.providers._sse.FramedDecoder`: whole SSE / NDJSON events, framed
in the core, decoded with typed structs); this base maps every failure to a typed
error, and drives streams with an idle timeout, closing the reply on every exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import httpx
import msgspec

from llmrelay._params import short
from llmrelay._transport import (
    BODY_IDLE_EXT,
    StreamReply,
    httpx_exchange,
    httpx_reply,
    httpx_request,
    next_within,
    open_stream,
)
from llmrelay._types import ChatChunk, ChatRequest, ChatResponse, EmbeddingResponse
from llmrelay._wire import HeaderPairs, WireRequest, header
from llmrelay.errors import (
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from llmrelay.providers._errors import error_from_reply, error_from_transport, response_error
from llmrelay.providers._ratelimit import RateLimitInfo, parse_rate_limit_headers
from llmrelay.providers._sse import FramedDecoder

__all__ = ["ProviderAdapter", "StreamDecoder", "well_typed"]

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_T = TypeVar("_T", ChatResponse, ChatChunk)
_W = TypeVar("_W")


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
    #: Whether the adapter answers in this process (no HTTP; ``chat``/``stream``/``embed``
    #: are called directly, with no client).
    in_process: ClassVar[bool] = False
    #: Content types a streamed reply may have.
    stream_content_types: ClassVar[tuple[str, ...]] = ("text/event-stream",)

    __slots__ = ("_api_key", "_pairs", "base_url", "deployment", "headers")

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
        # the header pairs of each kind of request, encoded once (see _wire)
        self._pairs: dict[object, HeaderPairs] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(deployment={self.deployment!r}, base_url={self.base_url!r}, "
            f"api_key={'***' if self._api_key else None})"
        )

    __str__ = __repr__

    # ------------------------------------------------------------ to implement

    def wire_chat(self, req: ChatRequest, model: str, *, stream: bool) -> WireRequest:
        """The HTTP request of a chat call, as bytes.

        The base derives it from ``build_chat_request`` (an adapter written against
        httpx objects); the built-in adapters implement it directly.
        """
        if type(self).build_chat_request is ProviderAdapter.build_chat_request:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither wire_chat nor build_chat_request"
            )
        r = self.build_chat_request(req, model, stream=stream)
        return WireRequest(
            r.method, str(r.url), [(k.lower(), v) for k, v in r.headers.raw], r.content
        )

    def decode_chat(
        self, status: int, headers: HeaderPairs, body: bytes, model: str
    ) -> ChatResponse:
        """The ChatResponse of a successful (2xx) chat reply, from its bytes.

        A reply of the wrong shape raises ProviderResponseError. The base derives it
        from ``parse_chat_response``; the built-in adapters decode the bytes with
        typed structs of their wire format in one step.
        """
        if type(self).parse_chat_response is ProviderAdapter.parse_chat_response:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither decode_chat nor parse_chat_response"
            )
        return self.parse_chat_response(
            httpx.Response(status, headers=headers, content=body), model
        )

    def build_chat_request(self, req: ChatRequest, model: str, *, stream: bool) -> httpx.Request:
        """The HTTP request of a chat call as an ``httpx.Request`` (``wire_chat`` through
        the httpx shim; streams are sent so)."""
        if type(self).wire_chat is ProviderAdapter.wire_chat:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither wire_chat nor build_chat_request"
            )
        return httpx_request(self.wire_chat(req, model, stream=stream))

    def parse_chat_response(self, resp: httpx.Response, model: str) -> ChatResponse:
        """The ChatResponse of a successful (2xx) chat reply read by httpx (``decode_chat``
        on its bytes)."""
        if type(self).decode_chat is ProviderAdapter.decode_chat:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither decode_chat nor parse_chat_response"
            )
        status, headers, body = httpx_reply(resp)
        return self.decode_chat(status, headers, body, model)

    def stream_decoder(self, model: str) -> StreamDecoder:
        """A fresh decoder for one streamed chat reply: a ``FramedDecoder`` (whole
        events, framed by the core) or, for a plug-in, any ``StreamDecoder`` of bytes."""
        raise NotImplementedError

    def wire_embed(self, inputs: list[str], model: str, params: dict[str, Any]) -> WireRequest:
        """The HTTP request of an embeddings call, as bytes."""
        raise NotImplementedError(f"{self.kind} adapter has no embeddings")

    def decode_embed(
        self, status: int, headers: HeaderPairs, body: bytes, model: str
    ) -> EmbeddingResponse:
        """The EmbeddingResponse of a successful (2xx) embeddings reply, from its bytes."""
        raise NotImplementedError(f"{self.kind} adapter has no embeddings")

    async def embed(
        self, client: httpx.AsyncClient, inputs: list[str], model: str, **params: Any
    ) -> EmbeddingResponse:
        """Embeddings of ``inputs``, in order, sent through ``client`` (the service sends
        ``wire_embed``'s bytes on its own transport instead)."""
        wire = self.wire_embed(inputs, model, params)
        status, headers, body = await self._exchange(client, wire, model, None)
        return self.decode_embed(status, headers, body, model)

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

    def error_from_reply(
        self, status: int, headers: HeaderPairs, body: bytes, model: str | None
    ) -> ProviderError:
        """The typed error of an HTTP error reply, from its status, raw headers and body."""
        return error_from_reply(status, headers, body, self.deployment, model, self._api_key)

    def error_from_response(self, resp: httpx.Response, model: str, body: bytes) -> ProviderError:
        """The typed error of an HTTP error reply read by httpx (status, body, headers)."""
        status, headers, _ = httpx_reply(resp, read=False)
        return self.error_from_reply(status, headers, body, model)

    def rate_limit_info(self, headers: Mapping[str, str] | HeaderPairs) -> RateLimitInfo:
        """The rate-limit state a reply's headers report (a mapping, or raw pairs)."""
        return parse_rate_limit_headers(headers)

    def _header_pairs(
        self, key: object, headers: Mapping[str, str] | None, has_body: bool
    ) -> HeaderPairs:
        """The header pairs of one kind of request (``key``), built and encoded once:
        ``accept: application/json``, then ``headers``, then the deployment's own
        (``self.headers`` is read when a kind of request is first built)."""
        pairs = self._pairs.get(key)
        if pairs is None:
            hdrs = {"accept": "application/json"}
            if headers:
                hdrs.update(headers)
            hdrs.update(self.headers)
            if has_body:
                hdrs["content-type"] = "application/json"
            pairs = self._pairs[key] = [
                (k.lower().encode("utf-8"), v.encode("utf-8")) for k, v in hdrs.items()
            ]
        return pairs

    def _wire(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        key: object = None,
        secret: Mapping[str, str] | None = None,
    ) -> WireRequest:
        """A request as bytes: the body encoded by msgspec, the headers as pairs (cached
        under ``key``, default the method and URL, when the extra ``headers`` never
        change for that key). ``secret`` headers (the credential) are encoded for this
        request only, never kept, and give way to a deployment header of the same name."""
        pairs = self._header_pairs(
            key if key is not None else (method, url), headers, body is not None
        )
        if secret:
            own = {k.lower() for k in self.headers} if self.headers else ()
            pairs = pairs + [
                (k.encode("utf-8"), v.encode("utf-8")) for k, v in secret.items() if k not in own
            ]
        return WireRequest(method, url, pairs, b"" if body is None else _encode(body))

    def _request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        secret: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        return httpx_request(self._wire(method, url, body, headers, secret=secret))

    def _decode_reply(
        self,
        status: int,
        headers: HeaderPairs,
        body: bytes,
        model: str | None,
        decoder: msgspec.json.Decoder[_W],
        what: str,
    ) -> _W:
        """``body`` decoded as the wire struct of ``decoder``, in one step; a reply that is
        not JSON, or not of that shape, raises ProviderResponseError."""
        ctype = header(headers, b"content-type") or ""
        if "json" not in ctype:
            raise response_error(
                f"expected a JSON reply, got content-type {ctype!r}",
                self.deployment,
                model,
                status=status,
                headers=headers,
            )
        try:
            return decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise self.bad_reply(f"reply is not {what} ({exc})", status, headers, model) from None
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise self.bad_reply("reply is not valid JSON", status, headers, model) from None

    def bad_reply(
        self, text: str, status: int, headers: HeaderPairs, model: str | None
    ) -> ProviderError:
        """The ProviderResponseError of a reply that breaks the wire protocol."""
        return response_error(text, self.deployment, model, status=status, headers=headers)

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
        """Send a chat request through ``client`` and decode its answer; failures raise
        typed ProviderErrors. (The service sends ``wire_chat``'s bytes on its own
        transport instead: see ``llmrelay._pipeline.execute.send_chat``.)"""
        wire = self.wire_chat(req, model, stream=False)
        status, headers, body = await self._exchange(client, wire, model, timeout)
        return self.decode_chat(status, headers, body, model)

    async def _exchange(
        self,
        client: httpx.AsyncClient,
        wire: WireRequest,
        model: str | None,
        timeout: httpx.Timeout | None,
    ) -> tuple[int, HeaderPairs, bytes]:
        """One exchange through ``client`` (the httpx shim): a 2xx reply's bytes, or the
        typed error of a transport failure or an error reply."""
        try:
            status, headers, body = await httpx_exchange(
                client, None, wire, timeout or client.timeout
            )
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, self.deployment, model, self._api_key) from None
        if status >= 400:
            raise self.error_from_reply(status, headers, body, model)
        return status, headers, body

    async def stream(
        self,
        client: httpx.AsyncClient | None,
        req: ChatRequest,
        model: str,
        *,
        timeout: httpx.Timeout | None = None,
        stream_idle_s: float | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_headers: Callable[[HeaderPairs], None] | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream a chat answer as chunks (an async generator: ``aclose()`` it if you stop early).

        The request's bytes go to the core's client when ``transport`` is the default
        one (the body framed into whole SSE / NDJSON events in the core, handed over
        in batches, no httpx object built), else through httpx (``transport`` itself
        when given, else ``client``) and the same core framer. A stream cut before its
        end marker raises ProviderUnavailableError; no bytes for ``stream_idle_s``
        seconds raises ProviderTimeoutError (timed where the bytes arrive on the
        core's client). The reply is closed on every exit, cancellation included.
        ``on_headers`` sees the reply's header pairs (``on_response`` an
        ``httpx.Response`` of its head) once it is known to be a success.

        A decoder without ``events`` (a plug-in's ``StreamDecoder`` over bytes) is fed
        the body's bytes through ``client`` instead.
        """
        decoder = self.stream_decoder(model)
        if not isinstance(decoder, FramedDecoder):
            assert client is not None, "a bytes decoder reads through an httpx client"
            async for chunk in self._stream_bytes(
                client, decoder, req, model, timeout, stream_idle_s, on_response
            ):
                yield chunk
            return
        wire = self.wire_chat(req, model, stream=True)
        if timeout is None:
            timeout = client.timeout if client is not None else httpx.Timeout(60.0)
        try:
            reply = await open_stream(
                client, transport, wire, timeout, stream_idle_s, decoder.framing
            )
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, self.deployment, model, self._api_key) from None
        try:
            await self._check_stream_head(reply, model)
            if on_headers is not None:
                on_headers(reply.headers)
            if on_response is not None:
                on_response(httpx.Response(reply.status, headers=reply.headers))
            while not decoder.done:
                try:
                    batch = await reply.next_events()
                except (TimeoutError, httpx.ReadTimeout):
                    raise ProviderTimeoutError(
                        f"no stream data for {stream_idle_s}s",
                        provider=self.deployment,
                        model=model,
                        status_code=reply.status,
                    ) from None
                except httpx.HTTPError as exc:
                    raise error_from_transport(exc, self.deployment, model, self._api_key) from None
                if not batch:
                    break
                for chunk in decoder.events(batch):
                    yield chunk
            if not decoder.done:
                raise ProviderUnavailableError(
                    "stream ended before its end marker",
                    provider=self.deployment,
                    model=model,
                    status_code=reply.status,
                )
        finally:
            await reply.aclose()

    async def _check_stream_head(self, reply: StreamReply, model: str) -> None:
        """Raise the typed error of an error reply, or of a reply that is not a stream."""
        if reply.status >= 400:
            try:
                body = await reply.read()
            except httpx.HTTPError:
                body = b""
            raise self.error_from_reply(reply.status, reply.headers, body, model)
        ctype = header(reply.headers, b"content-type") or ""
        if not any(t in ctype for t in self.stream_content_types):
            raise response_error(
                f"expected a streamed reply ({', '.join(self.stream_content_types)}), "
                f"got content-type {ctype!r}",
                self.deployment,
                model,
                status=reply.status,
                headers=reply.headers,
            )

    async def _stream_bytes(
        self,
        client: httpx.AsyncClient,
        decoder: StreamDecoder,
        req: ChatRequest,
        model: str,
        timeout: httpx.Timeout | None,
        stream_idle_s: float | None,
        on_response: Callable[[httpx.Response], None] | None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """:meth:`stream` for a decoder fed bytes (a plug-in's ``StreamDecoder``), read
        through ``client`` as httpx objects.

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
            while not decoder.done:
                try:
                    if stream_idle_s is None or timed_below:
                        data = await anext(byte_iter)
                    else:
                        data = await next_within(byte_iter, stream_idle_s)
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
