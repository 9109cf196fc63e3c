"""The dedup stage: identical calls in flight share one provider call.

In a process the core holds the followers (``_core.RequestDeduplicator``): a
follower's future is parked by ``join`` and woken by the leader's ``complete`` /
``fail`` / ``cancel``; the core decides promotions. Across processes the local
leader takes a lease on Redis (:mod:`llmrelay._shared_tiers`), so one process of the
cluster calls the provider and the others take its published result.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import msgspec

from llmrelay import _core
from llmrelay._pipeline import orchestrate
from llmrelay._pipeline.cache import series, store
from llmrelay._pipeline.call import Prepared
from llmrelay._pipeline.orchestrate import orchestrated
from llmrelay._transport import _completions
from llmrelay._types import ChatResponse
from llmrelay.errors import (
    DeadlineExceededError,
    LLMRelayError,
)

if TYPE_CHECKING:
    from llmrelay._engine import Engine

log = logging.getLogger("llmrelay")


async def deduped(
    eng: Engine, dedup: _core.RequestDeduplicator, p: Prepared, timeout: float | None
) -> ChatResponse:
    """The dedup stage. A follower's future is parked in the core by its ``join``; the
    leader's ``complete`` / ``fail`` / ``cancel`` settles it on this loop: with
    ``(DEDUP_DONE, response)``, the leader's error, or ``(DEDUP_LEADER, None)`` when
    the core promoted it to run the request itself."""
    assert p.key is not None
    hexkey = p.key.hex()
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[tuple[int, object]] = loop.create_future()
    role, ticket, value = dedup.join(hexkey, fut, _completions(loop))
    if role == _core.DEDUP_DONE:
        eng.metrics.core.incr(*series(p), "dedup_window_hits")
        if p.trace is not None:
            p.trace.dedup("window")
        return cast(ChatResponse, value)  # the core hands back what complete stored
    if role == _core.DEDUP_FOLLOWER:
        eng.metrics.core.incr(*series(p), "dedup_joins")
        if p.trace is not None:
            p.trace.dedup("follower")
        try:
            role, value = await fut
        except asyncio.CancelledError:
            # gone before the leader's outcome, or just after a promotion: the core
            # forgets it, or passes the lead on
            dedup.cancel(hexkey, ticket)
            raise
        if role == _core.DEDUP_DONE:
            return msgspec.structs.replace(cast(ChatResponse, value), attempts=0)
        # promoted: the leader gave up; this call leads now
    try:
        resp = await led(eng, p, timeout)
    except asyncio.CancelledError:
        dedup.cancel(hexkey, ticket)
        raise
    except BaseException as e:
        if isinstance(e, LLMRelayError) and e.retryable:
            dedup.fail(hexkey, ticket, True)
        else:
            exc = e if isinstance(e, Exception) else LLMRelayError("request abandoned")
            dedup.fail(hexkey, ticket, False, exc)
        raise
    dedup.complete(hexkey, ticket, resp)
    return resp


async def led(eng: Engine, p: Prepared, timeout: float | None) -> ChatResponse:
    """The local dedup leader's call: with cross-process dedup, one process of the
    cluster calls the provider and the others take its result (see docs/scaleout.md).
    Redis away: this process calls alone. A dead leader elsewhere is taken over when
    its lease runs out; the wait is bounded by this call's deadline."""
    tier = eng.shared_dedup
    if tier is None or p.key is None:
        return await orchestrated(eng, p, timeout)
    key = p.key
    loop = asyncio.get_running_loop()
    deadline = orchestrate.deadline(eng, timeout)
    outcome, value = await tier.join(key, max(0.0, deadline - loop.time()))
    lease = value if outcome == "lead" else None
    if outcome == "done":
        joined = joined_elsewhere(eng, p, value)
        if joined is not None:
            return joined
    left = deadline - loop.time()
    if outcome == "timeout" or left <= 0:
        raise DeadlineExceededError(
            "total timeout exceeded while another process made the same call",
            model=p.model,
        )
    try:
        resp = await orchestrated(eng, p, left)
    except BaseException:
        if lease is not None:
            lease.abandon()
        raise
    if lease is not None:
        lease.complete(key, eng.encoder.encode(resp))
    return resp


def joined_elsewhere(eng: Engine, p: Prepared, raw: bytes) -> ChatResponse | None:
    """Another process's result for this call (None if this version cannot read it)."""
    try:
        got: ChatResponse = eng.decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    eng.metrics.core.incr(*series(p), "dedup_shared_joins")
    resp: ChatResponse = msgspec.structs.replace(got, attempts=0)
    store(eng, p, resp, shared=False)  # the leader's process wrote the shared tier
    return resp
