"""Worker processes sharing one limit through Redis, each with its own LLMService.

Started with ``multiprocessing`` (``spawn``) by tests/test_shared_service.py and by
``make demo-cluster`` (tests/cluster_demo.py). Each worker builds a service whose
one deployment points at a fake provider and has ``shared`` limits on the given
Redis, says it is ready, waits for the common start, calls ``achat`` from several
tasks until the end, and reports the wall times of the replies it got back by the
end (each one an admission inside the window), its errors by type and the service's
``snapshot().shared``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llmrelay import (
    CacheConfig,
    DedupConfig,
    LLMService,
    LLMServiceConfig,
    OrchestratorConfig,
    ProviderConfig,
    RateLimitConfig,
    SharedStateConfig,
)
from llmrelay.errors import LLMRelayError

DEPLOYMENT = "fake"
MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class Plan:
    """What every worker of one run shares."""

    redis_url: str
    base_url: str
    namespace: str
    #: requests per minute and burst of the one shared limit
    rpm: float
    burst: int
    tokens_per_minute: int | None = None
    concurrency: int = 4
    call_timeout_s: float = 30.0
    op_timeout_s: float = 0.5
    on_unavailable: str = "local_share"


@dataclass
class Report:
    """What one worker saw."""

    pid: int
    replies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)


def service_config(plan: Plan) -> LLMServiceConfig:
    """One deployment on the fake, its limit shared through ``plan.redis_url``."""
    return LLMServiceConfig(
        providers=[
            ProviderConfig(
                name=DEPLOYMENT,
                kind="openai",
                base_url=plan.base_url,
                api_key="sk-cluster-test",
                models=[MODEL],
                rate_limit=RateLimitConfig(
                    requests_per_minute=plan.rpm,
                    burst=plan.burst,
                    tokens_per_minute=plan.tokens_per_minute,
                ),
            )
        ],
        default_model=f"{DEPLOYMENT}/{MODEL}",
        cache=CacheConfig(enabled=False),
        dedup=DedupConfig(enabled=False),
        # every refusal is retried by the worker itself, not by the service
        orchestrator=OrchestratorConfig(max_retries=0),
        shared=SharedStateConfig(
            url=plan.redis_url,
            namespace=plan.namespace,
            op_timeout_s=plan.op_timeout_s,
            on_unavailable=plan.on_unavailable,  # type: ignore[arg-type]
            cache=False,
            breakers=False,
            dedup=False,
        ),
    )


async def _hammer(plan: Plan, start: float, end: float) -> Report:
    report = Report(pid=os.getpid())
    errors: Counter[str] = Counter()
    async with LLMService(service_config(plan)) as svc:
        await asyncio.sleep(max(0.0, start - time.time()))  # the common start line

        async def one_task(t: int) -> None:
            i = 0
            while time.time() < end:
                i += 1
                try:
                    await svc.achat(f"{os.getpid()} {t} {i}", timeout=plan.call_timeout_s)
                except LLMRelayError as e:
                    errors[type(e).__name__] += 1
                    retry = getattr(e, "retry_after", None) or 0.01
                    await asyncio.sleep(min(float(retry), max(0.0, end - time.time()), 0.05))
                    continue
                done = time.time()
                if done <= end:  # a reply after the end is outside the window
                    report.replies.append(done)

        tasks = [asyncio.create_task(one_task(t)) for t in range(plan.concurrency)]
        await asyncio.sleep(max(0.0, end - time.time()))
        for task in tasks:
            task.cancel()  # calls booked past the end give their booking back
        await asyncio.gather(*tasks, return_exceptions=True)
        report.shared = svc.metrics.snapshot().shared
    report.errors = dict(errors)
    return report


def hammer(plan: Plan, ready: Any, go: Any, window: Any, out: Any) -> None:
    """A spawned worker: ready -> wait for ``go`` -> hammer ``window`` (start, end)."""
    ready.put(os.getpid())
    if not go.wait(120):
        return
    start, end = window[0], window[1]
    out.put(asyncio.run(_hammer(plan, start, end)))


async def _hold(plan: Plan) -> None:
    async with LLMService(service_config(plan)) as svc:
        await svc.achat("held until killed", timeout=plan.call_timeout_s)


def hold_one_request(plan: Plan) -> None:
    """A spawned worker that sends one request and waits for its reply (to be killed)."""
    asyncio.run(_hold(plan))
