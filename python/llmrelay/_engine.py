"""The engine behind every LLMService view: the pipeline's stages and shared state.

    validate -> select -> cache -> dedup -> orchestrate -> execute -> process

Each stage is a small method. Middleware (``async def mw(request, call_next)``)
wraps everything after validation, so a user stage sees each call before and
after it runs, cache hits included.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import msgspec

from llmrelay import _core
from llmrelay._cachekey import CacheControl, cache_key, is_cacheable, is_complete
from llmrelay._config import LLMServiceConfig, ProviderConfig
from llmrelay._metrics import ServiceMetrics
from llmrelay._middleware import Middleware, chain
from llmrelay._orchestrator import CallContext, RequestOrchestrator
from llmrelay._pool import ProviderPool
from llmrelay._selection import Candidate, Selector, honouring
from llmrelay._shared import SharedLimiter, shared_limiter, shared_state
from llmrelay._stages import (
    cache_control,
    cancel_task,
    deliver,
    estimate_input_tokens,
    model_facts,
    needs_of,
    send_chat,
    send_embed,
    transport_factory,
)
from llmrelay._streaming import stream_call
from llmrelay._sync import LoopThread
from llmrelay._types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    Usage,
    build_request,
)
from llmrelay.errors import (
    CacheMissError,
    CircuitOpenError,
    ClientThrottledError,
    DeadlineExceededError,
    InvalidRequestError,
    LLMRelayError,
)
from llmrelay.providers import get_provider

__all__ = ["Engine", "Middleware"]

log = logging.getLogger("llmrelay")


_PROMOTED = object()
#: Every live engine, so a forked child can make each one usable (os.register_at_fork).
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for eng in list(_ENGINES):
        eng.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
_T = TypeVar("_T")


def _chat_usage(result: tuple[ChatResponse, float]) -> tuple[int, int]:
    """The real usage of a chat attempt's result, settled with the attempt in its gate."""
    u = result[0].usage
    return u.prompt_tokens, u.completion_tokens


_DEFAULT_OUTPUT_ESTIMATE = 512


@dataclass(slots=True)
class Prepared:
    """A validated call: the request, its candidates and its cache key."""

    req: ChatRequest
    model: str
    priority: int
    cands: list[Candidate]
    key: bytes | None
    cc: CacheControl
    est_in: int
    est_out: int
    #: the cache mode: the call's ``CacheControl.mode``, else ``CacheConfig.mode``
    mode: str = "read_write"


class Engine:
    """Shared state of a service and its views."""

    def __init__(
        self,
        config: LLMServiceConfig,
        *,
        transport: str | Callable[[Any], httpx.AsyncBaseTransport | None] | None,
        middleware: Sequence[Middleware],
        clock: _core.ManualClock | None,
        sleep: Callable[[float], Awaitable[None]] | None,
    ) -> None:
        self.config = config
        self.closed = False
        self.runner = LoopThread()
        self.middleware = tuple(middleware)
        self._clock = clock
        self.pool = ProviderPool(
            config,
            adapter_for=self._adapter_for,
            default_base_url=lambda kind: get_provider(kind).resolve_base_url(),
            transport_factory=transport_factory(transport),
            idle_timeout_s=config.client_idle_timeout_s,
        )
        self.metrics = ServiceMetrics(self._live_metrics)
        self.shared: SharedLimiter | None = shared_limiter(config)
        self.orchestrator = RequestOrchestrator(
            config,
            list(self.pool),
            metrics=self.metrics,
            clock=clock,
            sleep=sleep or asyncio.sleep,
            shared=self.shared.core if self.shared is not None else None,
        )
        self.selector = Selector(
            self.pool,
            config.selection,
            default_model=config.default_model,
            facts=model_facts,
            knows=lambda kind, model: model in get_provider(kind).models,
            is_open=self.orchestrator.is_open,
        )
        cc = config.cache
        self._disk_configured = bool(cc.enabled and cc.disk_path)
        self._told_nondeterministic = False
        self.cache: Any = None
        if cc.enabled:
            self.cache = _core.HybridCache(
                memory_max_entries=cc.memory_max_entries,
                memory_max_bytes=cc.memory_max_bytes,
                ttl_s=cc.ttl_s,
                eviction=cc.eviction,
                disk_path=cc.disk_path,
                disk_max_bytes=cc.disk_max_bytes,
                promotion=cc.promotion,
                promote_after=cc.promote_after,
                write_mode=cc.write_mode,
                flush_every_ms=cc.flush_every_ms,
                clock=clock,
            )
            if cc.disk_path and not self.cache.disk_enabled:
                log.warning(
                    "llmrelay: disk cache at %s disabled (%s); this process uses the memory"
                    " tier only. Give each worker process its own disk_path (e.g. with its"
                    " pid in it); metrics.snapshot().disk_tier reports the state",
                    cc.disk_path,
                    self.cache.disk_error,
                )
        self.dedup: Any = None
        if config.dedup.enabled:
            self.dedup = _core.RequestDeduplicator(window_s=config.dedup.window_s, clock=clock)
        self._dedup_waiters: dict[int, asyncio.Future[Any]] = {}
        self._decoder = msgspec.msgpack.Decoder(ChatResponse)
        self._encoder = msgspec.msgpack.Encoder()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopped_by_close: set[asyncio.Task[Any]] = set()
        self._open_streams: set[object] = set()  # streams not yet ended (aclose drains them)
        self._stop_streams = False  # set when the drain ran out: streams end at their next chunk
        _ENGINES.add(self)

    def after_fork_in_child(self) -> None:
        """Make this engine usable in a forked child (gunicorn ``--preload``, Celery prefork,
        a module-level service): a fresh loop thread, clients, schedulers and dedup map;
        the disk tier, opened by the parent, is off here (the core never touches the
        parent's sled handle), so ``close()`` returns at once."""
        self.runner.after_fork_in_child()
        self.pool.after_fork_in_child()
        self.orchestrator.after_fork_in_child()
        self._in_flight = set()
        self._stopped_by_close = set()
        self._open_streams = set()
        self._dedup_waiters = {}
        if self.dedup is not None:
            self.dedup = _core.RequestDeduplicator(
                window_s=self.config.dedup.window_s, clock=self._clock
            )
        if self.cache is not None and self.config.cache.disk_path and not self.closed:
            log.warning(
                "llmrelay: process %d was forked from the process that opened the disk cache"
                " at %s; this process uses the memory tier only. Give each worker its own"
                " disk_path, or build the LLMService after the fork (e.g. in gunicorn's"
                " post_fork hook).",
                os.getpid(),
                self.config.cache.disk_path,
            )

    # ---- construction helpers --------------------------------------------------------------

    @staticmethod
    def _adapter_for(p: ProviderConfig, base_url: str, api_key: str | None) -> Any:
        reg = get_provider(p.provider_kind)
        return reg.adapter_factory(
            deployment=p.name, base_url=base_url, api_key=api_key, headers=dict(p.headers)
        )

    def _live_metrics(self) -> dict[str, Any]:
        breakers: dict[str, Any] = {}
        concurrency: dict[str, dict[str, float]] = {}
        limiter: dict[str, dict[str, float]] = {}
        for name, rt in self.orchestrator.runtimes.items():
            limiter[name] = rt.gate.limiter_stats()
            breaker, sched = rt.breaker, rt.scheduler
            breakers[name] = {
                "state": breaker.state,
                "failure_rate": breaker.failure_rate,
                "transitions": breaker.transitions(),
            }
            concurrency[name] = {
                "limit": float(sched.limit),
                "in_flight": float(sched.in_flight),
                "queued": float(sched.queued),
            }
        return {
            "breakers": breakers,
            "concurrency": concurrency,
            "cache": dict(self.cache.stats()) if self.cache is not None else {},
            "dedup": dict(self.dedup.stats()) if self.dedup is not None else {},
            "health": self.pool.health(),
            "limiter": limiter,
            "disk_tier": self._disk_state(),
            "shared": shared_state(self.config, self.shared, self.orchestrator.runtimes),
        }

    def _disk_state(self) -> dict[str, Any]:
        path = self.config.cache.disk_path
        if self.cache is None or not path:
            return {}
        enabled = bool(self.cache.disk_enabled)
        return {"path": path, "enabled": enabled, "error": self.cache.disk_error}

    def check_open(self) -> None:
        """Raise if the service is closed."""
        if self.closed:
            raise LLMRelayError("the service is closed")

    @staticmethod
    def check_priority(priority: Any) -> int:
        """A valid priority (0..=9) or InvalidRequestError naming it."""
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
            raise InvalidRequestError(
                f"invalid priority={priority!r}: must be an int in 0..9", field="priority"
            )
        return int(priority)

    # ---- validate, select, cache key -------------------------------------------------------

    def prepare(
        self,
        messages: Any,
        model: str | None,
        priority: Any,
        cache: Any,
        params: dict[str, Any],
        *,
        stream: bool,
    ) -> Prepared:
        """The validate and select stages, and the cache key."""
        self.check_open()
        prio = self.check_priority(priority)
        cc = cache_control(cache)
        req = build_request(messages, model, params)
        name = req.model or self.selector.default_model
        est_in = estimate_input_tokens(req)
        est_out = req.max_tokens or _DEFAULT_OUTPUT_ESTIMATE
        cands = self.selector.candidates(
            name, needs=needs_of(req, stream), est_tokens=est_in + (req.max_tokens or 0)
        )
        cands = honouring(cands, req, stream=stream)
        key = None
        mode = cc.mode or self.config.cache.mode
        if mode == "replay" and cc.refresh:
            raise InvalidRequestError(
                "invalid cache: refresh=True with the service's mode='replay'",
                field="cache.refresh",
            )
        if self.cache is not None:
            if cc.skip:
                self._skipped(cands[0], "requested")
            elif not is_cacheable(req, self.config.cache.cache_nondeterministic, cc.sample):
                self._skipped(cands[0], "nondeterministic")
            else:
                ns = cc.namespace if cc.namespace is not None else self.config.namespace
                key = cache_key(req, name, ns, cands[0].deployment.credential_scope, cc.sample)
        return Prepared(req, name, prio, cands, key, cc, est_in, est_out, mode)

    def _skipped(self, cand: Candidate, reason: str) -> None:
        """Count a request the cache did not look up, and say once why it happens."""
        dep = cand.deployment
        self.metrics.core.incr(dep.kind, cand.model, dep.name, f"cache_skipped.{reason}")
        if reason == "nondeterministic" and not self._told_nondeterministic:
            self._told_nondeterministic = True
            log.info(
                "llmrelay: the cache is on but this request is not cached: only requests with"
                " temperature=0 or a seed are (their answers should repeat). Pass"
                " temperature=0, seed=... or a sample index (cache=CacheControl(sample=i)), or set"
                " CacheConfig(cache_nondeterministic=True);"
                " metrics count such requests as cache_skipped.nondeterministic"
            )

    def _series(self, p: Prepared) -> tuple[str, str, str]:
        c = p.cands[0]
        return c.deployment.kind, c.model, c.deployment.name

    def memory_hit(self, p: Prepared) -> ChatResponse | None:
        """The memory tier's answer, if any (no loop needed: sync callers use it directly)."""
        if p.key is None or p.cc.refresh or p.mode == "write_only":
            return None
        # with a disk tier the lookup goes on there: count its miss once, at the disk
        raw = (self.cache.get_hot if self._disk_configured else self.cache.get_memory)(p.key)
        if raw is None:
            return None
        self.metrics.core.incr(*self._series(p), "cache_hits.memory")
        resp: ChatResponse = self._decoder.decode(raw)
        return resp

    def _disk_hit(self, p: Prepared) -> ChatResponse | None:
        if p.key is None or p.cc.refresh or p.mode == "write_only" or not self._disk_configured:
            return None
        raw = self.cache.get_disk(p.key)
        if raw is None:
            return None
        self.metrics.core.incr(*self._series(p), "cache_hits.disk")
        resp: ChatResponse = self._decoder.decode(raw)
        return resp

    def _count_miss(self, p: Prepared) -> None:
        tiers = [("cache_misses.memory", 1)]
        if self.cache.disk_enabled and not p.cc.refresh:
            tiers.append(("cache_misses.disk", 1))
        self.metrics.core.record(*self._series(p), tiers, [])

    def replay_miss(self, p: Prepared) -> CacheMissError:
        """The error of a ``replay`` call the cache could not answer (nothing was sent)."""
        if self.cache is None:
            why, detail = "disabled", "the service has no cache (CacheConfig.enabled=False)"
        elif p.key is not None:
            why, detail = "miss", "no cached answer for this request"
        elif p.cc.skip or not is_cacheable(
            p.req, self.config.cache.cache_nondeterministic, p.cc.sample
        ):
            why = "not_cacheable"
            detail = "the request is not cached (temperature > 0 with no seed and no sample)"
        else:
            why, detail = "changed", "a middleware changed the request, so it has no cache key"
        return CacheMissError(
            f"cache mode 'replay': {detail} (model {p.model})", model=p.model, reason=why
        )

    def _store(self, p: Prepared, resp: ChatResponse) -> None:
        if p.key is None or p.mode == "read_only" or p.mode == "replay":
            return
        if not is_complete(resp):
            incomplete = p.cc.cache_incomplete
            if not (self.config.cache.cache_incomplete if incomplete is None else incomplete):
                self.metrics.core.incr(*self._series(p), "cache_skipped.incomplete")
                return
        stored = msgspec.structs.replace(resp, cached=True, latency_s=0.0, attempts=0)
        self.cache.set(p.key, self._encoder.encode(stored), p.cc.ttl_s)

    # ---- chat ------------------------------------------------------------------------------

    async def chat(
        self,
        messages: Any,
        model: str | None,
        priority: Any,
        timeout: float | None,
        cache: Any,
        params: dict[str, Any],
    ) -> ChatResponse:
        """The whole pipeline for one non-streamed call."""
        p = self.prepare(messages, model, priority, cache, params, stream=False)
        return await self.chat_prepared(p, timeout, memory_checked=False)

    async def chat_prepared(
        self, p: Prepared, timeout: float | None, *, memory_checked: bool
    ) -> ChatResponse:
        """Everything after validation: middleware around cache, dedup and orchestration."""
        if not self.middleware:
            return await self._cached(p, timeout, memory_checked)

        async def terminal(req: ChatRequest) -> ChatResponse:
            if req is not p.req:
                p.req = req
                p.key = None  # a changed request is not the cached one
            return await self._cached(p, timeout, memory_checked)

        return await chain(self.middleware, terminal)(p.req)

    async def _cached(
        self, p: Prepared, timeout: float | None, memory_checked: bool
    ) -> ChatResponse:
        if p.key is not None and p.mode != "write_only":
            hit = None if memory_checked else self.memory_hit(p)
            if hit is None:
                hit = self._disk_hit(p)
            if hit is not None:
                return hit
            self._count_miss(p)
        if p.mode == "replay":
            raise self.replay_miss(p)
        if p.key is not None and self.dedup is not None:
            return await self._guarded(self._deduped(p, timeout))
        return await self._guarded(self._orchestrated(p, timeout))

    async def _guarded(self, aw: Awaitable[_T]) -> _T:
        """Await ``aw`` as in-flight work that ``aclose`` drains, or stops with a typed error."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            return await aw
        except asyncio.CancelledError:
            # stopped by aclose, not by its caller: the caller gets a typed error, and its
            # task is not left cancelled
            if task is not None and task in self._stopped_by_close and task.cancelling() <= 1:
                task.uncancel()
                raise LLMRelayError("the service was closed while the call was in flight") from None
            raise
        finally:
            if task is not None:
                self._in_flight.discard(task)
                self._stopped_by_close.discard(task)

    async def _deduped(self, p: Prepared, timeout: float | None) -> ChatResponse:
        assert p.key is not None
        hexkey = p.key.hex()
        role, ticket, value = self.dedup.join(hexkey)
        if role == _core.DEDUP_DONE:
            self.metrics.core.incr(*self._series(p), "dedup_window_hits")
            resp: ChatResponse = value
            return resp
        while role == _core.DEDUP_FOLLOWER:
            self.metrics.core.incr(*self._series(p), "dedup_joins")
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._dedup_waiters[ticket] = fut
            try:
                got = await fut
            except asyncio.CancelledError:
                self._dedup_waiters.pop(ticket, None)
                try:
                    self.dedup.leave(hexkey, ticket)
                except InvalidRequestError:
                    # promoted to leader just as we gave up: pass leadership on
                    self._hand_over(hexkey, ticket, None)
                raise
            if got is not _PROMOTED:
                joined: ChatResponse = msgspec.structs.replace(got, attempts=0)
                return joined
            role = _core.DEDUP_LEADER  # the leader gave up; this call leads now
        try:
            resp = await self._orchestrated(p, timeout)
        except BaseException as e:
            transient = isinstance(e, asyncio.CancelledError) or (
                isinstance(e, LLMRelayError) and e.retryable
            )
            self._hand_over(hexkey, ticket, None if transient else e)
            raise
        for t in self.dedup.complete(hexkey, ticket, resp):
            f = self._dedup_waiters.pop(t, None)
            if f is not None:
                deliver(f, resp)
        return resp

    def _hand_over(self, hexkey: str, ticket: int, error: BaseException | None) -> None:
        """A leader is gone. Transient (``error`` None): promote a waiting follower, if any.
        Otherwise every follower fails with the leader's error. Nobody is left waiting."""
        transient = error is None
        new_leader, failed = self.dedup.fail(hexkey, ticket, transient)
        while new_leader is not None:
            fut = self._dedup_waiters.pop(new_leader, None)
            if fut is not None and not fut.done():
                deliver(fut, _PROMOTED)
                break
            # that follower already gave up: promote the next one
            new_leader, more = self.dedup.fail(hexkey, new_leader, True)
            failed = [*failed, *more]
        exc = error if isinstance(error, Exception) else LLMRelayError("request abandoned")
        for t in failed:
            f = self._dedup_waiters.pop(t, None)
            if f is not None:
                deliver(f, None, exc)

    def _deadline(self, timeout: float | None) -> float:
        total = self.config.timeouts.total_s if timeout is None else timeout
        if isinstance(total, bool) or not isinstance(total, int | float) or not total > 0:
            raise InvalidRequestError(f"invalid timeout={timeout!r}: must be > 0", field="timeout")
        return asyncio.get_running_loop().time() + float(total)

    def _record_attempt(
        self, cand: Candidate, err: BaseException | None, latency: float, sent: bool
    ) -> None:
        dep = cand.deployment
        if err is None:
            return  # successes are recorded with their usage in _process
        if not sent and not isinstance(err, CircuitOpenError):
            # refused before anything went out: its own outcome, no latency, no request
            name = "throttled" if isinstance(err, ClientThrottledError) else "queue_timeouts"
            self.metrics.core.incr(dep.kind, cand.model, dep.name, name)
            return
        if isinstance(err, DeadlineExceededError):
            name = "DeadlineExceeded"  # the caller's budget, not the deployment's fault
        elif isinstance(err, LLMRelayError):
            name = type(err).__name__
        else:
            name = "Cancelled"
        self.metrics.core.record(
            dep.kind,
            cand.model,
            dep.name,
            [("requests", 1), (f"failures.{name}", 1)],
            [("latency", latency)],
        )
        if not isinstance(err, DeadlineExceededError | asyncio.CancelledError):
            dep.health.observe(latency, 0, ok=False)

    async def _orchestrated(self, p: Prepared, timeout: float | None) -> ChatResponse:
        self.pool.maybe_sweep()
        ctx = CallContext(p.priority, self._deadline(timeout), p.est_in, p.est_out)
        started = time.perf_counter()
        send = self._sender(p, ctx)
        resp, cand, _ = await self.orchestrator.run(
            self.selector.usable(p.cands) or p.cands,
            ctx,
            send,
            self._record_attempt,
            usage_of=_chat_usage,
        )
        return self._process(p, ctx, cand, resp, started)

    def _sender(self, p: Prepared, ctx: CallContext) -> Callable[[Candidate], Awaitable[Any]]:
        async def send(cand: Candidate) -> tuple[ChatResponse, float]:
            dep = cand.deployment
            remaining = ctx.deadline - asyncio.get_running_loop().time()
            t0 = time.perf_counter()
            if getattr(dep.adapter, "in_process", False):
                client, transport = None, None
            else:
                client, transport = self.pool.route(dep)
            resp = await send_chat(
                client,
                transport,
                dep,
                cand.model,
                p.req,
                remaining,
                self.orchestrator.observe_reply_headers,
            )
            return resp, time.perf_counter() - t0

        return send

    def _process(
        self, p: Prepared, ctx: CallContext, cand: Candidate, result: Any, started: float
    ) -> ChatResponse:
        resp, attempt_latency = result
        dep = cand.deployment
        u: Usage = resp.usage
        counters = [
            ("requests", 1),
            ("successes", 1),
            ("tokens_in", u.prompt_tokens),
            ("tokens_out", u.completion_tokens),
        ]
        if ctx.retries:
            counters.append(("retries", ctx.retries))
        if ctx.fallbacks:
            counters.append(("fallbacks", ctx.fallbacks))
        self.metrics.core.record(
            dep.kind,
            cand.model,
            dep.name,
            counters,
            [("latency", attempt_latency), ("queue_wait", ctx.queue_wait_s)],
        )
        dep.health.observe(attempt_latency, u.completion_tokens, ok=True)
        out: ChatResponse = msgspec.structs.replace(
            resp,
            provider=dep.name,
            latency_s=time.perf_counter() - started,
            attempts=len(ctx.attempts) + 1,
            cached=False,
        )
        self._store(p, out)
        return out

    # ---- streams ---------------------------------------------------------------------------

    def stream(
        self,
        messages: Any,
        model: str | None,
        priority: Any,
        timeout: float | None,
        cache: Any,
        params: dict[str, Any],
    ) -> AsyncIterator[ChatChunk]:
        """The pipeline for a streamed call (see :mod:`llmrelay._streaming`)."""
        return stream_call(self, messages, model, priority, timeout, cache, params)

    # ---- embeddings ------------------------------------------------------------------------

    async def embed(
        self,
        inputs: Any,
        model: str | None,
        priority: Any,
        timeout: float | None,
        params: dict[str, Any],
    ) -> EmbeddingResponse:
        """Embeddings through selection and orchestration (not cached)."""
        self.check_open()
        prio = self.check_priority(priority)
        texts = [inputs] if isinstance(inputs, str) else inputs
        if (
            not isinstance(texts, Sequence)
            or not texts
            or not all(isinstance(t, str) for t in texts)
        ):
            raise InvalidRequestError(
                "invalid inputs: expected a string or a non-empty list of strings", field="inputs"
            )
        name = model or self.selector.default_model
        cands = self.selector.candidates(name)
        est = sum(len(t) for t in texts) // 4 + 1
        ctx = CallContext(prio, self._deadline(timeout), est, 0)

        async def send(cand: Candidate) -> EmbeddingResponse:
            dep = cand.deployment
            remaining = ctx.deadline - asyncio.get_running_loop().time()
            if getattr(dep.adapter, "in_process", False):
                client, transport = None, None
            else:
                client, transport = self.pool.route(dep)
            try:
                r: EmbeddingResponse = await send_embed(
                    client,
                    transport,
                    dep,
                    cand.model,
                    list(texts),
                    dict(params),
                    remaining,
                    self.orchestrator.observe_reply_headers,
                )
            except NotImplementedError as e:
                raise InvalidRequestError(
                    f"invalid model={cand.label!r}: {e}", field="model"
                ) from None
            return r

        resp, cand, _ = await self.orchestrator.run(
            self.selector.usable(cands) or cands, ctx, send, self._record_attempt
        )
        dep = cand.deployment
        self.metrics.core.record(
            dep.kind,
            cand.model,
            dep.name,
            [("requests", 1), ("successes", 1), ("tokens_in", resp.usage.prompt_tokens)],
            [],
        )
        return resp

    # ---- lifecycle -------------------------------------------------------------------------

    async def aclose(self, drain_s: float) -> None:
        """Drain, cancel what is left, close clients, the cache and the loop thread."""
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        if await self._drained(current, drain_s):
            return await self._close_resources()
        self._stop_streams = True
        for t in list(self._in_flight):
            if t is not current and not t.done():
                self._stopped_by_close.add(t)
                cancel_task(t)
        await self._drained(current, 1.0)
        await self._close_resources()

    async def _drained(self, current: asyncio.Task[Any] | None, limit_s: float) -> bool:
        """Wait (bounded) until no call but the current one is in flight; whether none is."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit_s
        while self._open_streams or any(
            t is not current and not t.done() for t in list(self._in_flight)
        ):
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.005)
        return True

    async def _close_resources(self) -> None:
        await self.pool.aclose_loop(asyncio.get_running_loop())
        if self.runner.started:
            loop = self.runner.loop
            if loop is not asyncio.get_running_loop():
                await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(self.pool.aclose_loop(loop), loop)
                )
        if self.cache is not None:
            await asyncio.to_thread(self.cache.close)
        if not self.runner.in_loop_thread():
            self.runner.stop()

    def close_sync(self, drain_s: float) -> None:
        """Close from plain code (runs the async close on the loop thread, then stops it)."""
        if self.closed:
            return
        self.runner.run(self.aclose(drain_s))
        self.runner.stop()
