"""RequestOrchestrator: the Python driver of the core's scheduler, limiter and breakers.

The core decides and Python waits: ``PriorityScheduler.acquire`` answers "go"
or a ticket, and the orchestrator parks the caller on a future that a later
``release``/``cancel`` wakes; ``RateLimiter.reserve_many`` answers a delay the
caller sleeps on its own loop. One attempt is: reserve rate capacity, take a
concurrency slot (by priority), ask the breaker, send, classify, release.
Retries use full-jitter exponential backoff honouring ``Retry-After``, within a
retry budget per deployment and the call's total deadline; then the next
candidate. Cancellation at any point releases the slot, refunds the
reservation and gives the breaker permit back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llmrelay import _core
from llmrelay._config import LLMServiceConfig, RateLimitConfig
from llmrelay._pool import Deployment
from llmrelay._selection import Candidate
from llmrelay.errors import (
    AllProvidersFailedError,
    Attempt,
    AuthenticationError,
    CircuitOpenError,
    ClientThrottledError,
    ContextLengthError,
    DeadlineExceededError,
    LLMRelayError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QueueFullError,
    QueueTimeoutError,
    RateLimitError,
)

__all__ = ["CallContext", "DeploymentRuntime", "Lease", "RequestOrchestrator", "RetryBudget"]

log = logging.getLogger("llmrelay")

#: The window of the limiter cells learnt from headers (limits are per minute).
_HEADER_WINDOW_S = 60.0

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
#: Called after each attempt: (candidate, error or None, seconds, whether it was sent).
AttemptHook = Callable[[Candidate, BaseException | None, float, bool], None]


class RetryBudget:
    """Retries allowed as a share of traffic: each call deposits ``ratio``, a retry costs 1.

    Starts with ``floor`` credits so a quiet deployment can still retry; capped
    so a long quiet spell cannot bank a retry storm.
    """

    __slots__ = ("_balance", "_cap", "_ratio")

    def __init__(self, ratio: float, floor: float = 10.0) -> None:
        self._ratio = ratio
        self._cap = max(floor, 1.0)
        self._balance = floor

    def on_call(self) -> None:
        """Credit one first attempt."""
        self._balance = min(self._cap, self._balance + self._ratio)

    def try_spend(self) -> bool:
        """Take one retry if the budget allows it."""
        if self._balance >= 1.0:
            self._balance -= 1.0
            return True
        return False


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass(eq=False)
class DeploymentRuntime:
    """The core objects of one deployment."""

    deployment: Deployment
    scheduler: Any
    breaker: Any
    budget: RetryBudget
    rate_keys: dict[str, str]
    waiters: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    #: rate-limit reservations booked and neither sent nor refunded yet
    outstanding: int = 0

    def wake(self, tickets: list[int]) -> None:
        """Wake the callers whose tickets the scheduler just granted (any loop, any thread)."""
        for t in tickets:
            fut = self.waiters.pop(t, None)
            if fut is None:
                continue
            loop = fut.get_loop()
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                _wake(fut)
            else:
                loop.call_soon_threadsafe(_wake, fut)


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


class Lease:
    """A granted slot (and breaker permit) held until ``finish`` -- for streams, until they end."""

    __slots__ = ("_done", "_health", "_rt", "_started", "permitted", "ticket")

    def __init__(self, rt: DeploymentRuntime, ticket: int, health: Any) -> None:
        self._rt = rt
        self.ticket = ticket
        self._health = health
        self._started = time.perf_counter()
        self._done = False
        self.permitted = False
        health.in_flight += 1

    def held_s(self) -> float:
        """Seconds since the slot was granted."""
        return time.perf_counter() - self._started

    def finish(self, err: BaseException | None, latency_s: float | None = None) -> None:
        """Judge the call, free the slot and wake whoever it lets run (idempotent).

        ``latency_s`` is the time the deployment took; by default the time since the
        slot was granted. A stream passes the time spent waiting for its data, so a
        consumer that holds a stream open does not make the deployment look slow.
        """
        if self._done:
            return
        self._done = True
        self._health.in_flight -= 1
        latency = time.perf_counter() - self._started if latency_s is None else latency_s
        rt = self._rt
        if self.permitted:
            rt.breaker.record(_breaker_outcome(err), latency)
        rt.wake(rt.scheduler.release(self.ticket, _scheduler_outcome(err), latency))


def _scheduler_outcome(err: BaseException | None) -> str:
    if err is None:
        return "success"
    if isinstance(err, DeadlineExceededError):
        return "ignored"  # the caller's budget ran out: says nothing about the deployment
    if isinstance(err, RateLimitError | ProviderTimeoutError):
        return "overload"
    if isinstance(err, ProviderUnavailableError) and err.status_code in (503, 529):
        return "overload"
    if isinstance(err, ProviderError):
        return "error"
    return "ignored"


def _breaker_outcome(err: BaseException | None) -> str:
    if err is None:
        return "success"
    if isinstance(err, RateLimitError | AuthenticationError | DeadlineExceededError):
        return "ignored"
    if isinstance(err, ProviderUnavailableError | ProviderTimeoutError):
        return "failure"
    if type(err).__name__ == "ProviderResponseError":
        return "failure"
    return "ignored"


class RequestOrchestrator:
    """Admission, retries and fallbacks over the candidates of one call."""

    def __init__(
        self,
        config: LLMServiceConfig,
        deployments: list[Deployment],
        *,
        metrics: Any,
        clock: Any = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
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
        for dep in deployments:
            bc = dep.config.circuit_breaker or config.circuit_breaker
            sched = self._scheduler(dep)
            breaker = _core.CircuitBreaker(
                dep.name,
                failure_rate_threshold=bc.failure_rate_threshold,
                slow_call_rate_threshold=bc.slow_call_rate_threshold,
                slow_call_duration_s=bc.slow_call_threshold_s,
                minimum_calls=bc.minimum_calls,
                window_size=bc.window_size,
                open_duration_s=bc.open_duration_s,
                open_backoff_multiplier=bc.open_backoff_multiplier,
                max_open_duration_s=bc.max_open_duration_s,
                half_open_max_calls=bc.half_open_max_calls,
                clock=clock,
            )
            keys = self._configure_limits(dep.name, dep.config.rate_limit)
            self.runtimes[dep.name] = DeploymentRuntime(
                dep, sched, breaker, RetryBudget(oc.retry_budget_ratio), keys
            )

    def _scheduler(self, dep: Deployment) -> Any:
        oc = self._cfg
        limit = dep.config.max_concurrency or oc.max_concurrency
        return _core.PriorityScheduler(
            max_concurrency=limit,
            min_concurrency=min(oc.min_concurrency, limit),
            max_queue=oc.max_queue_size,
            adaptive=oc.adaptive_concurrency,
            aging_s=oc.aging_s,
            clock=self._clock,
        )

    def after_fork_in_child(self) -> None:
        """Fresh schedulers in a forked child: the parent's calls in flight or queued at
        the fork do not exist here and must not hold its slots. Breakers and limits keep
        what they learnt."""
        for rt in self.runtimes.values():
            rt.scheduler = self._scheduler(rt.deployment)
            rt.waiters.clear()
            rt.outstanding = 0
            rt.deployment.health.in_flight = 0

    def _configure_limits(self, name: str, rl: RateLimitConfig | None) -> dict[str, str]:
        keys: dict[str, str] = {}
        if rl is None:
            return keys
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
                key = f"{name}:{dim}"
                burst = rl.burst if dim == "rpm" and rl.burst else max(1.0, per_min * share)
                self.limiter.configure(key, per_min / 60.0, burst)
                keys[dim] = key
        return keys

    def is_open(self, dep: Deployment) -> bool:
        """Whether the deployment's breaker would refuse a call now."""
        return bool(self.runtimes[dep.name].breaker.state == "open")

    def _costs(self, rt: DeploymentRuntime, ctx: CallContext) -> list[tuple[str, float]]:
        k = rt.rate_keys
        if not k:
            return []
        cost = {
            "rpm": 1.0,
            "tpm": float(ctx.est_input_tokens + ctx.est_output_tokens),
            "itpm": float(ctx.est_input_tokens),
            "otpm": float(ctx.est_output_tokens),
        }
        return [(key, cost[dim]) for dim, key in k.items()]

    def _refund(self, costs: list[tuple[str, float]]) -> None:
        for key, cost in costs:
            self.limiter.refund(key, cost)

    def reconcile(self, dep: Deployment, ctx: CallContext, tokens_in: int, tokens_out: int) -> None:
        """Charge or return the difference between the token estimate and the real usage."""
        k = self.runtimes[dep.name].rate_keys
        if not k:
            return
        pairs = (
            ("tpm", ctx.est_input_tokens + ctx.est_output_tokens, tokens_in + tokens_out),
            ("itpm", ctx.est_input_tokens, tokens_in),
            ("otpm", ctx.est_output_tokens, tokens_out),
        )
        for dim, est, actual in pairs:
            if dim in k:
                self.limiter.reconcile(k[dim], float(est), float(actual))

    def observe_reply_headers(self, dep: Deployment, adapter: Any, headers: Any) -> None:
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

    def observe_rate_headers(self, dep: Deployment, info: Any) -> None:
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
        rt = self.runtimes[dep.name]
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
            key = rt.rate_keys.get(dim)
            if key is None:
                if not limit or limit <= 0:
                    continue
                key = f"{dep.name}:{dim}"
                self.limiter.configure(key, float(limit) / 60.0, max(1.0, float(limit) / 6.0))
                rt.rate_keys[dim] = key
            lim = float(limit) if limit else None
            self.limiter.observe_headers(
                key, float(max(0.0, remaining)), lim, float(max(0.0, reset))
            )

    async def _take_slot(
        self, rt: DeploymentRuntime, cand: Candidate, ctx: CallContext, wait_until: float
    ) -> int:
        ticket, granted = rt.scheduler.acquire(ctx.priority)
        if granted:
            return int(ticket)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        rt.waiters[ticket] = fut
        try:
            async with asyncio.timeout_at(wait_until):
                await fut
        except BaseException as e:
            rt.waiters.pop(ticket, None)
            rt.wake(rt.scheduler.cancel(ticket))
            if not isinstance(e, TimeoutError):
                raise
            name = cand.deployment.name
            if wait_until < ctx.deadline:
                raise QueueTimeoutError(
                    f"waited {self._cfg.fallback_wait_share:.0%} of the time left for a slot of"
                    f" {name} (limit {rt.scheduler.limit}); trying the next candidate",
                    deployment=name,
                ) from None
            raise DeadlineExceededError(
                "total timeout exceeded while queued", provider=name, model=cand.model
            ) from None
        return int(ticket)

    async def _attempt(
        self,
        cand: Candidate,
        ctx: CallContext,
        send: Callable[[Candidate], Awaitable[T]],
        hold: bool,
        others_left: bool,
    ) -> tuple[T, Lease | None]:
        """One attempt: reserve rate capacity, take a slot, ask the breaker, send.

        With ``others_left`` the waits before sending (limiter, slot) are bounded by a
        share of the time left, so a degraded candidate cannot hold the call until its
        deadline while a healthy one sits idle. A reservation not sent is refunded on
        every path (refusal, timeout, cancellation).
        """
        rt = self.runtimes[cand.deployment.name]
        loop = asyncio.get_running_loop()
        now = loop.time()
        wait_until = ctx.deadline
        if others_left:
            wait_until = now + (ctx.deadline - now) * self._cfg.fallback_wait_share
        costs = self._costs(rt, ctx)
        reserved = False
        lease: Lease | None = None
        try:
            if costs:
                delay = float(self.limiter.reserve_many(costs))
                reserved = True
                rt.outstanding += 1
                if delay > 0:
                    if now + delay >= wait_until:
                        why = "past the deadline" if wait_until >= ctx.deadline else "too far off"
                        raise ClientThrottledError(
                            f"client-side rate limit: next slot in {delay:.3f}s is {why}",
                            retry_after=delay,
                            provider=cand.deployment.name,
                            model=cand.model,
                        )
                    await self._sleep(delay)
            queued_at = time.perf_counter()
            ticket = await self._take_slot(rt, cand, ctx, wait_until)
            ctx.queue_wait_s += time.perf_counter() - queued_at
            lease = Lease(rt, ticket, cand.deployment.health)
            if not rt.breaker.try_acquire():
                raise CircuitOpenError(
                    f"circuit open for {cand.deployment.name}",
                    deployment=cand.deployment.name,
                    retry_after=float(rt.breaker.retry_after_s),
                )
            lease.permitted = True
            if reserved:  # the capacity is spent on this send from here on
                reserved = False
                rt.outstanding -= 1
            ctx.sending = ctx.sent = True
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
            if reserved:
                self._refund(costs)
                rt.outstanding -= 1
            if lease is not None:
                lease.finish(e)
            if not isinstance(e, asyncio.CancelledError):
                ctx.sending = False
            raise
        ctx.sending = False
        if hold:
            return result, lease
        lease.finish(None)
        return result, None

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
    ) -> tuple[T, Candidate, Lease | None]:
        """Try the candidates in order, with retries, until one answers or all have failed.

        With ``hold`` the winning attempt's slot stays taken: the caller gets a
        :class:`Lease` and must ``finish`` it (a stream, when it ends).
        """
        # The deadline is enforced where a call can wait (queue, rate-limit sleep,
        # backoff, the send itself), not by one timer around everything: arming a
        # timer costs several microseconds, which an in-process answer need not pay.
        return await self._run(cands, ctx, send, on_attempt_end, asyncio.get_running_loop(), hold)

    def _final_error(
        self, ctx: CallContext, last: LLMRelayError | None, next_cand: Candidate | None = None
    ) -> LLMRelayError:
        if last is None:
            return DeadlineExceededError("total timeout exceeded before any attempt")
        if len({(a.provider, a.model) for a in ctx.attempts}) <= 1:
            if next_cand is not None and isinstance(last, QueueTimeoutError | ClientThrottledError):
                # it gave up waiting to try the next candidate, but the time ran out first
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
    ) -> tuple[T, Candidate, Lease | None]:
        last: LLMRelayError | None = None
        share = self._cfg.fallback_wait_share
        for idx, cand in enumerate(cands):
            rt = self.runtimes[cand.deployment.name]
            rt.budget.on_call()
            others_left = idx + 1 < len(cands)
            if idx > 0:
                ctx.fallbacks += 1
            tries = 0
            while True:
                if loop.time() >= ctx.deadline:
                    raise self._final_error(ctx, last, cand if idx and not tries else None)
                t0 = time.perf_counter()
                ctx.sent = False
                try:
                    result, lease = await self._attempt(cand, ctx, send, hold, others_left)
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
                    if not e.retryable:
                        raise
                    if isinstance(e, CircuitOpenError | QueueTimeoutError):
                        break
                    if isinstance(e, ClientThrottledError) and others_left:
                        break  # its limit has no room in time: the next one may
                    tries += 1
                    if tries > self._cfg.max_retries or not rt.budget.try_spend():
                        break
                    delay = self.backoff(tries, e)
                    now = loop.time()
                    if now + delay >= ctx.deadline:
                        break
                    if others_left and delay > (ctx.deadline - now) * share:
                        break  # waiting here would starve the candidates after it
                    ctx.retries += 1
                    await self._sleep(delay)
                    continue
                if on_attempt_end is not None:
                    on_attempt_end(cand, None, time.perf_counter() - t0, True)
                return result, cand, lease
        if last is None:
            raise AllProvidersFailedError("no candidate to try", attempts=ctx.attempts)
        raise self._final_error(ctx, last)
