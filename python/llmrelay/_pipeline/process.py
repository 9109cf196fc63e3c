"""The process stage: a provider's reply made the call's result (its cost, its
provider, latency and attempts, a structured call's ``parsed``), counted in the
metrics with its usage, and handed to the cache stage to store.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay._metrics import COST_COUNTER
from llmrelay._orchestrator import CallContext
from llmrelay._pipeline.cache import store
from llmrelay._pipeline.call import Prepared
from llmrelay._selection import Candidate
from llmrelay._structured_call import with_parsed
from llmrelay._types import ChatResponse, Usage

if TYPE_CHECKING:
    from llmrelay._engine import Engine

log = logging.getLogger("llmrelay")


def priced(eng: Engine, cand: Candidate, resp: ChatResponse) -> ChatResponse:
    """``resp`` with its cost (None when a price it needs is unknown)."""
    if resp.cost is not None:
        return resp
    dep = cand.deployment
    cost = eng.prices.cost(dep.kind, dep.name, cand.model or resp.model, resp.usage)
    if cost is None and resp.model and resp.model != cand.model:
        cost = eng.prices.cost(dep.kind, dep.name, resp.model, resp.usage)
    if cost is None:
        return resp
    return msgspec.structs.replace(resp, cost=cost)


def process(
    eng: Engine, p: Prepared, ctx: CallContext, cand: Candidate, result: Any, started: float
) -> ChatResponse:
    resp, attempt_latency = result
    resp = priced(eng, cand, resp)
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
    eng.metrics.core.record(
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
    store(eng, p, out)
    return out
