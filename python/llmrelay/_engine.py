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
from typing import Any, TypeVar, cast

import httpx
import msgspec

from llmrelay import _core
from llmrelay._budget import Budget, Reservation
from llmrelay._cachekey import CacheControl, cache_key, is_cacheable, is_complete
from llmrelay._config import LLMServiceConfig, ProviderConfig
from llmrelay._metrics import COST_COUNTER, ServiceMetrics
from llmrelay._middleware import Middleware, chain
from llmrelay._orchestrator import AttemptHook, CallContext, RequestOrchestrator
from llmrelay._pool import ProviderPool
from llmrelay._pricing import PriceBook, zero_cost
from llmrelay._selection import Candidate, Selector, honouring
from llmrelay._shared import SharedLimiter, shared_limiter, shared_state
from llmrelay._shared_tiers import SharedCacheTier, SharedDedupTier
from llmrelay._stages import (
    cache_control,
    cancel_task,
    estimate_input_tokens,
    model_facts,
    needs_of,
    send_chat,
    send_embed,
    transport_factory,
)
from llmrelay._streaming import stream_call
from llmrelay._structured import OutputSpec, output_spec
from llmrelay._structured_call import structured_chat, with_parsed
from llmrelay._sync import LoopThread
from llmrelay._telemetry import INFO, CallTrace, Emitter, log_enabled
from llmrelay._transport import _completions
from llmrelay._types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    Usage,
    build_request,
)
from llmrelay.errors import (
    BudgetExceededError,
    CacheMissError,
    CircuitOpenError,
    ClientThrottledError,
    ConfigError,
    DeadlineExceededError,
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
    #: what a ``response_format`` model asks for (None: no structured output)
    structured: OutputSpec | None = None
    #: the call's events (None: nobody listens)
    trace: CallTrace | None = None
    #: the USD budgets of the views the call was made through (innermost last)
    budgets: tuple[Budget, ...] = ()


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
        self._disk_configured = bool(cc.enabled and cc.disk_path)
        self._told_nondeterministic = False
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
        self._decoder = msgspec.msgpack.Decoder(ChatResponse)
        self._encoder = msgspec.msgpack.Encoder()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopped_by_close: set[asyncio.Task[Any]] = set()
        self._open_streams: set[object] = set()  # streams not yet ended (aclose drains them)
        self._stop_streams = False  # set when the drain ran out: streams end at their next chunk
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
        self._open_streams = set()
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
        budgets: tuple[Budget, ...] = (),
    ) -> Prepared:
        """The validate and select stages, and the cache key."""
        self.check_open()
        prio = self.check_priority(priority)
        cc = cache_control(cache)
        req = build_request(messages, model, params)
        fmt = params.get("response_format")
        spec = output_spec(fmt) if fmt is not None else None
        asked = req.model or self.selector.default_model
        name = self.selector.canonical(asked)  # an alias and its model share cache entries
        est_in = estimate_input_tokens(req)
        est_out = req.max_tokens or _DEFAULT_OUTPUT_ESTIMATE
        cands = self.selector.candidates(
            asked, needs=needs_of(req, stream), est_tokens=est_in + (req.max_tokens or 0)
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
        tr = None
        if self.events.listeners or log_enabled(INFO):  # Emitter.live(), inlined
            dedup = key is not None and self.dedup is not None and not stream
            tr = self.events.start("chat", name, prio, cands, req, stream=stream, dedup=dedup)
        return Prepared(req, name, prio, cands, key, cc, est_in, est_out, mode, spec, tr, budgets)

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
        cache = self.cache
        if cache is None or p.key is None or p.cc.refresh or p.mode == "write_only":
            return None
        # with a disk tier the lookup goes on there: count its miss once, at the disk
        raw = (cache.get_hot if self._disk_configured else cache.get_memory)(p.key)
        if raw is None:
            return None
        resp: ChatResponse | None = self._decoded_hit(p, raw)
        if resp is not None:
            self.metrics.core.incr(*self._series(p), "cache_hits.memory")
            if p.trace is not None:
                p.trace.cache_hit("memory", resp)
        return resp

    def _disk_hit(self, p: Prepared) -> ChatResponse | None:
        cache = self.cache
        if cache is None or p.key is None or p.cc.refresh or p.mode == "write_only":
            return None
        if not self._disk_configured:
            return None
        raw = cache.get_disk(p.key)
        if raw is None:
            return None
        resp: ChatResponse | None = self._decoded_hit(p, raw)
        if resp is not None:
            self.metrics.core.incr(*self._series(p), "cache_hits.disk")
            if p.trace is not None:
                p.trace.cache_hit("disk", resp)
        return resp

    def _decoded_hit(self, p: Prepared, raw: bytes) -> ChatResponse | None:
        """A cached answer, with ``parsed`` for a structured call (an answer that does
        not validate into this call's model is no answer: a miss)."""
        resp: ChatResponse = self._decoder.decode(raw)
        if p.structured is None:
            return resp
        value, error = p.structured.try_parse(resp.text)
        return None if error is not None else msgspec.structs.replace(resp, parsed=value)

    async def shared_hit(self, p: Prepared) -> ChatResponse | None:
        """The shared tier's answer (below memory and disk), filling the memory tier.
        Redis away, slow, or a bad entry: a miss, within ``op_timeout_s``."""
        tier, cache = self.shared_cache, self.cache
        if tier is None or cache is None or p.key is None or p.cc.refresh:
            return None
        if p.mode == "write_only":
            return None
        got = await tier.get(p.key)
        if got is None:
            return None
        raw, ttl_s = got
        try:
            resp = self._decoded_hit(p, raw)
        except msgspec.DecodeError:
            # sealed by us for this key, yet not a reply this version reads: a miss
            self.metrics.core.incr(*self._series(p), "cache_undecodable.shared")
            return None
        if resp is None:  # does not validate into this structured call's model
            return None
        self.metrics.core.incr(*self._series(p), "cache_hits.shared")
        if p.trace is not None:
            p.trace.cache_hit("shared", resp)
        cache.set(p.key, raw, ttl_s)
        return resp

    def _count_miss(self, p: Prepared) -> None:
        tiers = [("cache_misses.memory", 1)]
        if self.cache is not None and self.cache.disk_enabled and not p.cc.refresh:
            tiers.append(("cache_misses.disk", 1))
        if self.shared_cache is not None and not p.cc.refresh:
            tiers.append(("cache_misses.shared", 1))
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

    def _store(self, p: Prepared, resp: ChatResponse, *, shared: bool = True) -> None:
        cache = self.cache
        if cache is None or p.key is None or p.mode == "read_only" or p.mode == "replay":
            return
        if p.structured is not None and resp.parsed is None:
            return  # a reply that does not validate is not kept (its repair may be)
        if not is_complete(resp):
            incomplete = p.cc.cache_incomplete
            if not (self.config.cache.cache_incomplete if incomplete is None else incomplete):
                self.metrics.core.incr(*self._series(p), "cache_skipped.incomplete")
                return
        stored = msgspec.structs.replace(
            resp,
            cached=True,
            latency_s=0.0,
            attempts=0,
            parsed=None,
            cost=zero_cost(resp.cost),
        )  # ``parsed`` is rebuilt from the text on a hit, into the caller's own model
        raw = self._encoder.encode(stored)
        cache.set(p.key, raw, p.cc.ttl_s)
        # queued on the core's runtime: the reply does not wait for Redis
        if (
            shared
            and self.shared_cache is not None
            and not self.shared_cache.set(p.key, raw, p.cc.ttl_s)
        ):
            self.metrics.core.incr(*self._series(p), "cache_writes_dropped.shared")
        if p.trace is not None:
            p.trace.cache_stored(p.cc.ttl_s)

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
        if p.key is not None and p.mode != "write_only":
            hit = None if memory_checked else self.memory_hit(p)
            if hit is None:
                hit = self._disk_hit(p)
            if hit is None:
                hit = await self.shared_hit(p)
            if hit is not None:
                return hit
            self._count_miss(p)
        if p.mode == "replay":
            raise self.replay_miss(p)
        if p.key is not None and self.dedup is not None:
            return await self._guarded(self._deduped(self.dedup, p, timeout))
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

    async def _deduped(
        self, dedup: _core.RequestDeduplicator, p: Prepared, timeout: float | None
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
            self.metrics.core.incr(*self._series(p), "dedup_window_hits")
            if p.trace is not None:
                p.trace.dedup("window")
            return cast(ChatResponse, value)  # the core hands back what complete stored
        if role == _core.DEDUP_FOLLOWER:
            self.metrics.core.incr(*self._series(p), "dedup_joins")
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
            resp = await self._led(p, timeout)
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

    async def _led(self, p: Prepared, timeout: float | None) -> ChatResponse:
        """The local dedup leader's call: with cross-process dedup, one process of the
        cluster calls the provider and the others take its result (see docs/scaleout.md).
        Redis away: this process calls alone. A dead leader elsewhere is taken over when
        its lease runs out; the wait is bounded by this call's deadline."""
        tier = self.shared_dedup
        if tier is None or p.key is None:
            return await self._orchestrated(p, timeout)
        key = p.key
        loop = asyncio.get_running_loop()
        deadline = self._deadline(timeout)
        outcome, value = await tier.join(key, max(0.0, deadline - loop.time()))
        lease = value if outcome == "lead" else None
        if outcome == "done":
            joined = self._joined_elsewhere(p, value)
            if joined is not None:
                return joined
        left = deadline - loop.time()
        if outcome == "timeout" or left <= 0:
            raise DeadlineExceededError(
                "total timeout exceeded while another process made the same call",
                model=p.model,
            )
        try:
            resp = await self._orchestrated(p, left)
        except BaseException:
            if lease is not None:
                lease.abandon()
            raise
        if lease is not None:
            lease.complete(key, self._encoder.encode(resp))
        return resp

    def _joined_elsewhere(self, p: Prepared, raw: bytes) -> ChatResponse | None:
        """Another process's result for this call (None if this version cannot read it)."""
        try:
            got: ChatResponse = self._decoder.decode(raw)
        except msgspec.DecodeError:
            return None
        self.metrics.core.incr(*self._series(p), "dedup_shared_joins")
        resp: ChatResponse = msgspec.structs.replace(got, attempts=0)
        self._store(p, resp, shared=False)  # the leader's process wrote the shared tier
        return resp

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
        if isinstance(err, BudgetExceededError):
            # refused by a USD budget before sending: not the deployment's failure
            self.metrics.core.incr(dep.kind, cand.model, dep.name, "budget_refused")
            return
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
        hook: AttemptHook = self._record_attempt
        if p.trace is not None:
            hook = p.trace.hooked(ctx, hook)
        resp, cand, _ = await self.orchestrator.run(
            self.selector.usable(p.cands) or p.cands,
            ctx,
            send,
            hook,
            usage_of=_chat_usage,
        )
        return self._process(p, ctx, cand, resp, started)

    def _sender(self, p: Prepared, ctx: CallContext) -> Callable[[Candidate], Awaitable[Any]]:
        async def send(cand: Candidate) -> tuple[ChatResponse, float]:
            dep = cand.deployment
            remaining = ctx.deadline - asyncio.get_running_loop().time()
            t0 = time.perf_counter()
            if dep.adapter.in_process:
                client, transport = None, None
            else:
                client, transport = self.pool.route(dep)
            hold = self.reserve_budgets(p, cand)
            try:
                resp = await send_chat(
                    client,
                    transport,
                    dep,
                    cand.model,
                    p.req,
                    remaining,
                    self.orchestrator.observe_reply_headers,
                )
            except BaseException:
                if hold is not None:
                    hold.refund()
                raise
            resp = self.priced(cand, resp)
            if hold is not None:
                hold.settle(resp.cost.total_usd if resp.cost is not None else None)
            return resp, time.perf_counter() - t0

        return send

    def reserve_budgets(self, p: Prepared, cand: Candidate) -> Reservation | None:
        """Reserve the most the call can cost in the deployment's and the views' budgets;
        BudgetExceededError when one has no room (nothing is sent)."""
        dep = cand.deployment
        own = self.budgets.get(dep.name)
        budgets = [own, *p.budgets] if own is not None else list(p.budgets)
        if not budgets:
            return None
        est = self.prices.estimate_usd(dep.kind, dep.name, cand.model, p.est_in, p.est_out)
        if est is None:
            raise ConfigError(
                f"invalid pricing: a USD budget applies to {dep.name}/{cand.model} but its price"
                " is unknown; add it to LLMServiceConfig.pricing",
                field="pricing",
            )
        return Budget.reserve_all(budgets, est, cand.model)

    def priced(self, cand: Candidate, resp: ChatResponse) -> ChatResponse:
        """``resp`` with its cost (None when a price it needs is unknown)."""
        if resp.cost is not None:
            return resp
        dep = cand.deployment
        cost = self.prices.cost(dep.kind, dep.name, cand.model or resp.model, resp.usage)
        if cost is None and resp.model and resp.model != cand.model:
            cost = self.prices.cost(dep.kind, dep.name, resp.model, resp.usage)
        if cost is None:
            return resp
        return msgspec.structs.replace(resp, cost=cost)

    def _process(
        self, p: Prepared, ctx: CallContext, cand: Candidate, result: Any, started: float
    ) -> ChatResponse:
        resp, attempt_latency = result
        resp = self.priced(cand, resp)
        dep = cand.deployment
        u: Usage = resp.usage
        counters = [
            ("requests", 1),
            ("successes", 1),
            ("tokens_in", u.prompt_tokens),
            ("tokens_out", u.completion_tokens),
        ]
        if u.cached_tokens:
            counters.append(("tokens_cached", u.cached_tokens))
        if u.cache_write_tokens:
            counters.append(("tokens_cache_write", u.cache_write_tokens))
        if u.reasoning_tokens:
            counters.append(("tokens_reasoning", u.reasoning_tokens))
        if resp.cost is not None:
            counters.append((COST_COUNTER, round(resp.cost.total_usd * 1e9)))
        else:
            counters.append(("cost_unknown", 1))
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
        if p.structured is not None:
            out = with_parsed(p.structured, p.req, out)
        if p.trace is not None:
            p.trace.processed(out)
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
        *,
        budgets: tuple[Budget, ...] = (),
    ) -> AsyncIterator[ChatChunk]:
        """The pipeline for a streamed call (see :mod:`llmrelay._streaming`)."""
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

        hook = self._record_attempt if tr is None else tr.hooked(ctx, self._record_attempt)
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
