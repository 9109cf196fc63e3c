"""RequestOrchestrator: the Python driver of each deployment's core ``Gate``.

The core decides and Python waits. One attempt is one ``Gate.admit`` (rate-limit
reservation, priority slot and breaker permit in one call) and one ``Gate.settle``
(breaker, scheduler and token reconciliation in one call). When the gate says wait,
the caller sleeps the limiter's delay on its own loop, or parks a future in the gate
(``Gate.park``), which the ``settle``/``cancel`` that grants its slot wakes through the
loop's ``Completions`` queue (any loop, any thread), then ``resume``s. Retries use full-jitter
exponential backoff honouring ``Retry-After``, within the gate's retry budget and the
call's total deadline; then the next candidate. Cancellation at any point gives the
entry up (``Gate.cancel``): slot, reservation and breaker permit go back.

With shared limits (``SharedStateConfig.limits``) each gate holds the Redis-backed
limiter: ``admit`` answers ``GATE_SHARED`` and the core runs the cluster-wide check on
its runtime, settling a future handed to ``admit`` with what ``admit`` would have
answered (plus who decided: Redis or the ``on_unavailable`` fallback). The refunds,
the reconcile with real usage and a 429's pause are the core's, inside ``cancel`` and
``settle``: no extra crossing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from llmrelay import _core
from llmrelay._config import LLMServiceConfig, RateLimitConfig
from llmrelay._pool import Deployment
from llmrelay._selection import Candidate
from llmrelay._transport import _completions
from llmrelay.errors import (
    AllProvidersFailedError,
    Attempt,
    AuthenticationError,
    BudgetExceededError,
    CircuitOpenError,
    ClientThrottledError,
    ContextLengthError,
    DeadlineExceededError,
    LLMRelayError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QueueFullError,
    QueueTimeoutError,
    RateLimitError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmrelay._metrics import ServiceMetrics
    from llmrelay._pool import DeploymentHealth
    from llmrelay._telemetry import CallTrace
    from llmrelay._wire import HeaderPairs
    from llmrelay.providers import ProviderAdapter
    from llmrelay.providers._ratelimit import RateLimitInfo

__all__ = ["CallContext", "DeploymentRuntime", "Lease", "RequestOrchestrator", "outcome_of"]

log = logging.getLogger("llmrelay")

#: The window of the limiter cells learnt from headers (limits are per minute).
_HEADER_WINDOW_S = 60.0

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
#: Called after each attempt: (candidate, error or None, seconds, whether it was sent).
AttemptHook = Callable[[Candidate, BaseException | None, float, bool], None]
#: The real (input, output) token usage of a successful result, for the gate's books.
UsageOf = Callable[[Any], tuple[int, int]]

_PERMIT = _core.GATE_PERMIT
_SHARED = _core.GATE_SHARED


def outcome_of(err: BaseException | None) -> int:
    """How an attempt that ended with ``err`` judges its deployment (a gate outcome)."""
    if err is None:
        return _core.SUCCESS
    if isinstance(err, DeadlineExceededError):
        return _core.DEADLINE  # the caller's budget ran out: says nothing about the deployment
    if isinstance(err, RateLimitError):
        return _core.THROTTLED
    if isinstance(err, ProviderTimeoutError):
        return _core.OVERLOAD
    if isinstance(err, ProviderUnavailableError):
        return _core.OVERLOAD if err.status_code in (503, 529) else _core.FAILURE
    if isinstance(err, ProviderResponseError):
        return _core.FAILURE
    if isinstance(err, AuthenticationError | ProviderError):
        return _core.ERROR
    return _core.IGNORED


@dataclass(eq=False)
class DeploymentRuntime:
    """A deployment and its gate (which holds the callers waiting for its slots)."""

    deployment: Deployment
    gate: _core.Gate
    #: the gate's limits are shared (Redis): ``admit`` answers through a future
    shared: bool = False

    @property
    def waiters(self) -> list[int]:
        """The entries whose callers are parked in the gate, waiting for a slot."""
        return self.gate.parked()

    @property
    def scheduler(self) -> _core.PriorityScheduler:
        """The gate's scheduler, to read."""
        return self.gate.scheduler

    @property
    def breaker(self) -> _core.CircuitBreaker:
        """The gate's breaker, to read."""
        return self.gate.breaker

    @property
    def rate_keys(self) -> dict[str, str]:
        """The configured limit cells: ``{dim: key in the orchestrator's limiter}``."""
        return self.gate.rate_keys()

    @property
    def outstanding(self) -> int:
        """Rate-limit reservations booked and neither sent nor refunded yet."""
        return int(self.gate.limiter_stats()["outstanding"])


@dataclass(slots=True)
class CallContext:
    """What the orchestrator needs of one call."""

    priority: int
    deadline: float  # on the loop's clock
    est_input_tokens: int
    est_output_tokens: int
    attempts: list[Attempt] = field(default_factory=list)
    retries: int = 0
    fallbacks: int = 0
    queue_wait_s: float = 0.0
    sending: bool = False  # an attempt is on the wire (slot taken, breaker asked)
    sent: bool = False  # the current attempt got as far as the wire
    trace: CallTrace | None = None  # the call's events (None: nobody listens)


class Lease:
    """A gate permit held until ``finish`` -- for streams, until they end."""

    __slots__ = ("_done", "_health", "_rt", "_started", "_trace", "id")

    def __init__(
        self,
        rt: DeploymentRuntime,
        entry: int,
        health: DeploymentHealth,
        trace: CallTrace | None = None,
    ) -> None:
        self._rt = rt
        self.id = entry
        self._health = health
        self._started = time.perf_counter()
        self._done = False
        self._trace = trace
        health.in_flight += 1
        if trace is not None:
            trace.gate(rt)  # a breaker that let a probe through is half-open now

    def held_s(self) -> float:
        """Seconds since the permit was granted."""
        return time.perf_counter() - self._started

    def finish(
        self,
        err: BaseException | None,
        latency_s: float | None = None,
        usage: tuple[int, int] | None = None,
    ) -> None:
        """Settle the attempt in the gate and wake whoever it lets run (idempotent).

        ``latency_s`` is the time the deployment took; by default the time since the
        permit. A stream passes the time spent waiting for its data, so a consumer that
        holds a stream open does not make the deployment look slow. ``usage`` (input,
        output tokens) reconciles the reservation's estimate with what was used.
        """
        if self._done:
            return
        self._done = True
        self._health.in_flight -= 1
        latency = time.perf_counter() - self._started if latency_s is None else latency_s
        gate = self._rt.gate
        code = outcome_of(err)
        if code == _core.THROTTLED and self._rt.shared:
            # a 429's Retry-After pauses the deployment in every process
            ra = getattr(err, "retry_after", None)
            ra = float(ra) if isinstance(ra, int | float) and ra > 0 else None
            tin, tout = usage if usage is not None else (None, None)
            gate.settle(self.id, code, latency, tin, tout, ra)
        elif usage is None:
            gate.settle(self.id, code, latency)  # wakes whoever it lets run
        else:
            gate.settle(self.id, code, latency, usage[0], usage[1])
        if self._trace is not None:
            self._trace.gate(self._rt)


class RequestOrchestrator:
    """Admission, retries and fallbacks over the candidates of one call."""

    def __init__(
        self,
        config: LLMServiceConfig,
        deployments: list[Deployment],
        *,
        metrics: ServiceMetrics,
        clock: _core.ManualClock | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        shared: _core.SharedLimiter | None = None,
    ) -> None:
        oc = config.orchestrator
        self._cfg = oc
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._metrics = metrics
        self._clamp_warned: set[str] = set()
        # configured once at start: never let the idle sweep forget a configured cell
        self.limiter = _core.RateLimiter(idle_ttl_s=math.inf, clock=clock)
        self.runtimes: dict[str, DeploymentRuntime] = {}
        self._clock = clock
        self.shared = shared
        self._shared_timeout_s = config.shared.op_timeout_s if config.shared else 0.0
        #: deployments whose last shared check was decided without Redis (warned once)
        self._degraded: set[str] = set()
        for dep in deployments:
            gate = self._gate(config, dep)
            self._configure_limits(gate, dep.config.rate_limit)
            self.runtimes[dep.name] = DeploymentRuntime(dep, gate, shared=shared is not None)

    def _gate(self, config: LLMServiceConfig, dep: Deployment) -> _core.Gate:
        oc = self._cfg
        bc = dep.config.circuit_breaker or config.circuit_breaker
        limit = dep.config.max_concurrency or oc.max_concurrency
        return _core.Gate(
            dep.name,
            limiter=self.limiter,
            max_concurrency=limit,
            min_concurrency=min(oc.min_concurrency, limit),
            max_queue=oc.max_queue_size,
            adaptive=oc.adaptive_concurrency,
            aging_s=oc.aging_s,
            failure_rate_threshold=bc.failure_rate_threshold,
            slow_call_rate_threshold=bc.slow_call_rate_threshold,
            slow_call_duration_s=bc.slow_call_threshold_s,
            minimum_calls=bc.minimum_calls,
            window_size=bc.window_size,
            open_duration_s=bc.open_duration_s,
            open_backoff_multiplier=bc.open_backoff_multiplier,
            max_open_duration_s=bc.max_open_duration_s,
            half_open_max_calls=bc.half_open_max_calls,
            retry_budget_ratio=oc.retry_budget_ratio,
            clock=self._clock,
            shared=self.shared,
        )

    def after_fork_in_child(self) -> None:
        """Fresh schedulers in a forked child: the parent's calls in flight or queued at
        the fork do not exist here and must not hold its slots. Breakers and limits keep
        what they learnt."""
        for rt in self.runtimes.values():
            rt.gate.after_fork()
            rt.deployment.health.in_flight = 0
        self._degraded = set()

    @staticmethod
    def _configure_limits(gate: _core.Gate, rl: RateLimitConfig | None) -> None:
        if rl is None:
            return
        rpm = rl.requests_per_minute
        # burst: requests that may go at once; tokens get the same share of their minute
        share = (rl.burst / rpm) if (rl.burst and rpm) else (1.0 / 6.0)
        for dim, per_min in (
            ("rpm", rpm),
            ("tpm", rl.tokens_per_minute),
            ("itpm", rl.input_tokens_per_minute),
            ("otpm", rl.output_tokens_per_minute),
        ):
            if per_min:
                burst = rl.burst if dim == "rpm" and rl.burst else max(1.0, per_min * share)
                gate.configure_limit(dim, per_min / 60.0, burst)

    def is_open(self, dep: Deployment) -> bool:
        """Whether the deployment's breaker would refuse a call now."""
        return self.runtimes[dep.name].gate.is_open()

    def observe_reply_headers(
        self, dep: Deployment, adapter: ProviderAdapter, headers: HeaderPairs | Mapping[str, str]
    ) -> None:
        """Learn from a reply's rate-limit headers. A header that cannot be used is
        ignored, logged and counted (``rate_headers_ignored``): it never costs the reply."""
        try:
            self.observe_rate_headers(dep, adapter.rate_limit_info(headers))
        except Exception as e:
            log.warning(
                "llmrelay: ignored unusable rate-limit headers from %s (%s)",
                dep.name,
                type(e).__name__,
            )
            self._metrics.core.incr(dep.kind, "", dep.name, "rate_headers_ignored")

    def observe_rate_headers(self, dep: Deployment, info: RateLimitInfo) -> None:
        """Pace from the provider's remaining/limit/reset figures, before a 429 happens.

        A dimension with no client-side limit configured gets a cell learned from
        the headers (``limit`` per minute, as OpenAI and Anthropic report them);
        then the cell is tightened so no more than ``remaining`` go before the reset.
        A reset longer than the cell's window (a minute) is ignored, with a warning
        and a ``rate_headers_ignored`` count: one reply must not be able to lock a
        deployment for hours.
        """
        if info is None:
            return
        gate = self.runtimes[dep.name].gate
        for dim, pre in (("rpm", "requests"), ("tpm", "tokens")):
            remaining = getattr(info, f"{pre}_remaining", None)
            reset = getattr(info, f"{pre}_reset_s", None)
            if remaining is None or reset is None:
                continue
            limit = getattr(info, f"{pre}_limit", None)
            if not math.isfinite(float(reset)) or reset > _HEADER_WINDOW_S:
                # a per-minute cell cannot hold a longer reset: one reply must not be
                # able to lock the deployment for hours (a 429 still pauses it, by its
                # Retry-After)
                if dep.name not in self._clamp_warned:
                    self._clamp_warned.add(dep.name)
                    log.warning(
                        "llmrelay: %s reported a %s reset of %.0fs, longer than the %.0fs"
                        " window of its limit; ignoring it",
                        dep.name,
                        pre,
                        float(reset),
                        _HEADER_WINDOW_S,
                    )
                self._metrics.core.incr(dep.kind, "", dep.name, "rate_headers_ignored")
                continue
            gate.observe_headers(
                dim,
                float(max(0.0, remaining)),
                float(limit) if limit else None,
                float(max(0.0, reset)),
            )

    async def _wait(
        self,
        rt: DeploymentRuntime,
        cand: Candidate,
        ctx: CallContext,
        entry: int,
        delay: float,
        wait_until: float,
    ) -> int:
        """Wait as the gate said (a limiter delay, or a queued slot), then resume, until
        it grants a permit. Any way out but a permit gives the entry up."""
        gate = rt.gate
        kind = _core.GATE_WAIT
        while kind != _PERMIT:
            if delay > 0:
                try:
                    await self._sleep(delay)
                except BaseException:
                    gate.cancel(entry)
                    raise
            else:
                await self._park(rt, cand, ctx, entry, wait_until)
            kind, entry, delay = gate.resume(entry)
        return entry

    async def _park(
        self, rt: DeploymentRuntime, cand: Candidate, ctx: CallContext, entry: int, until: float
    ) -> None:
        """Wait for a queued entry to be woken, up to ``until``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if not rt.gate.park(entry, fut, _completions(loop)):
            return  # granted already (by another thread's settle): resume at once
        queued_at = time.perf_counter()
        try:
            async with asyncio.timeout_at(until):
                await fut
        except BaseException as e:
            rt.gate.cancel(entry)
            if not isinstance(e, TimeoutError):
                raise
            name = cand.deployment.name
            if until < ctx.deadline:
                raise QueueTimeoutError(
                    f"waited {self._cfg.fallback_wait_share:.0%} of the time left for a slot of"
                    f" {name} (limit {rt.scheduler.limit}); trying the next candidate",
                    deployment=name,
                ) from None
            raise DeadlineExceededError(
                "total timeout exceeded while queued", provider=name, model=cand.model
            ) from None
        finally:
            ctx.queue_wait_s += time.perf_counter() - queued_at

    async def _attempt(
        self,
        cand: Candidate,
        ctx: CallContext,
        send: Callable[[Candidate], Awaitable[T]],
        hold: bool,
        others_left: bool,
        first: bool,
        usage_of: UsageOf | None,
    ) -> tuple[T, Lease | None]:
        """One attempt: admission by the gate (waiting if it says so), then the send.

        With ``others_left`` the waits before sending (limiter, slot) are bounded by a
        share of the time left, so a degraded candidate cannot hold the call until its
        deadline while a healthy one sits idle. The gate refunds a reservation not sent
        on every path (refusal, timeout, cancellation).
        """
        rt = self.runtimes[cand.deployment.name]
        now = asyncio.get_running_loop().time()
        left = ctx.deadline - now
        wait_s = left * self._cfg.fallback_wait_share if others_left else left
        try:
            if rt.shared:
                kind, entry, delay = await self._admit_shared(rt, ctx, wait_s, left, first)
            else:
                kind, entry, delay = rt.gate.admit(
                    ctx.priority, ctx.est_input_tokens, ctx.est_output_tokens, wait_s, left, first
                )
        except ClientThrottledError as e:
            e.model = cand.model
            if ctx.trace is not None:
                ctx.trace.throttled(cand, "refused", 0.0)
            raise
        if kind != _PERMIT:
            if ctx.trace is not None:
                ctx.trace.throttled(cand, "rate_limit" if delay > 0 else "queued", delay)
            entry = await self._wait(rt, cand, ctx, entry, delay, now + wait_s)
        lease = Lease(rt, entry, cand.deployment.health, ctx.trace)
        ctx.sending = ctx.sent = True
        try:
            if getattr(cand.deployment.adapter, "never_blocks", False):
                result = await send(cand)  # answers at once: no deadline timer to arm
            else:
                try:
                    async with asyncio.timeout_at(ctx.deadline):
                        result = await send(cand)
                except TimeoutError as e:
                    if isinstance(e, LLMRelayError):
                        raise
                    raise DeadlineExceededError(
                        "total timeout exceeded",
                        provider=cand.deployment.name,
                        model=cand.model,
                    ) from None
        except BaseException as e:
            lease.finish(e)
            if not isinstance(e, asyncio.CancelledError):
                ctx.sending = False
            raise
        ctx.sending = False
        if hold:
            return result, lease
        lease.finish(None, usage=None if usage_of is None else usage_of(result))
        return result, None

    async def _admit_shared(
        self, rt: DeploymentRuntime, ctx: CallContext, wait_s: float, left: float, first: bool
    ) -> tuple[int, int, float]:
        """``admit`` on a gate with shared limits: the core checks Redis on its runtime
        and settles a future with the answer. A caller cancelled meanwhile gives the entry
        up; the core gives back whatever Redis booked for it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int, float, str]] = loop.create_future()
        kind, entry, delay = rt.gate.admit(
            ctx.priority,
            ctx.est_input_tokens,
            ctx.est_output_tokens,
            wait_s,
            left,
            first,
            fut,
            _completions(loop),
        )
        if kind != _SHARED:
            return kind, entry, delay  # no shared limit configured on this gate
        try:
            kind, entry, delay, source = await fut
        except LLMRelayError:
            raise  # a refusal: the core gave everything back
        except BaseException:
            rt.gate.cancel(entry)
            raise
        if source != "redis":
            self._shared_fallback(rt, source)
        elif rt.deployment.name in self._degraded:
            self._degraded.discard(rt.deployment.name)
            log.warning(
                "llmrelay: shared limits of %s are decided by Redis again", rt.deployment.name
            )
        return kind, entry, delay

    def _shared_fallback(self, rt: DeploymentRuntime, source: str) -> None:
        """A shared check decided without Redis: count it, and say so once per episode."""
        dep = rt.deployment
        self._metrics.core.incr(dep.kind, "", dep.name, f"shared_fallbacks.{source}")
        if dep.name in self._degraded:
            return
        self._degraded.add(dep.name)
        timeout = self._shared_timeout_s
        what = {
            "local_share": "this process's share of each limit (limit x 0.9 / live processes)",
            "open": "nothing (on_unavailable='open' admits)",
        }.get(source, source)
        log.warning(
            "llmrelay: shared limits of %s unavailable (Redis did not answer within %.3fs):"
            " admissions follow %s until it answers; metrics count shared_fallbacks.%s",
            dep.name,
            timeout,
            what,
            source,
        )

    def backoff(self, retry: int, err: LLMRelayError) -> float:
        """Full-jitter exponential backoff, never shorter than the provider's Retry-After."""
        cap = min(self._cfg.backoff_max_s, self._cfg.backoff_initial_s * (2 ** (retry - 1)))
        delay = self._rng.uniform(0.0, cap)
        retry_after = getattr(err, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            delay = max(delay, float(retry_after))
        return delay

    async def run(
        self,
        cands: list[Candidate],
        ctx: CallContext,
        send: Callable[[Candidate], Awaitable[T]],
        on_attempt_end: AttemptHook | None = None,
        *,
        hold: bool = False,
        usage_of: UsageOf | None = None,
    ) -> tuple[T, Candidate, Lease | None]:
        """Try the candidates in order, with retries, until one answers or all have failed.

        With ``hold`` the winning attempt's slot stays taken: the caller gets a
        :class:`Lease` and must ``finish`` it (a stream, when it ends). ``usage_of``
        reads the real token usage of a result, settled with the attempt.
        """
        # The deadline is enforced where a call can wait (queue, rate-limit sleep,
        # backoff, the send itself), not by one timer around everything: arming a
        # timer costs several microseconds, which an in-process answer need not pay.
        return await self._run(
            cands, ctx, send, on_attempt_end, asyncio.get_running_loop(), hold, usage_of
        )

    def _final_error(
        self, ctx: CallContext, last: LLMRelayError | None, next_cand: Candidate | None = None
    ) -> LLMRelayError:
        if last is None:
            return DeadlineExceededError("total timeout exceeded before any attempt")
        if len({(a.provider, a.model) for a in ctx.attempts}) <= 1:
            if next_cand is not None:
                # it moved on to the next candidate (a bounded wait given up, an open
                # circuit, a spent retry), but the time ran out before that one was tried:
                # the caller's deadline is what failed, not the first candidate's refusal
                return DeadlineExceededError(
                    f"total timeout exceeded before {next_cand.label} could be tried"
                    f" (after: {last})",
                    provider=next_cand.deployment.name,
                    model=next_cand.model,
                )
            return last
        return AllProvidersFailedError("all providers failed", attempts=ctx.attempts)

    async def _run(
        self,
        cands: list[Candidate],
        ctx: CallContext,
        send: Callable[[Candidate], Awaitable[T]],
        on_attempt_end: AttemptHook | None,
        loop: asyncio.AbstractEventLoop,
        hold: bool,
        usage_of: UsageOf | None,
    ) -> tuple[T, Candidate, Lease | None]:
        last: LLMRelayError | None = None
        share = self._cfg.fallback_wait_share
        for idx, cand in enumerate(cands):
            rt = self.runtimes[cand.deployment.name]
            others_left = idx + 1 < len(cands)
            if idx > 0:
                ctx.fallbacks += 1
                if ctx.trace is not None:
                    ctx.trace.fallback(cands[idx - 1], cand, last)
            tries = 0
            while True:
                if loop.time() >= ctx.deadline:
                    raise self._final_error(ctx, last, cand if idx and not tries else None)
                t0 = time.perf_counter()
                ctx.sent = False
                try:
                    result, lease = await self._attempt(
                        cand, ctx, send, hold, others_left, tries == 0, usage_of
                    )
                except asyncio.CancelledError as e:
                    if ctx.sending:  # on the wire when the caller gave up: still an attempt
                        ctx.sending = False
                        if on_attempt_end is not None:
                            on_attempt_end(cand, e, time.perf_counter() - t0, True)
                    raise
                except LLMRelayError as e:
                    if on_attempt_end is not None:
                        on_attempt_end(cand, e, time.perf_counter() - t0, ctx.sent)
                    ctx.attempts.append(Attempt(cand.deployment.name, cand.model, e))
                    last = e
                    if isinstance(e, QueueFullError):
                        raise  # back-pressure is the caller's to handle, at once
                    if isinstance(e, DeadlineExceededError):
                        raise self._final_error(ctx, e) from None
                    if isinstance(e, ContextLengthError) and others_left:
                        break  # a later candidate may have a larger window
                    if isinstance(e, BudgetExceededError) and others_left and e.budget != "view":
                        break  # this deployment's budget is spent: the next may have room
                    if not e.retryable:
                        raise
                    if isinstance(e, CircuitOpenError | QueueTimeoutError):
                        break
                    if isinstance(e, ClientThrottledError) and others_left:
                        break  # its limit has no room in time: the next one may
                    tries += 1
                    if tries > self._cfg.max_retries or not rt.gate.try_retry():
                        break
                    delay = self.backoff(tries, e)
                    now = loop.time()
                    if now + delay >= ctx.deadline:
                        break
                    if others_left and delay > (ctx.deadline - now) * share:
                        break  # waiting here would starve the candidates after it
                    ctx.retries += 1
                    if ctx.trace is not None:
                        ctx.trace.retry(cand, ctx.retries, delay, e)
                    await self._sleep(delay)
                    continue
                if on_attempt_end is not None:
                    on_attempt_end(cand, None, time.perf_counter() - t0, True)
                return result, cand, lease
        if last is None:
            raise AllProvidersFailedError("no candidate to try", attempts=ctx.attempts)
        raise self._final_error(ctx, last)
