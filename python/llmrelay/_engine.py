"""The engine behind every LLMService view: the state its calls share, and the
compositions of the pipeline's stages (one module each, in :mod:`llmrelay._pipeline`)::

    validate -> select -> cache -> dedup -> orchestrate -> execute -> process

:meth:`Engine.chat` runs them in that order, :meth:`Engine.stream` composes the same
stages for a stream (:mod:`llmrelay._pipeline.stream`), :meth:`Engine.embed` runs
validate, orchestrate and execute. Middleware (``async def mw(request, call_next)``)
wraps everything after validation, so a user stage sees each call before and after
it runs, cache hits included.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from llmrelay import _core
from llmrelay._budget import Budget
from llmrelay._config import LLMServiceConfig, ProviderConfig
from llmrelay._metrics import ServiceMetrics
from llmrelay._middleware import Middleware, chain
from llmrelay._orchestrator import AttemptHook, CallContext, RequestOrchestrator
from llmrelay._pipeline import cache as cache_stage
from llmrelay._pipeline import validate
from llmrelay._pipeline.call import Prepared
from llmrelay._pipeline.dedup import deduped
from llmrelay._pipeline.execute import send_embed, transport_factory
from llmrelay._pipeline.orchestrate import deadline, orchestrated, record_attempt
from llmrelay._pipeline.stream import stream_call
from llmrelay._pool import ProviderPool
from llmrelay._pricing import PriceBook
from llmrelay._selection import Candidate, Selector, model_facts
from llmrelay._shared import SharedLimiter, shared_limiter, shared_state
from llmrelay._shared_tiers import SharedCacheTier, SharedDedupTier
from llmrelay._structured_call import structured_chat
from llmrelay._sync import LoopThread
from llmrelay._telemetry import Emitter
from llmrelay._tokens import texts_tokens
from llmrelay._types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
)
from llmrelay.errors import (
    ConfigError,
    InvalidRequestError,
    LLMRelayError,
)
from llmrelay.providers import ProviderAdapter, get_provider

__all__ = ["Engine", "Middleware"]

log = logging.getLogger("llmrelay")


#: Every live engine, so a forked child can make each one usable (os.register_at_fork).
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for eng in list(_ENGINES):
        eng.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
_T = TypeVar("_T")


def cancel_task(task: asyncio.Task[Any]) -> None:
    """Cancel a task of any loop (a sync call's task lives on the loop thread)."""
    loop = task.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        task.cancel()
    else:
        loop.call_soon_threadsafe(task.cancel)


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
            default_api_key_env=lambda kind: get_provider(kind).api_key_env,
            transport_factory=transport_factory(transport),
            idle_timeout_s=config.client_idle_timeout_s,
        )
        self.metrics = ServiceMetrics(self._live_metrics)
        self.prices = PriceBook(config.pricing)
        now = clock.now if clock is not None else time.monotonic
        self.budget_clock: Callable[[], float] = now
        self.budgets = {
            p.name: Budget(f"deployment:{p.name}", p.budget, now)
            for p in config.providers
            if p.budget is not None
        }
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
            aliases=config.aliases,
        )
        cc = config.cache
        self.disk_configured = bool(cc.enabled and cc.disk_path)
        self.told_nondeterministic = False
        self.cache: _core.HybridCache | None = None
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
        sh = config.shared
        self.shared_cache: SharedCacheTier | None = None
        if sh is not None and sh.cache and cc.enabled:
            self.shared_cache = SharedCacheTier(sh, cc.ttl_s)
        self.shared_dedup: SharedDedupTier | None = None
        if sh is not None and sh.dedup and config.dedup.enabled:
            self.shared_dedup = SharedDedupTier(sh)
        if self.cache is not None:
            if cc.disk_path and not self.cache.disk_enabled and self.shared_cache is not None:
                log.warning(
                    "llmrelay: disk cache at %s disabled (%s); this process serves from its"
                    " memory tier and the shared tier on Redis, so replies cached by the"
                    " process that holds the disk are still hits here;"
                    " metrics.snapshot().cache['disk_off_shared_serves'] is 1",
                    cc.disk_path,
                    self.cache.disk_error,
                )
            elif cc.disk_path and not self.cache.disk_enabled:
                log.warning(
                    "llmrelay: disk cache at %s disabled (%s); this process uses the memory"
                    " tier only. Give each worker process its own disk_path (e.g. with its"
                    " pid in it); metrics.snapshot().disk_tier reports the state",
                    cc.disk_path,
                    self.cache.disk_error,
                )
        self.dedup: _core.RequestDeduplicator | None = None
        if config.dedup.enabled:
            self.dedup = _core.RequestDeduplicator(window_s=config.dedup.window_s, clock=clock)
        self.decoder = msgspec.msgpack.Decoder(ChatResponse)
        self.encoder = msgspec.msgpack.Encoder()
        #: the orchestrate stage's hook for every attempt (bound once, not per call)
        self.attempt_hook: AttemptHook = functools.partial(record_attempt, self)
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopped_by_close: set[asyncio.Task[Any]] = set()
        self.open_streams: set[object] = set()  # streams not yet ended (aclose drains them)
        self.stop_streams = False  # set when the drain ran out: streams end at their next chunk
        self.events = Emitter(self._listener_failed, log_content=config.telemetry.log_content)
        self.events.watch(self.orchestrator.runtimes)
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
        self.open_streams = set()
        if self.dedup is not None:
            self.dedup = _core.RequestDeduplicator(
                window_s=self.config.dedup.window_s, clock=self._clock
            )
        if self.cache is not None and self.config.cache.disk_path and not self.closed:
            log.warning(
                "llmrelay: process %d was forked from the process that opened the disk cache"
                " at %s; this process uses the memory tier%s only. Give each worker its own"
                " disk_path, or build the LLMService after the fork (e.g. in gunicorn's"
                " post_fork hook).",
                os.getpid(),
                self.config.cache.disk_path,
                "" if self.shared_cache is None else " and the shared tier on Redis",
            )

    # ---- construction helpers --------------------------------------------------------------

    @staticmethod
    def _adapter_for(p: ProviderConfig, base_url: str, api_key: str | None) -> ProviderAdapter:
        reg = get_provider(p.provider_kind)
        adapter = reg.adapter_factory(
            deployment=p.name, base_url=base_url, api_key=api_key, headers=dict(p.headers)
        )
        if not isinstance(adapter, ProviderAdapter):
            raise ConfigError(
                f"providers[{p.name!r}]: the adapter_factory of provider kind "
                f"{p.provider_kind!r} returned {type(adapter).__name__}, not a ProviderAdapter"
            )
        return adapter

    def _listener_failed(self) -> None:
        self.metrics.core.incr("", "", "", "listener_errors")

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
            "cache": self._cache_stats(),
            "dedup": self._dedup_stats(),
            "health": self.pool.health(),
            "limiter": limiter,
            "disk_tier": self._disk_state(),
            "shared": shared_state(self.config, self.shared, self.orchestrator.runtimes),
        }

    def _cache_stats(self) -> dict[str, int]:
        if self.cache is None:
            return {}
        out = dict(self.cache.stats())
        if self.shared_cache is not None:
            out.update({f"shared_{k}": v for k, v in self.shared_cache.stats().items()})
            off = bool(self.config.cache.disk_path) and not self.cache.disk_enabled
            out["disk_off_shared_serves"] = int(off)
        return out

    def _dedup_stats(self) -> dict[str, int]:
        out = dict(self.dedup.stats()) if self.dedup is not None else {}
        if self.shared_dedup is not None:
            out.update({f"shared_{k}": v for k, v in self.shared_dedup.stats().items()})
        return out

    def _disk_state(self) -> dict[str, Any]:
        path = self.config.cache.disk_path
        if self.cache is None or not path:
            return {}
        enabled = bool(self.cache.disk_enabled)
        state = {"path": path, "enabled": enabled, "error": self.cache.disk_error}
        if not enabled and self.shared_cache is not None:
            state["served_by"] = "memory+shared"
        return state

    def check_open(self) -> None:
        """Raise if the service is closed."""
        if self.closed:
            raise LLMRelayError("the service is closed")

    # ---- validate, select, cache key -------------------------------------------------------

    # ---- chat ------------------------------------------------------------------------------

    async def chat(
        self,
        messages: Any,
        model: str | None,
        priority: Any,
        timeout: float | None,
        cache: Any,
        params: dict[str, Any],
        *,
        budgets: tuple[Budget, ...] = (),
    ) -> ChatResponse:
        """The whole pipeline for one non-streamed call."""
        p = self.prepare(messages, model, priority, cache, params, stream=False, budgets=budgets)
        return await self.chat_prepared(p, timeout, memory_checked=False)

    def prepare(
        self,
        messages: Any,
        model: str | None,
        priority: Any,
        cache: Any,
        params: dict[str, Any],
        *,
        stream: bool,
        budgets: tuple[Budget, ...] = (),
    ) -> Prepared:
        """The validate stage (see :func:`llmrelay._pipeline.validate.prepare`)."""
        return validate.prepare(
            self, messages, model, priority, cache, params, stream=stream, budgets=budgets
        )

    def memory_hit(self, p: Prepared) -> ChatResponse | None:
        """The memory tier's answer, if any (sync callers use it with no loop)."""
        return cache_stage.memory_hit(self, p)

    check_priority = staticmethod(validate.check_priority)

    async def chat_prepared(
        self, p: Prepared, timeout: float | None, *, memory_checked: bool
    ) -> ChatResponse:
        """Everything after validation: middleware around cache, dedup and orchestration;
        a structured call's reply validated (and repaired once) on top."""
        if p.trace is not None and not p.trace.wrapped:  # the call again, inside its trace
            return await p.trace.wrap(self.chat_prepared(p, timeout, memory_checked=memory_checked))
        if p.structured is not None:
            return await structured_chat(self, p, timeout, memory_checked)
        return await self.chat_once(p, timeout, memory_checked=memory_checked)

    async def chat_once(
        self, p: Prepared, timeout: float | None, *, memory_checked: bool
    ) -> ChatResponse:
        """One pass of the call: middleware around cache, dedup and orchestration."""
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
        """The cache stage, then dedup and orchestrate on a miss."""
        hit = await cache_stage.lookup(self, p, memory_checked)
        if hit is not None:
            return hit
        if p.key is not None and self.dedup is not None:
            return await self.guarded(deduped(self, self.dedup, p, timeout))
        return await self.guarded(orchestrated(self, p, timeout))

    async def guarded(self, aw: Awaitable[_T]) -> _T:
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

    # ---- streams ---------------------------------------------------------------------------

    def stream(
        self,
        messages: Any,
        model: str | None,
        priority: Any,
        timeout: float | None,
        cache: Any,
        params: dict[str, Any],
        *,
        budgets: tuple[Budget, ...] = (),
    ) -> AsyncIterator[ChatChunk]:
        """The pipeline for a streamed call (see :mod:`llmrelay._pipeline.stream`)."""
        return stream_call(self, messages, model, priority, timeout, cache, params, budgets)

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
        prio = validate.check_priority(priority)
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
        est = texts_tokens(texts)
        ctx = CallContext(prio, deadline(self, timeout), est, 0)
        tr = None
        if self.events.live():
            tr = self.events.start("embeddings", name, prio, cands, None)

        async def send(cand: Candidate) -> EmbeddingResponse:
            dep = cand.deployment
            remaining = ctx.deadline - asyncio.get_running_loop().time()
            if dep.adapter.in_process:
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

        hook = self.attempt_hook if tr is None else tr.hooked(ctx, self.attempt_hook)
        run = self.orchestrator.run(self.selector.usable(cands) or cands, ctx, send, hook)
        resp, cand, _ = await (run if tr is None else tr.wrap(run))
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
        self.stop_streams = True
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
        while self.open_streams or any(
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
        if self.shared_cache is not None:
            # queued shared-tier writes get one op timeout (and a little) to land
            await self.shared_cache.drain(self.shared_cache.op_timeout_s + 0.05)
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
