"""The streamed call, a second composition of the same stages: validate, the cache
lookup (a hit replayed as chunks), orchestrate with a head-of-stream attempt that holds
its slot until the stream ends, a per-chunk deadline, and the finished stream processed
and stored like a reply.

A streamed call never joins an in-flight call (see docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay._middleware import chain
from llmrelay._orchestrator import CallContext
from llmrelay._pipeline import cache, orchestrate, process
from llmrelay._selection import Candidate
from llmrelay._structured_call import structured_stream
from llmrelay._types import ChatChunk, ChatRequest, ChatResponse
from llmrelay.errors import DeadlineExceededError, LLMRelayError, ProviderTimeoutError
from llmrelay.providers import ProviderAdapter, accumulate_chunks

if TYPE_CHECKING:
    from llmrelay._budget import Budget, Reservation
    from llmrelay._engine import Engine
    from llmrelay._pipeline.call import Prepared

__all__ = ["stream_call"]

#: How close to the deadline a timed-out read counts as cut by the deadline.
_DEADLINE_EPS_S = 0.005


async def stream_call(
    eng: Engine,
    messages: Any,
    model: str | None,
    priority: Any,
    timeout: float | None,
    cache: Any,
    params: dict[str, Any],
    budgets: tuple[Budget, ...] = (),
) -> AsyncIterator[ChatChunk]:
    """The pipeline for a streamed call (cache replay, no in-flight joining)."""
    p = eng.prepare(messages, model, priority, cache, params, stream=True, budgets=budgets)
    inner = _with_middleware(eng, p, timeout) if eng.middleware else _pipeline(eng, p, timeout, [])
    if p.structured is not None:  # parsed on the final chunk (see llmrelay._structured_call)
        inner = structured_stream(inner, p.structured, p.req)
    if p.trace is not None:
        inner = p.trace.wrap_stream(inner)
    async for chunk in inner:
        yield chunk


async def _with_middleware(
    eng: Engine, p: Prepared, timeout: float | None
) -> AsyncIterator[ChatChunk]:
    """A stream inside the middleware chain.

    Each middleware gets the request and ``call_next`` as for a plain call. The
    stream starts when the innermost ``call_next`` is called (with the request it was
    given, perhaps changed); that ``call_next`` returns the finished stream as one
    ``ChatResponse`` (or raises its error) once the caller has read it to the end.
    A middleware that returns a response without calling ``call_next`` answers the
    stream itself (replayed as chunks); one that raises fails it. What a middleware
    returns after ``call_next`` cannot change chunks already delivered: it is
    ignored, but an error it raises reaches the caller at the end of the stream.
    """
    loop = asyncio.get_running_loop()
    asked: asyncio.Future[ChatRequest] = loop.create_future()
    ended: asyncio.Future[ChatResponse] = loop.create_future()

    async def terminal(req: ChatRequest) -> ChatResponse:
        if not asked.done():
            asked.set_result(req)
        return await asyncio.shield(ended)

    mw = asyncio.ensure_future(chain(eng.middleware, terminal)(p.req))
    try:
        await asyncio.wait((asked, mw), return_when=asyncio.FIRST_COMPLETED)
        if not asked.done():  # answered (or failed) without calling call_next
            for chunk in cache.replay(mw.result()):
                yield chunk
            return
        req = asked.result()
        if req is not p.req:
            p.req = req
            p.key = None  # a changed request is not the cached one
        final: list[ChatResponse] = []
        yielded = False
        try:
            async for chunk in _pipeline(eng, p, timeout, final):
                yielded = True
                yield chunk
        except Exception as e:
            ended.set_exception(e)
            await asyncio.wait((mw,))  # the middleware's own handling of the error
            if mw.exception() is not None:
                raise mw.exception() from None  # type: ignore[misc]
            if yielded:
                raise  # chunks already delivered: its answer cannot replace them
            for chunk in cache.replay(mw.result()):  # recovered before anything was delivered
                yield chunk
            return
        ended.set_result(final[0])
        await mw
    finally:
        if not ended.done():
            ended.cancel()  # abandoned or cancelled: the middleware sees CancelledError
        if not mw.done():
            mw.cancel()
            await asyncio.wait((mw,))
        if mw.done() and not mw.cancelled():
            mw.exception()  # retrieved: whatever it raised was raised above or superseded
        if not ended.cancelled():
            ended.exception()


async def _pipeline(
    eng: Engine, p: Prepared, timeout: float | None, final: list[ChatResponse]
) -> AsyncIterator[ChatChunk]:
    """Cache replay, or the orchestrated stream; the whole response lands in ``final``."""
    hit = await cache.lookup(eng, p, memory_checked=False)
    if hit is not None:
        for chunk in cache.replay(hit):
            yield chunk
        final.append(hit)
        return
    ctx = CallContext(p.priority, orchestrate.deadline(eng, timeout), p.est_in, p.est_out)
    started = time.perf_counter()
    idle = eng.config.timeouts.stream_idle_s
    hook = eng.attempt_hook if p.trace is None else p.trace.hooked(ctx, eng.attempt_hook)
    # the budget reservation of the attempt being opened, held until the stream ends
    holds: list[Reservation] = []
    # when the attempt being opened started: a stream's attempt ends with the stream
    opened_at = [started]

    def open_hook(cand: Candidate, err: BaseException | None, latency: float, sent: bool) -> None:
        """An attempt that failed to open is reported now; one that opened is reported
        when its stream ends, with how it ended (a stream cut after its first chunk is
        a failed attempt, not a success)."""
        if err is not None:
            hook(cand, err, latency, sent)

    async def open_stream(cand: Candidate) -> tuple[list[ChatChunk], Any]:
        opened_at[0] = time.perf_counter()
        hold = orchestrate.reserve_budgets(eng, p, cand)
        try:
            opened = await _open(cand)
        except BaseException:
            if hold is not None:
                hold.refund()
            raise
        if hold is not None:
            holds.append(hold)
        return opened

    async def _open(cand: Candidate) -> tuple[list[ChatChunk], Any]:
        """Open the stream and read it up to its first content (within ``first_token_s``):
        until then nothing has reached the caller, so a failure or a stall here is an
        attempt that is retried or falls back like a plain call's."""
        dep = cand.deployment
        in_proc = dep.adapter.in_process
        loop = asyncio.get_running_loop()
        remaining = ctx.deadline - loop.time()
        first_token_s = getattr(dep.timeouts, "first_token_s", None) or remaining
        adapter = dep.adapter
        stream_idle_s = getattr(dep.timeouts, "stream_idle_s", idle)
        if in_proc:
            agen = adapter.stream(None, p.req, cand.model)
        elif type(adapter).stream is ProviderAdapter.stream:  # bytes to the transport
            client, transport = eng.pool.route(dep)
            agen = adapter.stream(
                client,
                p.req,
                cand.model,
                timeout=dep.httpx_timeout(remaining),
                stream_idle_s=stream_idle_s,
                transport=transport,
                on_headers=lambda h: eng.orchestrator.observe_reply_headers(dep, adapter, h),
            )
        else:  # a plug-in's own stream over an httpx client
            agen = adapter.stream(
                eng.pool.client(dep),
                p.req,
                cand.model,
                timeout=dep.httpx_timeout(remaining),
                stream_idle_s=stream_idle_s,
                on_response=lambda r: eng.orchestrator.observe_reply_headers(
                    dep, adapter, r.headers
                ),
            )
        head: list[ChatChunk] = []
        try:
            async with asyncio.timeout(first_token_s):
                while not head or not _has_content(head[-1]):
                    head.append(await agen.__anext__())
        except StopAsyncIteration:
            return head, agen
        except TimeoutError as e:
            await agen.aclose()
            cut = loop.time() >= ctx.deadline - _DEADLINE_EPS_S
            if isinstance(e, LLMRelayError) and not (
                cut and remaining < dep.timeouts.read_s  # the head's read timer was ours
            ):
                raise
            if cut:
                raise DeadlineExceededError(
                    "total timeout exceeded waiting for the stream",
                    provider=dep.name,
                    model=cand.model,
                ) from None
            raise ProviderTimeoutError(
                f"no first token within {first_token_s}s",
                provider=dep.name,
                model=cand.model,
            ) from None
        except BaseException:
            await agen.aclose()
            raise
        return head, agen

    (head, agen), cand, lease = await eng.guarded(
        eng.orchestrator.run(
            eng.selector.usable(p.cands) or p.cands,
            ctx,
            open_stream,
            open_hook,
            hold=True,
        )
    )
    assert lease is not None
    token = object()
    eng.open_streams.add(token)
    chunks: list[ChatChunk] = []
    err: BaseException | None = None
    opened = time.perf_counter()
    ttft = opened - started
    # the deployment's time: the open, plus every wait for its data -- not the time the
    # consumer holds each chunk (a slow consumer must not look like a slow provider)
    provider_s = lease.held_s()
    try:
        for chunk in head:
            chunks.append(chunk)
            yield chunk
        while True:
            if eng.stop_streams:
                raise LLMRelayError("the service was closed while the stream was in flight")
            asked = time.perf_counter()
            try:
                async with asyncio.timeout_at(ctx.deadline):
                    chunk = await eng.guarded(agen.__anext__())
            except StopAsyncIteration:
                break
            except TimeoutError as e:
                if isinstance(e, LLMRelayError):
                    raise
                raise DeadlineExceededError(
                    "total timeout exceeded mid-stream",
                    provider=cand.deployment.name,
                    model=cand.model,
                ) from None
            finally:
                provider_s += time.perf_counter() - asked
            chunks.append(chunk)
            yield chunk
    except BaseException as e:
        err = e
        raise
    finally:
        eng.open_streams.discard(token)
        await agen.aclose()
        lease.finish(err, provider_s)
        hook(cand, err, time.perf_counter() - opened_at[0], True)
        if err is None:
            done = _finish_stream(eng, p, ctx, cand, chunks, started, ttft)
            for hold in holds:
                hold.settle(done.cost.total_usd if done.cost is not None else None)
            final.append(done)
        else:
            for hold in holds:  # cut short: what was generated was paid for, at most this
                if chunks:
                    hold.settle(None)
                else:
                    hold.refund()


def _has_content(chunk: ChatChunk) -> bool:
    """Whether a chunk carries something of the answer (not just a role or a header)."""
    return bool(
        chunk.text or chunk.tool_calls or chunk.finish_reason or chunk.usage or chunk.reasoning
    )


def _finish_stream(
    eng: Engine,
    p: Prepared,
    ctx: CallContext,
    cand: Candidate,
    chunks: list[ChatChunk],
    started: float,
    ttft: float,
) -> ChatResponse:
    resp = accumulate_chunks(chunks)
    resp = msgspec.structs.replace(resp, model=resp.model or cand.model)
    out = process.process(eng, p, ctx, cand, (resp, time.perf_counter() - started), started)
    dep = cand.deployment
    eng.metrics.core.observe(dep.kind, cand.model, dep.name, "ttft", ttft)
    return out
