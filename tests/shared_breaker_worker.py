"""An agent process of the shared-breaker tests (started with ``multiprocessing`` spawn).

Each agent builds one ``LLMService`` whose one deployment points at a fake provider
and whose breaker is shared through Redis, then runs the commands it is sent, one at
a time, and answers each on its result queue:

- ``("calls", n)``: ``n`` calls one after the other; the answer lists ``"ok"`` or the
  error's class name for each.
- ``("until_ok", limit_s)``: call until one call succeeds (a refused call waits 50 ms
  and tries again) or ``limit_s`` passes; the answer lists every outcome.
- ``("wait_state", state, limit_s)``: wait until the deployment's cluster-wide state,
  as this process knows it, is ``state`` (or ``limit_s`` passes); answers the state.
- ``("wait_published", n, limit_s)``: wait until ``n`` outcomes are published.
- ``("snapshot",)``: ``snapshot().shared["breakers"]`` plus the local breaker's state.
- ``("stop",)``: close the service and end.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from llmrelay import (
    CacheConfig,
    CircuitBreakerConfig,
    DedupConfig,
    LLMService,
    LLMServiceConfig,
    OrchestratorConfig,
    ProviderConfig,
    SharedStateConfig,
)
from llmrelay.errors import LLMRelayError

DEPLOYMENT = "fake"
MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class AgentPlan:
    """What every agent of one test shares."""

    redis_url: str
    base_url: str
    namespace: str
    minimum_calls: int = 4
    window_size: int = 4
    failure_rate_threshold: float = 0.5
    open_duration_s: float = 60.0
    half_open_max_calls: int = 1
    op_timeout_s: float = 0.5
    call_timeout_s: float = 30.0


def agent_config(plan: AgentPlan) -> LLMServiceConfig:
    """One deployment on the fake, its breaker shared through ``plan.redis_url``."""
    return LLMServiceConfig(
        providers=[
            ProviderConfig(
                name=DEPLOYMENT,
                kind="openai",
                base_url=plan.base_url,
                api_key="sk-breaker-test",
                models=[MODEL],
            )
        ],
        default_model=f"{DEPLOYMENT}/{MODEL}",
        cache=CacheConfig(enabled=False),
        dedup=DedupConfig(enabled=False),
        orchestrator=OrchestratorConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(
            minimum_calls=plan.minimum_calls,
            window_size=plan.window_size,
            failure_rate_threshold=plan.failure_rate_threshold,
            open_duration_s=plan.open_duration_s,
            half_open_max_calls=plan.half_open_max_calls,
        ),
        shared=SharedStateConfig(
            url=plan.redis_url,
            namespace=plan.namespace,
            op_timeout_s=plan.op_timeout_s,
            limits=False,
            cache=False,
            dedup=False,
            breakers=True,
        ),
    )


def breakers(svc: LLMService) -> dict[str, Any]:
    """This process's view: ``snapshot().shared["breakers"]`` and the local breaker."""
    shared = svc.metrics.snapshot().shared
    out = dict(shared.get("breakers") or {})
    dep = (out.get("deployments") or {}).get(DEPLOYMENT, {})
    out["state"] = dep.get("state")
    out["local_state"] = svc._engine.orchestrator.runtimes[DEPLOYMENT].gate.breaker.state
    out["pid"] = os.getpid()
    return out


async def _call(svc: LLMService, plan: AgentPlan, text: str) -> str:
    try:
        await svc.achat(text, timeout=plan.call_timeout_s)
    except LLMRelayError as e:
        return type(e).__name__
    return "ok"


async def _wait(svc: LLMService, key: str, want: Any, limit_s: float) -> Any:
    """Poll ``key`` of this process's view until it is ``want`` (an int: at least
    ``want``) or ``limit_s`` passes; the last value seen."""
    end = time.monotonic() + limit_s
    while True:
        got = breakers(svc).get(key)
        if isinstance(want, int) and not isinstance(want, bool):
            done = got is not None and int(got) >= want
        else:
            done = got == want
        if done or time.monotonic() > end:
            return got
        await asyncio.sleep(0.02)


async def _run(plan: AgentPlan, commands: Any, results: Any) -> None:
    loop = asyncio.get_running_loop()
    async with LLMService(agent_config(plan)) as svc:
        await _wait(svc, "listening", True, 10.0)
        results.put(("ready", os.getpid()))
        n = 0
        while True:
            cmd = await loop.run_in_executor(None, commands.get)
            op = cmd[0]
            if op == "stop":
                results.put(("stopped", None))
                return
            if op == "calls":
                out = []
                for _ in range(cmd[1]):
                    n += 1
                    out.append(await _call(svc, plan, f"{os.getpid()} {n}"))
                results.put((op, out))
            elif op == "until_ok":
                out = []
                end = time.monotonic() + cmd[1]
                while time.monotonic() < end and len(out) < 1000:
                    n += 1
                    out.append(await _call(svc, plan, f"{os.getpid()} {n}"))
                    if out[-1] == "ok":
                        break
                    await asyncio.sleep(0.05)
                results.put((op, out))
            elif op == "wait_state":
                results.put((op, await _wait(svc, "state", cmd[1], cmd[2])))
            elif op == "wait_published":
                results.put((op, await _wait(svc, "published", cmd[1], cmd[2])))
            elif op == "snapshot":
                results.put((op, breakers(svc)))
            else:
                results.put(("error", f"unknown command {cmd!r}"))


def agent(plan: AgentPlan, commands: Any, results: Any) -> None:
    """The spawned agent's entry point."""
    asyncio.run(_run(plan, commands, results))
