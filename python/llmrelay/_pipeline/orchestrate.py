"""The orchestrate stage: one call's attempts over its candidates, through each
deployment's gate (admission, retries with backoff, fallbacks, budgets), each
attempt recorded in the metrics whatever its outcome. The loop itself is
:class:`~llmrelay._orchestrator.RequestOrchestrator`; this module gives it the call's
sender (the execute stage with budgets around it) and its attempt hook.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from llmrelay._budget import Budget, Reservation
from llmrelay._orchestrator import AttemptHook, CallContext
from llmrelay._pipeline.call import Prepared
from llmrelay._pipeline.execute import send_chat
from llmrelay._pipeline.process import priced, process
from llmrelay._selection import Candidate
from llmrelay._types import ChatResponse
from llmrelay.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ClientThrottledError,
    ConfigError,
    DeadlineExceededError,
    InvalidRequestError,
    LLMRelayError,
)

if TYPE_CHECKING:
    from llmrelay._engine import Engine

log = logging.getLogger("llmrelay")


def chat_usage(result: tuple[ChatResponse, float]) -> tuple[int, int]:
    """The real usage of a chat attempt's result, settled with the attempt in its gate."""
    u = result[0].usage
    return u.prompt_tokens, u.completion_tokens


def deadline(eng: Engine, timeout: float | None) -> float:
    total = eng.config.timeouts.total_s if timeout is None else timeout
    if isinstance(total, bool) or not isinstance(total, int | float) or not total > 0:
        raise InvalidRequestError(f"invalid timeout={timeout!r}: must be > 0", field="timeout")
    return asyncio.get_running_loop().time() + float(total)


def record_attempt(
    eng: Engine, cand: Candidate, err: BaseException | None, latency: float, sent: bool
) -> None:
    dep = cand.deployment
    if err is None:
        return  # successes are recorded with their usage in _process
    if isinstance(err, BudgetExceededError):
        # refused by a USD budget before sending: not the deployment's failure
        eng.metrics.core.incr(dep.kind, cand.model, dep.name, "budget_refused")
        return
    if not sent and not isinstance(err, CircuitOpenError):
        # refused before anything went out: its own outcome, no latency, no request
        name = "throttled" if isinstance(err, ClientThrottledError) else "queue_timeouts"
        eng.metrics.core.incr(dep.kind, cand.model, dep.name, name)
        return
    if isinstance(err, DeadlineExceededError):
        name = "DeadlineExceeded"  # the caller's budget, not the deployment's fault
    elif isinstance(err, LLMRelayError):
        name = type(err).__name__
    else:
        name = "Cancelled"
    eng.metrics.core.record(
        dep.kind,
        cand.model,
        dep.name,
        [("requests", 1), (f"failures.{name}", 1)],
        [("latency", latency)],
    )
    if not isinstance(err, DeadlineExceededError | asyncio.CancelledError):
        dep.health.observe(latency, 0, ok=False)


async def orchestrated(eng: Engine, p: Prepared, timeout: float | None) -> ChatResponse:
    eng.pool.maybe_sweep()
    ctx = CallContext(p.priority, deadline(eng, timeout), p.est_in, p.est_out)
    started = time.perf_counter()
    send = sender(eng, p, ctx)
    hook: AttemptHook = eng.attempt_hook
    if p.trace is not None:
        hook = p.trace.hooked(ctx, hook)
    resp, cand, _ = await eng.orchestrator.run(
        eng.selector.usable(p.cands) or p.cands,
        ctx,
        send,
        hook,
        usage_of=chat_usage,
    )
    return process(eng, p, ctx, cand, resp, started)


def sender(eng: Engine, p: Prepared, ctx: CallContext) -> Callable[[Candidate], Awaitable[Any]]:
    async def send(cand: Candidate) -> tuple[ChatResponse, float]:
        dep = cand.deployment
        remaining = ctx.deadline - asyncio.get_running_loop().time()
        t0 = time.perf_counter()
        if dep.adapter.in_process:
            client, transport = None, None
        else:
            client, transport = eng.pool.route(dep)
        hold = reserve_budgets(eng, p, cand)
        try:
            resp = await send_chat(
                client,
                transport,
                dep,
                cand.model,
                p.req,
                remaining,
                eng.orchestrator.observe_reply_headers,
            )
        except BaseException:
            if hold is not None:
                hold.refund()
            raise
        resp = priced(eng, cand, resp)
        if hold is not None:
            hold.settle(resp.cost.total_usd if resp.cost is not None else None)
        return resp, time.perf_counter() - t0

    return send


def reserve_budgets(eng: Engine, p: Prepared, cand: Candidate) -> Reservation | None:
    """Reserve the most the call can cost in the deployment's and the views' budgets;
    BudgetExceededError when one has no room (nothing is sent)."""
    dep = cand.deployment
    own = eng.budgets.get(dep.name)
    budgets = [own, *p.budgets] if own is not None else list(p.budgets)
    if not budgets:
        return None
    est = eng.prices.estimate_usd(dep.kind, dep.name, cand.model, p.est_in, p.est_out)
    if est is None:
        raise ConfigError(
            f"invalid pricing: a USD budget applies to {dep.name}/{cand.model} but its price"
            " is unknown; add it to LLMServiceConfig.pricing",
            field="pricing",
        )
    return Budget.reserve_all(budgets, est, cand.model)
