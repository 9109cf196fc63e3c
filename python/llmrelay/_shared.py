"""The Redis-backed limiter, for asyncio: ``SharedLimiter``.

A thin async face over ``_core.SharedLimiter``: each call hands its work to the
core's runtime and awaits a future that the runtime settles through the event
loop's ``_core.Completions`` queue (the one the HTTP transport uses), so the
loop never waits on Redis. Every call returns within ``op_timeout_s`` plus a
few milliseconds; when Redis does not answer in time it follows
``on_unavailable`` and :attr:`Admission.source` says who decided.

Keys are the core limiter's: ``"<deployment>/<model>:<dimension>"`` (``rpm``,
``tpm_in``, ``tpm_out``...). The keys of one call must share the
(deployment, model), which is the Redis Cluster hash tag of its keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias, TypeVar, cast

import msgspec

from llmrelay import _core
from llmrelay._config import LLMServiceConfig, SharedStateConfig, cluster_seeds, redact_url
from llmrelay._transport import _completions

__all__ = [
    "NOT_SHARED_YET",
    "Admission",
    "SharedLimiter",
    "core_url",
    "share_breakers",
    "shared_limiter",
    "shared_state",
]

_log = logging.getLogger("llmrelay.shared")

Source: TypeAlias = Literal["redis", "local_share", "open", "closed", "lease"]
_T = TypeVar("_T")


def core_url(config: SharedStateConfig) -> str:
    """The core's URL spec of ``config``: its ``url`` for one node, or ``cluster:`` and
    the comma-separated seed URLs for a Redis Cluster (``cluster=True``).
    """
    return "cluster:" + ",".join(cluster_seeds(config.url)) if config.cluster else config.url


class Admission(msgspec.Struct, frozen=True):
    """The outcome of :meth:`SharedLimiter.reserve`."""

    admitted: bool
    #: Seconds to wait before going (admitted), or until it could go (refused).
    wait_s: float
    #: ``"redis"`` (cluster-wide), ``"lease"`` (leased mode: from this process's
    #: slice, booked in Redis beforehand), or the fallback that decided while Redis
    #: was away.
    source: Source


class SharedLimiter:
    """Keyed GCRA limits shared by every process, on Redis.

    ``SharedLimiter(SharedStateConfig(url=...))``; no connection is opened
    until the first call, and a child process after ``fork`` opens its own.
    With ``mode="leased"`` the process leases slices of the cells and admits
    from them locally; :meth:`aclose` (or :meth:`close`) returns what is left.
    """

    def __init__(self, config: SharedStateConfig) -> None:
        if not isinstance(config, SharedStateConfig):
            raise TypeError(f"expected SharedStateConfig, got {type(config).__name__}")
        self._config = config
        self._core = _core.SharedLimiter(
            core_url(config),
            namespace=config.namespace,
            on_unavailable=config.on_unavailable,
            op_timeout_s=config.op_timeout_s,
            lease_ttl_s=config.lease_ttl_s if config.mode == "leased" else None,
        )
        self._warned = False

    @property
    def config(self) -> SharedStateConfig:
        """The settings."""
        return self._config

    @property
    def core(self) -> _core.SharedLimiter:
        """The core's limiter (what each deployment's gate holds)."""
        return self._core

    def warm(self) -> None:
        """Start connecting and record this process's heartbeat, in the background
        (returns at once: start-up never waits for Redis)."""
        self._core.warm()

    def configure(self, key: str, rate_per_s: float, burst: float) -> None:
        """(Re)configure ``key``: ``rate_per_s`` > 0 units per second, bursts up to ``burst``."""
        self._core.configure(key, rate_per_s, burst)

    async def _call(self, start: Callable[[_core.Completions, asyncio.Future[Any]], None]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        start(_completions(loop), fut)
        return await fut

    def _seen(self, source: str) -> None:
        if source in ("redis", "lease"):
            self._warned = False
        elif not self._warned:
            self._warned = True
            _log.warning(
                "shared state unavailable (no reply from Redis within %.3f s): "
                "limits follow on_unavailable=%r in this process until it answers",
                self._config.op_timeout_s,
                self._config.on_unavailable,
            )

    async def reserve(
        self,
        items: Sequence[tuple[str, float]],
        *,
        max_wait_s: float = 0.0,
        reservation: str | None = None,
    ) -> Admission:
        """Book every ``(key, cost)`` if all of them (and any 429 pause) allow it
        within ``max_wait_s``; otherwise book nothing.

        With ``reservation`` (an id unique to the request), the booking is kept
        for :meth:`reconcile` (ten minutes).
        """
        pairs = [(k, float(c)) for k, c in items]
        admitted, wait_s, source = await self._call(
            lambda q, f: self._core.reserve_many(q, f, pairs, max_wait_s, reservation)
        )
        self._seen(source)
        return Admission(admitted=admitted, wait_s=wait_s, source=cast(Source, source))

    async def refund(self, items: Sequence[tuple[str, float]]) -> Source:
        """Give back an unused booking of every ``(key, cost)``."""
        pairs = [(k, float(c)) for k, c in items]
        source = await self._call(lambda q, f: self._core.refund(q, f, pairs))
        self._seen(source)
        return cast(Source, source)

    async def reconcile(self, reservation: str, items: Sequence[tuple[str, float]]) -> bool:
        """Settle ``reservation`` with the real cost of every ``(key, cost)``.

        Each key booked under it is charged or given back ``actual - booked``;
        True when applied now, False when it was settled already (a repeat is a
        no-op), expired, or Redis did not answer.
        """
        pairs = [(k, float(c)) for k, c in items]
        applied, source = await self._call(
            lambda q, f: self._core.reconcile(q, f, reservation, pairs)
        )
        self._seen(source)
        return bool(applied)

    async def observe_headers(
        self, key: str, remaining: float, limit: float | None, reset_s: float
    ) -> Source:
        """The provider says ``remaining`` (of ``limit``) are left until a reset in
        ``reset_s``: tighten ``key`` cluster-wide (never loosens)."""
        source = await self._call(
            lambda q, f: self._core.observe_headers(q, f, key, remaining, limit, reset_s)
        )
        self._seen(source)
        return cast(Source, source)

    async def pause(self, key: str, retry_after_s: float) -> float:
        """A 429 said to wait ``retry_after_s``: pause ``key``'s (deployment, model) in
        every process (the later deadline wins). Returns the seconds left."""
        left = await self._call(lambda q, f: self._core.pause(q, f, key, retry_after_s))
        return float(left)

    async def available(self, key: str) -> tuple[float, Source]:
        """Capacity that could be taken now on ``key``, and who said so."""
        capacity, source = await self._call(lambda q, f: self._core.available(q, f, key))
        self._seen(source)
        return float(capacity), cast(Source, source)

    async def heartbeat(self) -> int | None:
        """Record this process as live; the live count, or None if Redis did not answer."""
        live = await self._call(lambda q, f: self._core.heartbeat(q, f))
        return None if live is None else int(live)

    def stats(self) -> dict[str, Any]:
        """Health: connected, degraded, counts of timeouts, fallbacks, script loads...

        In leased mode also ``leases_taken``, ``leases_returned``, ``units_leased``,
        ``units_returned``, ``local_admissions`` (no Redis round trip),
        ``local_misses``, ``lease_calls``, ``refills`` and ``lease_ttl_s``.
        """
        return dict(self._core.stats())

    @property
    def leased(self) -> bool:
        """Whether this limiter admits from leased slices (``mode="leased"``)."""
        return self._core.leased

    def leased_units(self, key: str) -> float:
        """Units of ``key`` this process holds in live leased slices (0 in exact mode)."""
        return self._core.leased_units(key)

    async def aclose(self) -> float:
        """Return every leased slice to Redis (each within ``op_timeout_s``); the
        units returned. Nothing to do in exact mode. The limiter stays usable (it
        leases again on the next call)."""
        if not self._core.leased:
            return 0.0
        return float(await self._call(lambda q, f: self._core.release_leases(q, f)))

    def close(self) -> float:
        """The blocking twin of :meth:`aclose` (for plain code, not inside a loop)."""
        if not self._core.leased:
            return 0.0
        return self._core.release_leases_blocking()

    def __repr__(self) -> str:
        return f"SharedLimiter({self._config!r})"


#: Switches of ``SharedStateConfig`` whose state is not shared by this version: that
#: state stays per process (LLMService says so with a warning at start).
NOT_SHARED_YET: tuple[str, ...] = ()


def share_breakers(
    config: LLMServiceConfig, runtimes: Mapping[str, Any]
) -> _core.SharedBreakers | None:
    """Share every deployment's breaker through Redis when ``shared.breakers`` is on.

    Each gate keeps its local breaker and publishes its outcomes (in the background);
    the deployment opens cluster-wide when bad outcomes seen by at least two
    processes cross its threshold, and its half-open probes are counted cluster-wide
    (docs/scaleout.md). Nothing is opened here: the subscription starts in the
    background, and admission never waits for Redis. The gates hold the returned hub.
    """
    sc = config.shared
    if sc is None or not sc.breakers or not runtimes:
        return None
    hub = _core.SharedBreakers(core_url(sc), namespace=sc.namespace, op_timeout_s=sc.op_timeout_s)
    for rt in runtimes.values():
        rt.gate.share_breaker(hub)
    hub.warm()
    return hub


def _breakers_state(runtimes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The shared breakers' part of ``snapshot().shared`` (None when not shared)."""
    deployments: dict[str, dict[str, Any]] = {}
    for name, rt in runtimes.items():
        st = rt.gate.shared_breaker_stats()
        if st is not None:
            deployments[name] = dict(st)
    if not deployments:
        return None
    totals = {
        k: sum(int(d[k]) for d in deployments.values())
        for k in (
            "published",
            "publish_errors",
            "publish_dropped",
            "opens",
            "reopens",
            "closes",
            "probes",
            "probe_denials",
            "permits_returned",
            "fallbacks",
            "refused",
            "notices",
        )
    }
    listening = any([bool(d.pop("listening")) for d in deployments.values()])
    return {"listening": listening, **totals, "deployments": deployments}


def shared_limiter(config: LLMServiceConfig) -> SharedLimiter | None:
    """The service's Redis limiter when ``shared.limits`` is on (None otherwise).

    Nothing is opened here: the connection starts in the background and every call
    is bounded by ``op_timeout_s``, so building a service never waits for Redis.
    """
    sc = config.shared
    if sc is None or not sc.limits:
        return None
    lim = SharedLimiter(sc)
    lim.warm()
    return lim


def shared_state(
    config: LLMServiceConfig, lim: SharedLimiter | None, runtimes: Mapping[str, Any]
) -> dict[str, Any]:
    """The shared state's health for ``metrics.snapshot().shared`` ({} without it).

    ``pid`` and ``member`` name this process (metrics stay per process); ``connected``,
    ``degraded``, ``script_errors``, ``timeouts``, ``fallback_calls``... are the Redis
    connection's; ``reservations``, ``refusals``, ``refunds``, ``reconciles`` the
    limiter's operations; ``deployments`` the shared checks per deployment and how
    many the ``on_unavailable`` fallback decided. With shared breakers, ``breakers``
    has the subscription's health (``listening``), the counts summed over deployments
    (``published``, ``publish_errors``, ``publish_dropped``, ``opens``, ``reopens``,
    ``closes``, ``probes``, ``probe_denials``, ``permits_returned``, ``fallbacks``,
    ``refused``, ``notices``) and per deployment its cluster-wide ``state`` as this
    process knows it, with the same counts.
    """
    sc = config.shared
    if sc is None:
        return {}
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "url": redact_url(sc.url),
        "cluster": sc.cluster,
        "namespace": sc.namespace,
        "mode": sc.mode,
        "on_unavailable": sc.on_unavailable,
        "limits": lim is not None,
        "not_shared": [n for n in NOT_SHARED_YET if getattr(sc, n)],
    }
    breakers = _breakers_state(runtimes)
    if breakers is not None:
        out["breakers"] = breakers
    if lim is not None:
        out.update(lim.stats())
        deployments: dict[str, dict[str, int]] = {}
        for name, rt in runtimes.items():
            st = rt.gate.stats()
            deployments[name] = {
                "shared_checks": int(st["shared_checks"]),
                "shared_fallbacks": int(st["shared_fallbacks"]),
            }
        out["deployments"] = deployments
    return out
