"""The shared cache tier and cross-process dedup, for asyncio.

Thin async faces over ``_core.SharedCache`` and ``_core.SharedDedup``: each
call hands its work to the core's runtime and awaits a future the runtime
settles through the loop's ``_core.Completions`` queue, so the loop never
waits on Redis. Neither ever raises because Redis is down or slow: a lookup
is a miss, a join is ``"unavailable"`` (the caller calls the provider
itself), and both answer within ``op_timeout_s`` plus a few milliseconds.
Writes are queued and return at once. See docs/scaleout.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from llmrelay import _core
from llmrelay._config import SharedStateConfig
from llmrelay._shared import core_url
from llmrelay._transport import _completions

__all__ = ["DEFAULT_SHARED_TTL_S", "SharedCacheTier", "SharedDedupTier"]

#: How long a shared-tier entry lives when neither the call nor CacheConfig sets a TTL.
DEFAULT_SHARED_TTL_S = 86_400.0

JoinOutcome: TypeAlias = Literal["lead", "done", "timeout", "unavailable"]


async def _call(start: Callable[[_core.Completions, asyncio.Future[Any]], None]) -> Any:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    start(_completions(loop), fut)
    return await fut


class SharedCacheTier:
    """The cache tier on Redis, below the memory (and disk) tiers of every process.

    Keys are the core's cache keys (they carry the namespace and the credential
    scope, never a secret); values are sealed (versioned, checksummed, zstd) and
    expire after their TTL less up to 10 % of jitter.
    """

    def __init__(self, config: SharedStateConfig, default_ttl_s: float | None = None) -> None:
        self._core = _core.SharedCache(
            core_url(config),
            namespace=config.namespace,
            op_timeout_s=config.op_timeout_s,
            default_ttl_s=default_ttl_s or DEFAULT_SHARED_TTL_S,
        )
        self.op_timeout_s = config.op_timeout_s

    async def get(self, key: bytes) -> tuple[bytes, float | None] | None:
        """The value of ``key`` and its seconds left, or None (absent, bad, Redis away)."""
        got = await _call(lambda q, f: self._core.get(q, f, key))
        if got is None:
            return None
        value, ttl = got
        return bytes(value), None if ttl is None else float(ttl)

    def set(self, key: bytes, value: bytes, ttl_s: float | None = None) -> bool:
        """Queue a write and return at once; False when dropped (too many in flight)."""
        return bool(self._core.set(key, value, ttl_s))

    async def drain(self, timeout_s: float) -> int:
        """Wait (at most ``timeout_s``) for queued writes; how many are left."""
        return int(await _call(lambda q, f: self._core.drain(q, f, timeout_s)))

    def redis_key(self, key: bytes) -> str:
        """The Redis key of cache key ``key``."""
        return self._core.redis_key(key)

    def stats(self) -> dict[str, int]:
        """Counts: hits, misses, corrupt, foreign, errors, writes, writes_dropped..."""
        return dict(self._core.stats())


class SharedDedupTier:
    """One provider call per request across processes (see docs/scaleout.md)."""

    def __init__(self, config: SharedStateConfig) -> None:
        self._core = _core.SharedDedup(
            core_url(config),
            namespace=config.namespace,
            op_timeout_s=config.op_timeout_s,
            lease_s=config.dedup_lease_s,
        )

    async def join(self, key: bytes, max_wait_s: float) -> tuple[JoinOutcome, Any]:
        """``("lead", SharedLease)``, ``("done", bytes)``, ``("timeout", None)`` or
        ``("unavailable", None)``: lead, take another process's result, or wait for it."""
        outcome, value = await _call(lambda q, f: self._core.join(q, f, key, max_wait_s))
        return outcome, value

    def stats(self) -> dict[str, int]:
        """Counts: leads, takeovers, joins, waits, timeouts, unavailable..."""
        return dict(self._core.stats())
