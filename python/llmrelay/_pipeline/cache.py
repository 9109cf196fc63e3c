"""The cache stage: the memory, disk and shared tiers looked up in that order (a hit in
a lower tier fills the memory tier), misses counted once per tier, ``replay`` misses
typed, and a processed reply stored (never an error, an empty reply or one cut by
``length`` unless asked; see :func:`llmrelay._cachekey.is_complete`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from llmrelay._cachekey import is_cacheable, is_complete
from llmrelay._pipeline.call import Prepared
from llmrelay._pricing import zero_cost
from llmrelay._types import ChatChunk, ChatResponse
from llmrelay.errors import (
    CacheMissError,
)

if TYPE_CHECKING:
    from llmrelay._engine import Engine

log = logging.getLogger("llmrelay")


def replay(resp: ChatResponse) -> list[ChatChunk]:
    """A cached response as a stream: its reasoning (and blocks), text, whole tool calls,
    then finish and usage."""
    from llmrelay._types import ToolCallDelta

    out = []
    blocks = resp.message.reasoning_blocks
    if resp.reasoning or blocks:
        out.append(
            ChatChunk(
                reasoning=resp.reasoning,
                reasoning_blocks=blocks,
                model=resp.model,
                provider=resp.provider,
            )
        )
    if resp.text:
        out.append(ChatChunk(text=resp.text, model=resp.model, provider=resp.provider))
    if resp.tool_calls:
        deltas = [
            ToolCallDelta(
                index=i,
                id=tc.id,
                name=tc.name,
                arguments_delta=msgspec.json.encode(tc.arguments).decode(),
            )
            for i, tc in enumerate(resp.tool_calls)
        ]
        out.append(ChatChunk(tool_calls=deltas, model=resp.model, provider=resp.provider))
    out.append(
        ChatChunk(
            finish_reason=resp.finish_reason,
            usage=resp.usage,
            model=resp.model,
            provider=resp.provider,
        )
    )
    return out


def series(p: Prepared) -> tuple[str, str, str]:
    c = p.cands[0]
    return c.deployment.kind, c.model, c.deployment.name


def memory_hit(eng: Engine, p: Prepared) -> ChatResponse | None:
    """The memory tier's answer, if any (no loop needed: sync callers use it directly)."""
    cache = eng.cache
    if cache is None or p.key is None or p.cc.refresh or p.mode == "write_only":
        return None
    # with a disk tier the lookup goes on there: count its miss once, at the disk
    hot = eng.disk_configured
    if p.structured is None:
        # the common case: the core counts the hit with the lookup (one crossing)
        c = p.cands[0]
        dep = c.deployment
        raw = cache.get_counted(
            p.key, hot, eng.metrics.core, dep.kind, c.model, dep.name, "cache_hits.memory"
        )
        if raw is None:
            return None
        resp: ChatResponse | None = decoded_hit(eng, p, raw)
    else:
        # a structured call's hit counts only if it validates into the call's model
        raw = (cache.get_hot if hot else cache.get_memory)(p.key)
        if raw is None:
            return None
        resp = decoded_hit(eng, p, raw)
        if resp is not None:
            eng.metrics.core.incr(*series(p), "cache_hits.memory")
    if resp is not None and p.trace is not None:
        p.trace.cache_hit("memory", resp)
    return resp


def disk_hit(eng: Engine, p: Prepared) -> ChatResponse | None:
    cache = eng.cache
    if cache is None or p.key is None or p.cc.refresh or p.mode == "write_only":
        return None
    if not eng.disk_configured:
        return None
    raw = cache.get_disk(p.key)
    if raw is None:
        return None
    resp: ChatResponse | None = decoded_hit(eng, p, raw)
    if resp is not None:
        eng.metrics.core.incr(*series(p), "cache_hits.disk")
        if p.trace is not None:
            p.trace.cache_hit("disk", resp)
    return resp


def decoded_hit(eng: Engine, p: Prepared, raw: bytes) -> ChatResponse | None:
    """A cached answer, with ``parsed`` for a structured call (an answer that does
    not validate into this call's model is no answer: a miss)."""
    resp: ChatResponse = eng.decoder.decode(raw)
    if p.structured is None:
        return resp
    value, error = p.structured.try_parse(resp.text)
    return None if error is not None else msgspec.structs.replace(resp, parsed=value)


async def shared_hit(eng: Engine, p: Prepared) -> ChatResponse | None:
    """The shared tier's answer (below memory and disk), filling the memory tier.
    Redis away, slow, or a bad entry: a miss, within ``op_timeout_s``."""
    tier, cache = eng.shared_cache, eng.cache
    if tier is None or cache is None or p.key is None or p.cc.refresh:
        return None
    if p.mode == "write_only":
        return None
    got = await tier.get(p.key)
    if got is None:
        return None
    raw, ttl_s = got
    try:
        resp = decoded_hit(eng, p, raw)
    except msgspec.DecodeError:
        # sealed by us for this key, yet not a reply this version reads: a miss
        eng.metrics.core.incr(*series(p), "cache_undecodable.shared")
        return None
    if resp is None:  # does not validate into this structured call's model
        return None
    eng.metrics.core.incr(*series(p), "cache_hits.shared")
    if p.trace is not None:
        p.trace.cache_hit("shared", resp)
    cache.set(p.key, raw, ttl_s)
    return resp


def count_miss(eng: Engine, p: Prepared) -> None:
    tiers = [("cache_misses.memory", 1)]
    if eng.cache is not None and eng.cache.disk_enabled and not p.cc.refresh:
        tiers.append(("cache_misses.disk", 1))
    if eng.shared_cache is not None and not p.cc.refresh:
        tiers.append(("cache_misses.shared", 1))
    eng.metrics.core.record(*series(p), tiers, [])


def replay_miss(eng: Engine, p: Prepared) -> CacheMissError:
    """The error of a ``replay`` call the cache could not answer (nothing was sent)."""
    if eng.cache is None:
        why, detail = "disabled", "the service has no cache (CacheConfig.enabled=False)"
    elif p.key is not None:
        why, detail = "miss", "no cached answer for this request"
    elif p.cc.skip or not is_cacheable(p.req, eng.config.cache.cache_nondeterministic, p.cc.sample):
        why = "not_cacheable"
        detail = "the request is not cached (temperature > 0 with no seed and no sample)"
    else:
        why, detail = "changed", "a middleware changed the request, so it has no cache key"
    return CacheMissError(
        f"cache mode 'replay': {detail} (model {p.model})", model=p.model, reason=why
    )


def store(eng: Engine, p: Prepared, resp: ChatResponse, *, shared: bool = True) -> None:
    cache = eng.cache
    if cache is None or p.key is None or p.mode == "read_only" or p.mode == "replay":
        return
    if p.structured is not None and resp.parsed is None:
        return  # a reply that does not validate is not kept (its repair may be)
    if not is_complete(resp):
        incomplete = p.cc.cache_incomplete
        if not (eng.config.cache.cache_incomplete if incomplete is None else incomplete):
            eng.metrics.core.incr(*series(p), "cache_skipped.incomplete")
            return
    stored = msgspec.structs.replace(
        resp,
        cached=True,
        latency_s=0.0,
        attempts=0,
        parsed=None,
        cost=zero_cost(resp.cost),
    )  # ``parsed`` is rebuilt from the text on a hit, into the caller's own model
    raw = eng.encoder.encode(stored)
    cache.set(p.key, raw, p.cc.ttl_s)
    # queued on the core's runtime: the reply does not wait for Redis
    if shared and eng.shared_cache is not None and not eng.shared_cache.set(p.key, raw, p.cc.ttl_s):
        eng.metrics.core.incr(*series(p), "cache_writes_dropped.shared")
    if p.trace is not None:
        p.trace.cache_stored(p.cc.ttl_s)


async def lookup(eng: Engine, p: Prepared, memory_checked: bool) -> ChatResponse | None:
    """The tiers in order (memory unless ``memory_checked``, disk, shared): the first hit,
    or None on a miss (counted once). A ``replay`` call's miss is its CacheMissError."""
    if p.key is not None and p.mode != "write_only":
        hit = None if memory_checked else memory_hit(eng, p)
        if hit is None:
            hit = disk_hit(eng, p)
        if hit is None:
            hit = await shared_hit(eng, p)
        if hit is not None:
            return hit
        count_miss(eng, p)
    if p.mode == "replay":
        raise replay_miss(eng, p)
    return None
