"""The streamed call: cache replay, orchestration that holds its slot until the
stream ends, per-chunk deadline, and the finished stream processed like a reply.

A streamed call never joins an in-flight call (see docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay._orchestrator import CallContext
from llmrelay._selection import Candidate
from llmrelay._stages import replay
from llmrelay._types import ChatChunk
from llmrelay.errors import LLMRelayError, ProviderTimeoutError
from llmrelay.providers import accumulate_chunks

if TYPE_CHECKING:
    from llmrelay._engine import Engine, Prepared

__all__ = ["stream_call"]


async def stream_call(
    eng: Engine,
    messages: Any,
    model: str | None,
    priority: Any,
    timeout: float | None,
    cache: Any,
    params: dict[str, Any],
) -> AsyncIterator[ChatChunk]:
    """The pipeline for a streamed call (cache replay, no in-flight joining)."""
    p = eng.prepare(messages, model, priority, cache, params, stream=True)
    if p.key is not None:
        hit = eng.memory_hit(p) or eng._disk_hit(p)
        if hit is not None:
            for chunk in replay(hit):
                yield chunk
            return
        eng._count_miss(p)
    ctx = CallContext(p.priority, eng._deadline(timeout), p.est_in, p.est_out)
    started = time.perf_counter()
    idle = eng.config.timeouts.stream_idle_s

    async def open_stream(cand: Candidate) -> tuple[ChatChunk | None, Any]:
        dep = cand.deployment
        agen = dep.adapter.stream(
            eng.pool.client(dep),
            p.req,
            cand.model,
            timeout=dep.httpx_timeout(ctx.deadline - asyncio.get_running_loop().time()),
            stream_idle_s=getattr(dep.timeouts, "stream_idle_s", idle),
        )
        try:
            first = await agen.__anext__()
        except StopAsyncIteration:
            return None, agen
        except BaseException:
            await agen.aclose()
            raise
        return first, agen

    (first, agen), cand, lease = await eng._guarded(
        eng.orchestrator.run(
            eng.selector.usable(p.cands) or p.cands,
            ctx,
            open_stream,
            eng._record_attempt,
            hold=True,
        )
    )
    assert lease is not None
    token = object()
    eng._open_streams.add(token)
    chunks: list[ChatChunk] = []
    err: BaseException | None = None
    ttft = time.perf_counter() - started
    try:
        if first is not None:
            chunks.append(first)
            yield first
        while True:
            if eng._stop_streams:
                raise LLMRelayError("the service was closed while the stream was in flight")
            try:
                async with asyncio.timeout_at(ctx.deadline):
                    chunk = await eng._guarded(agen.__anext__())
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise ProviderTimeoutError(
                    "total timeout exceeded mid-stream",
                    provider=cand.deployment.name,
                    model=cand.model,
                ) from None
            chunks.append(chunk)
            yield chunk
    except BaseException as e:
        err = e
        raise
    finally:
        eng._open_streams.discard(token)
        await agen.aclose()
        lease.finish(err)
        if err is None:
            _finish_stream(eng, p, ctx, cand, chunks, started, ttft)
        else:
            eng._record_attempt(cand, err, time.perf_counter() - started)


def _finish_stream(
    eng: Engine,
    p: Prepared,
    ctx: CallContext,
    cand: Candidate,
    chunks: list[ChatChunk],
    started: float,
    ttft: float,
) -> None:
    resp = accumulate_chunks(chunks)
    resp = msgspec.structs.replace(resp, model=resp.model or cand.model)
    out = eng._process(p, ctx, cand, (resp, time.perf_counter() - started), started)
    dep = cand.deployment
    eng.metrics.core.observe(dep.kind, cand.model, dep.name, "ttft", ttft)
    _ = out
