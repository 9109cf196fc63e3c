"""The execute stage: one attempt's HTTP exchange, as bytes.

The adapter builds the request's bytes (:meth:`ProviderAdapter.wire_chat`), the
transport sends them (the core's client by default, in one crossing; any httpx
transport through the shim), and the adapter decodes the reply's bytes in one
step. Transport failures and error statuses are typed here, once. In-process
adapters are called directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeAlias, cast

import httpx

from llmrelay import _core
from llmrelay._config import ProviderConfig
from llmrelay._pool import Deployment
from llmrelay._transport import RustTransport, error_class, httpx_exchange, read_body
from llmrelay._types import ChatRequest, ChatResponse, EmbeddingResponse
from llmrelay._wire import HeaderPairs, WireReply, WireRequest
from llmrelay.errors import (
    ConfigError,
    InvalidRequestError,
)
from llmrelay.providers import ProviderAdapter
from llmrelay.providers._errors import transport_error
from llmrelay.providers._inprocess import InProcessAdapter


async def send_chat(
    client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    dep: Deployment,
    model: str,
    req: ChatRequest,
    remaining: float,
    observe: Callable[[Deployment, Any, Any], None],
) -> ChatResponse:
    """The execute stage of a chat call: one HTTP exchange, errors typed, rate headers
    observed (see :func:`exchange`)."""
    adapter = dep.adapter
    if isinstance(adapter, InProcessAdapter):
        return await adapter.chat(None, req, model)
    wire = adapter.wire_chat(req, model, stream=False)
    status, headers, body = await exchange(client, transport, dep, model, wire, remaining)
    observe(dep, adapter, headers)
    if status >= 400:
        raise adapter.error_from_reply(status, headers, body, model)
    out: ChatResponse = adapter.decode_chat(status, headers, body, model)
    return out


async def send_embed(
    client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    dep: Deployment,
    model: str,
    inputs: list[str],
    params: dict[str, Any],
    remaining: float,
    observe: Callable[[Deployment, Any, Any], None],
) -> EmbeddingResponse:
    """The execute stage of an embeddings call, as :func:`send_chat` for chat.

    An adapter that implements ``embed`` on an httpx client but not ``wire_embed``
    (a plug-in written that way), and in-process adapters, are called as they are.
    """
    adapter = dep.adapter
    if isinstance(adapter, InProcessAdapter):
        return await adapter.embed(None, inputs, model, **params)
    if not _speaks_embed_bytes(adapter):
        assert client is not None  # the pool routes every HTTP deployment through a client
        return await adapter.embed(client, inputs, model, **params)
    wire = adapter.wire_embed(inputs, model, params)
    status, headers, body = await exchange(client, transport, dep, model, wire, remaining)
    observe(dep, adapter, headers)
    if status >= 400:
        raise adapter.error_from_reply(status, headers, body, model)
    out: EmbeddingResponse = adapter.decode_embed(status, headers, body, model)
    return out


def _speaks_embed_bytes(adapter: ProviderAdapter) -> bool:
    return type(adapter).wire_embed is not ProviderAdapter.wire_embed


async def exchange(
    client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    dep: Deployment,
    model: str,
    wire: WireRequest,
    remaining: float,
) -> WireReply:
    """One HTTP exchange of request bytes: the reply's (status, headers, body).

    On the default transport (the core's client) the bytes go to the core in one
    crossing and the whole reply comes back on one future: no httpx object is
    built. Any other transport (httpx's own, aiohttp, a user's, such as
    ``httpx.MockTransport``) gets them through the httpx shim. Either way the read
    timer is the deployment's read timeout capped by the caller's ``remaining``
    budget; when the cap cut it, its expiry is the caller's DeadlineExceededError,
    not the deployment's ProviderTimeoutError. Transport failures are typed here.
    """
    read_s = dep.timeouts.read_s
    clamped = remaining < read_s  # the read timer is the caller's deadline
    if type(transport) is RustTransport:  # a subclass may override handle_async_request
        try:
            pending, fut = transport.submit(wire, max(0.001, min(read_s, remaining)))
        except _core.HttpTransportError as e:
            raise transport_error(error_class(e), dep.name, model, deadline_cut=clamped) from None
        try:
            status, headers, body, _version, rest = cast(_CoreReply, await fut)
            if rest is not None:  # chunked, or over 1 MiB: the core streams what is left
                body = await read_body(rest)
        except asyncio.CancelledError:
            pending.abort()
            raise
        except _core.HttpTransportError as e:
            raise transport_error(error_class(e), dep.name, model, deadline_cut=clamped) from None
        return WireReply(status, headers, body)
    assert client is not None
    try:
        return await httpx_exchange(client, transport, wire, dep.httpx_timeout(remaining))
    except httpx.TransportError as e:
        raise transport_error(type(e), dep.name, model, deadline_cut=clamped) from None


#: What the core delivers for a completed request.
_CoreReply: TypeAlias = tuple[int, HeaderPairs, bytes, str, "_core.HttpBody | None"]


def transport_factory(
    transport: str | Callable[[Any], httpx.AsyncBaseTransport | None] | None,
) -> Callable[[ProviderConfig], httpx.AsyncBaseTransport | None] | None:
    """The HTTP transport per deployment: Rust by default (see docs/decisions.md)."""
    if transport is None or transport in ("default", "rust"):

        def rust(p: ProviderConfig) -> httpx.AsyncBaseTransport:
            connect = p.timeouts.connect_s if p.timeouts else 10.0
            return RustTransport(connect_timeout_s=connect)

        return rust
    if transport == "httpx":
        return None
    if transport == "aiohttp":

        def aio(p: ProviderConfig) -> httpx.AsyncBaseTransport:
            try:
                from httpx_aiohttp import AiohttpTransport  # type: ignore[import-not-found]
            except ImportError:
                raise ConfigError(
                    "invalid transport='aiohttp': install the extra (pip install llmrelay[aiohttp])"
                ) from None
            t: httpx.AsyncBaseTransport = AiohttpTransport()
            return t

        return aio
    if callable(transport):
        return transport
    raise InvalidRequestError(
        f"invalid transport={transport!r}: expected 'rust', 'httpx', 'aiohttp' or a factory",
        field="transport",
    )
