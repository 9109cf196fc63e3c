"""ProviderPool: the deployments of every provider, one HTTP client each.

A deployment is one configured provider (a kind, a base URL, a credential). Each
gets its own ``httpx.AsyncClient`` (connection limits, keep-alive) built lazily on
first use; a client idle longer than ``idle_timeout_s`` is closed and rebuilt on
next use, and ``aclose()`` closes them all. ``health()`` gives the selector a
view per deployment: requests in flight, EWMA latency per output token, and
recent errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from llmrelay._config import LLMServiceConfig, ProviderConfig, RequestTimeouts
from llmrelay.errors import ConfigError

if TYPE_CHECKING:
    from llmrelay.providers import ProviderAdapter

__all__ = ["Deployment", "DeploymentHealth", "ProviderPool"]

TransportFactory = Callable[[ProviderConfig], httpx.AsyncBaseTransport | None]

_EWMA_ALPHA = 0.2


@dataclass(slots=True)
class DeploymentHealth:
    """What the selector reads: load, speed and recent trouble of one deployment."""

    in_flight: int = 0
    ewma_latency_s: float | None = None
    ewma_latency_per_token_s: float | None = None
    recent_errors: int = 0
    requests: int = 0
    last_error_at: float | None = None

    def observe(self, latency_s: float, output_tokens: int, ok: bool) -> None:
        """Fold one finished call into the moving averages."""
        self.requests += 1
        if ok:
            per_tok = latency_s / max(1, output_tokens)
            if self.ewma_latency_s is None or self.ewma_latency_per_token_s is None:
                self.ewma_latency_s, self.ewma_latency_per_token_s = latency_s, per_tok
            else:
                a = _EWMA_ALPHA
                self.ewma_latency_s += a * (latency_s - self.ewma_latency_s)
                self.ewma_latency_per_token_s += a * (per_tok - self.ewma_latency_per_token_s)
            self.recent_errors = max(0, self.recent_errors - 1)
        else:
            self.recent_errors = min(self.recent_errors + 1, 100)
            self.last_error_at = time.monotonic()


@dataclass(slots=True, eq=False)
class Deployment:
    """One configured provider deployment and its lazily built client."""

    config: ProviderConfig
    base_url: str
    timeouts: RequestTimeouts
    api_key: str | None = field(repr=False)
    adapter: ProviderAdapter = field(repr=False)
    health: DeploymentHealth = field(default_factory=DeploymentHealth)
    _clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = field(
        default_factory=dict, repr=False
    )
    #: the transport under each loop's client, when the pool built it (None: httpx's own)
    _transports: dict[asyncio.AbstractEventLoop, httpx.AsyncBaseTransport | None] = field(
        default_factory=dict, repr=False
    )
    _last_used: float = 0.0

    @property
    def name(self) -> str:
        """The deployment's configured name."""
        return self.config.name

    @property
    def kind(self) -> str:
        """The adapter kind (openai, anthropic, ollama or a plug-in)."""
        return self.config.provider_kind

    _scope: str | None = field(default=None, repr=False)

    @property
    def credential_scope(self) -> str:
        """A stable, non-reversible fingerprint of the credential, for scoping cache entries."""
        if self._scope is None:
            raw = f"{self.kind}\0{self.base_url}\0{self.api_key or ''}".encode()
            self._scope = hashlib.blake2b(raw, digest_size=8, person=b"llmrelay-scope").hexdigest()
        return self._scope

    def httpx_timeout(self, remaining_s: float | None = None) -> httpx.Timeout:
        """The httpx timeout for one attempt, read capped by the remaining deadline."""
        t = self.timeouts
        read = t.read_s if remaining_s is None else max(0.001, min(t.read_s, remaining_s))
        return httpx.Timeout(connect=t.connect_s, read=read, write=t.write_s, pool=t.pool_s)


class ProviderPool:
    """Every deployment of a service, with one HTTP client each."""

    def __init__(
        self,
        config: LLMServiceConfig,
        *,
        adapter_for: Callable[[ProviderConfig, str, str | None], Any],
        default_base_url: Callable[[str], str],
        default_api_key_env: Callable[[str], str | None] | None = None,
        transport_factory: TransportFactory | None = None,
        idle_timeout_s: float = 300.0,
        max_connections: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deployments: dict[str, Deployment] = {}
        self._transport_factory = transport_factory
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._clock = clock
        self._last_sweep = clock()
        self._sweeps: set[asyncio.Task[int]] = set()
        for p in config.providers:
            base_url = (p.base_url or default_base_url(p.provider_kind)).rstrip("/")
            key = p.resolve_api_key()
            if key is None and not p.api_key_env and default_api_key_env is not None:
                env = default_api_key_env(p.provider_kind)  # the kind's own (GROQ_API_KEY)
                key = os.environ.get(env) or None if env else None
            self._deployments[p.name] = Deployment(
                config=p,
                base_url=base_url,
                timeouts=p.timeouts or config.timeouts,
                api_key=key,
                adapter=adapter_for(p, base_url, key),
            )

    def __iter__(self) -> Iterator[Deployment]:
        return iter(self._deployments.values())

    def __len__(self) -> int:
        return len(self._deployments)

    def get(self, name: str) -> Deployment:
        """The deployment called ``name``; ConfigError if there is none."""
        try:
            return self._deployments[name]
        except KeyError:
            known = sorted(self._deployments)
            raise ConfigError(f"invalid provider={name!r}: known providers are {known}") from None

    def client(self, dep: Deployment) -> httpx.AsyncClient:
        """The deployment's client on the running loop, built on first use.

        One client per event loop: an httpx connection pool belongs to the loop
        that opened its connections, and the sync API runs on its own loop.
        """
        now = self._clock()
        dep._last_used = now
        loop = asyncio.get_running_loop()
        client = dep._clients.get(loop)
        if client is None or client.is_closed:
            limits = httpx.Limits(
                max_connections=dep.config.max_concurrency or self._max_connections,
                max_keepalive_connections=dep.config.max_concurrency or self._max_connections,
                keepalive_expiry=min(self._idle_timeout_s, 60.0),
            )
            transport = self._transport_factory(dep.config) if self._transport_factory else None
            client = httpx.AsyncClient(
                limits=limits,
                timeout=dep.httpx_timeout(),
                transport=transport,
                follow_redirects=False,
            )
            dep._clients[loop] = client
            dep._transports[loop] = transport
        return client

    def route(self, dep: Deployment) -> tuple[httpx.AsyncClient, httpx.AsyncBaseTransport | None]:
        """The deployment's client on the running loop and the transport under it (see
        :meth:`client` and :meth:`transport`), in one lookup."""
        client = self.client(dep)
        return client, dep._transports.get(asyncio.get_running_loop())

    def transport(self, dep: Deployment) -> httpx.AsyncBaseTransport | None:
        """The transport under the running loop's client, if the pool chose it.

        The execute stage sends straight through it, skipping ``AsyncClient.send``
        (auth, cookie and redirect handling the adapters do not use), which saves
        tens of microseconds of CPU per call.
        """
        self.client(dep)
        return dep._transports.get(asyncio.get_running_loop())

    def maybe_sweep(self) -> None:
        """Start an idle-client sweep on the running loop if one is due (cheap when not)."""
        now = self._clock()
        if now - self._last_sweep < self._idle_timeout_s / 2:
            return
        self._last_sweep = now
        task = asyncio.get_running_loop().create_task(self.close_idle())
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    def health(self) -> dict[str, dict[str, float | int | None]]:
        """Per deployment: requests in flight, EWMA latency (and per output token), errors."""
        return {
            d.name: {
                "in_flight": d.health.in_flight,
                "ewma_latency_s": d.health.ewma_latency_s,
                "ewma_latency_per_token_s": d.health.ewma_latency_per_token_s,
                "recent_errors": d.health.recent_errors,
                "requests": d.health.requests,
            }
            for d in self._deployments.values()
        }

    async def close_idle(self) -> int:
        """Close this loop's clients unused for longer than the idle timeout; returns how many."""
        now = self._clock()
        loop = asyncio.get_running_loop()
        closed = 0
        for dep in self._deployments.values():
            c = dep._clients.get(loop)
            idle = now - dep._last_used > self._idle_timeout_s
            if c is not None and dep.health.in_flight == 0 and idle:
                del dep._clients[loop]
                dep._transports.pop(loop, None)
                await c.aclose()
                closed += 1
        return closed

    async def aclose_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close every client that belongs to ``loop`` (call from that loop)."""
        pending = [t for t in self._sweeps if t.get_loop() is loop and not t.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for dep in self._deployments.values():
            c = dep._clients.pop(loop, None)
            dep._transports.pop(loop, None)
            if c is not None:
                await c.aclose()

    def after_fork_in_child(self) -> None:
        """Forget the parent's clients and sweeps (their loops do not run in a child)."""
        self._sweeps = set()
        for dep in self._deployments.values():
            dep._clients.clear()
            dep._transports.clear()

    def loops(self) -> set[asyncio.AbstractEventLoop]:
        """The loops that own at least one open client."""
        return {loop for dep in self._deployments.values() for loop in dep._clients}
