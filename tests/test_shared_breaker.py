"""Shared circuit breakers on a real ``redis-server`` (started per module on a free
loopback port, stopped by PID), with the fake provider in a process of its own and
agent processes started with ``multiprocessing`` ``spawn`` (tests/shared_breaker_worker.py).

No assertion is timed: waits are bounded polls with generous limits, and what is
asserted is who was refused, what reached the fake and what the counters say.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from llmrelay import (
    CacheConfig,
    CircuitBreakerConfig,
    DedupConfig,
    LLMService,
    LLMServiceConfig,
    OrchestratorConfig,
    ProviderConfig,
    SharedStateConfig,
    _core,
)
from llmrelay._shared import NOT_SHARED_YET
from llmrelay.errors import CircuitOpenError
from llmrelay.testing import FakeProvider
from redis_server import RedisServer, free_port, needs_redis
from shared_breaker_worker import DEPLOYMENT, MODEL, AgentPlan, agent

pytestmark = needs_redis

SPAWN = mp.get_context("spawn")
WAIT_S = 60.0  # the longest any one answer of an agent may take (a loaded machine)


@pytest.fixture
def fake() -> Iterator[Any]:
    with FakeProvider.spawn("openai") as f:
        yield f


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return str(request.node.name).replace("[", "-").replace("]", "")


class Agent:
    """One spawned agent process and its two queues."""

    def __init__(self, plan: AgentPlan) -> None:
        self.commands: Any = SPAWN.Queue()
        self.results: Any = SPAWN.Queue()
        self.proc = SPAWN.Process(
            target=agent, args=(plan, self.commands, self.results), daemon=True
        )
        self.proc.start()

    def send(self, *cmd: Any) -> None:
        self.commands.put(cmd)

    def answer(self) -> Any:
        kind, value = self.results.get(timeout=WAIT_S)
        assert kind != "error", value
        return value

    def ask(self, *cmd: Any) -> Any:
        self.send(*cmd)
        return self.answer()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.send("stop")
            self.proc.join(10)
        if self.proc.is_alive() and self.proc.pid is not None:
            os.kill(self.proc.pid, 9)
            self.proc.join(5)


def agents(plan: AgentPlan, n: int) -> list[Agent]:
    out = [Agent(plan) for _ in range(n)]
    for a in out:
        assert a.answer() == a.proc.pid  # ready: its subscription listens
    return out


@pytest.fixture
def crew() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    try:
        yield started
    finally:
        for a in started:
            a.stop()


def test_breakers_are_shared_now() -> None:
    assert "breakers" not in NOT_SHARED_YET


def test_failures_from_two_processes_open_it_for_a_third(
    redis: RedisServer, fake: Any, ns: str, crew: list[Agent]
) -> None:
    plan = AgentPlan(redis.url, fake.base_url, ns, minimum_calls=4, window_size=4)
    a, b, c = agents(plan, 3)
    crew.extend([a, b, c])
    fake.inject("server_error")
    # two failures each: below each local breaker's minimum of 4 calls
    assert "ok" not in a.ask("calls", 2)
    assert "ok" not in b.ask("calls", 2)
    assert a.ask("snapshot")["local_state"] == "closed"
    assert b.ask("snapshot")["local_state"] == "closed"
    # the fourth failure (seen by two processes) opened it: the third learns it
    assert c.ask("wait_state", "open", 20.0) == "open"
    fake.clear_faults()
    before = fake.request_count
    assert c.ask("calls", 1) == ["CircuitOpenError"]
    assert a.ask("wait_state", "open", 20.0) == "open"
    assert a.ask("calls", 1) == ["CircuitOpenError"]
    assert fake.request_count == before  # nothing reached the provider
    snaps = [x.ask("snapshot") for x in (a, b, c)]
    assert sum(s["opens"] for s in snaps) == 1
    assert snaps[2]["notices"] >= 1 and snaps[2]["local_state"] == "closed"
    assert snaps[2]["refused"] >= 1


def test_one_process_alone_opens_only_its_own_breaker(
    redis: RedisServer, fake: Any, ns: str, crew: list[Agent]
) -> None:
    plan = AgentPlan(redis.url, fake.base_url, ns, minimum_calls=4, window_size=4)
    a, b = agents(plan, 2)
    crew.extend([a, b])
    fake.inject("server_error")
    outcomes = a.ask("calls", 5)
    assert "ok" not in outcomes[:4] and outcomes[4] == "CircuitOpenError"  # its local breaker
    assert a.ask("wait_published", 4, 20.0) >= 4
    snap = a.ask("snapshot")
    assert snap["local_state"] == "open" and snap["state"] == "closed"
    assert snap["opens"] == 0
    fake.clear_faults()
    before = fake.request_count
    assert b.ask("calls", 1) == ["ok"]  # the deployment is not open for the others
    assert fake.request_count == before + 1
    assert b.ask("snapshot")["state"] == "closed"


def test_half_open_probes_are_counted_cluster_wide(
    redis: RedisServer, fake: Any, ns: str, crew: list[Agent]
) -> None:
    plan = AgentPlan(
        redis.url,
        fake.base_url,
        ns,
        minimum_calls=4,
        window_size=4,
        open_duration_s=1.0,
        half_open_max_calls=1,
    )
    a, b, c = agents(plan, 3)
    crew.extend([a, b, c])
    fake.inject("server_error")
    a.ask("calls", 2)
    b.ask("calls", 2)
    for x in (a, b, c):
        assert x.ask("wait_state", "open", 20.0) == "open"
    fake.clear_faults()
    fake.latency_s = 1.0  # the probe stays in flight while the others ask
    time.sleep(1.2)  # the open period (1 s) has passed everywhere
    for x in (a, b, c):
        x.send("until_ok", 30.0)
    rounds = [x.answer() for x in (a, b, c)]
    assert all(r[-1] == "ok" for r in rounds), rounds
    assert all(o in ("ok", "CircuitOpenError") for r in rounds for o in r), rounds
    snaps = [x.ask("snapshot") for x in (a, b, c)]
    # one probe permit in the whole cluster; its success closed the deployment
    assert sum(s["probes"] for s in snaps) == 1, snaps
    assert sum(s["closes"] for s in snaps) == 1, snaps
    assert sum(s["probe_denials"] for s in snaps) >= 1, snaps
    assert all(s["state"] == "closed" for s in snaps), snaps


def test_a_permit_left_unused_goes_back_to_the_cluster(
    redis: RedisServer, fake: Any, ns: str, crew: list[Agent]
) -> None:
    plan = AgentPlan(
        redis.url, fake.base_url, ns, minimum_calls=4, window_size=4, open_duration_s=1.0
    )
    a, b = agents(plan, 2)
    crew.extend([a, b])
    fake.inject("server_error")
    a.ask("calls", 2)
    b.ask("calls", 2)
    for x in (a, b):
        assert x.ask("wait_state", "open", 20.0) == "open"
    fake.clear_faults()
    time.sleep(1.2)  # the open period has passed
    # a's call is refused while it claims the one permit; then a calls no more
    assert a.ask("calls", 1) == ["CircuitOpenError"]
    assert a.ask("wait_state", "half_open", 20.0) == "half_open"
    # b gets through once a's unused permit went back (after about a second)
    outcomes = b.ask("until_ok", 30.0)
    assert outcomes[-1] == "ok", outcomes
    sa, sb = a.ask("snapshot"), b.ask("snapshot")
    assert sa["probes"] == 1 and sa["permits_returned"] == 1, sa
    assert sb["probes"] == 1 and sb["closes"] == 1, sb
    assert a.ask("wait_state", "closed", 20.0) == "closed"


def _solo_config(url: str, base_url: str, ns: str, *, cluster: bool = False) -> LLMServiceConfig:
    return LLMServiceConfig(
        providers=[
            ProviderConfig(
                name=DEPLOYMENT,
                kind="openai",
                base_url=base_url,
                api_key="sk-breaker-test",
                models=[MODEL],
            )
        ],
        default_model=f"{DEPLOYMENT}/{MODEL}",
        cache=CacheConfig(enabled=False),
        dedup=DedupConfig(enabled=False),
        orchestrator=OrchestratorConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(minimum_calls=2, window_size=2),
        shared=SharedStateConfig(
            url=url,
            cluster=cluster,
            namespace=ns,
            op_timeout_s=0.05,
            limits=False,
            cache=False,
            dedup=False,
        ),
    )


def test_redis_down_leaves_the_local_breaker_working(
    ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    async def run() -> dict[str, Any]:
        async with FakeProvider("openai") as fake:
            fake.inject("server_error")
            async with LLMService(_solo_config(dead, fake.base_url, ns)) as svc:
                errors = []
                for i in range(3):
                    try:
                        await asyncio.wait_for(svc.achat(f"q{i}"), WAIT_S)
                    except Exception as e:
                        errors.append(type(e).__name__)
                assert errors[:2] != ["CircuitOpenError"] * 2
                assert errors[2] == "CircuitOpenError"  # the local breaker opened
                assert len(fake.requests) == 2
                end = time.monotonic() + 20
                snap = svc.metrics.snapshot().shared["breakers"]
                while snap["publish_errors"] < 2 and time.monotonic() < end:
                    await asyncio.sleep(0.02)
                    snap = svc.metrics.snapshot().shared["breakers"]
                return dict(snap)

    with caplog.at_level(logging.WARNING, logger="llmrelay"):
        snap = asyncio.run(run())
    assert snap["publish_errors"] == 2 and snap["published"] == 0
    assert snap["listening"] is False
    assert snap["deployments"][DEPLOYMENT]["state"] == "closed"


def _state(svc: LLMService) -> str:
    return str(svc.metrics.snapshot().shared["breakers"]["deployments"][DEPLOYMENT]["state"])


def test_a_hung_redis_costs_no_call_its_time(ns: str) -> None:
    """Redis stopped (SIGSTOP) after the service connected: publishes time out in
    the background, counted; the local breaker opens as without Redis."""
    server = RedisServer()

    async def run() -> dict[str, Any]:
        async with FakeProvider("openai") as fake:
            fake.inject("server_error")
            async with LLMService(_solo_config(server.url, fake.base_url, ns)) as svc:
                for _ in range(500):
                    if svc.metrics.snapshot().shared["breakers"]["listening"]:
                        break
                    await asyncio.sleep(0.02)
                server.pause()
                try:
                    errors = []
                    for i in range(3):
                        try:
                            await asyncio.wait_for(svc.achat(f"h{i}"), WAIT_S)
                        except Exception as exc:
                            errors.append(type(exc).__name__)
                    assert errors[2] == "CircuitOpenError" and "CircuitOpenError" not in errors[:2]
                    assert len(fake.requests) == 2
                    snap = svc.metrics.snapshot().shared["breakers"]
                    for _ in range(1000):
                        if snap["publish_errors"] >= 2:
                            break
                        await asyncio.sleep(0.02)
                        snap = svc.metrics.snapshot().shared["breakers"]
                    return dict(snap)
                finally:
                    server.resume()

    try:
        snap = asyncio.run(run())
    finally:
        server.stop()
    assert snap["publish_errors"] == 2 and snap["published"] == 0
    assert snap["deployments"][DEPLOYMENT]["state"] == "closed"


@pytest.mark.parametrize("topology", ["node", "cluster"])
def test_two_services_in_one_process_count_as_two_members(
    request: pytest.FixtureRequest, topology: str, ns: str
) -> None:
    """Each service is a member of its own (its hub's nonce): two services of one
    process failing once each open the deployment for both; on one node and on a
    three-master Redis Cluster (the breaker's keys on one slot, its notices
    broadcast)."""
    server = request.getfixturevalue("redis" if topology == "node" else "redis_cluster")

    async def run() -> tuple[list[str], dict[str, Any], int]:
        async with FakeProvider("openai") as fake:
            fake.inject("server_error")
            base = _solo_config(server.url, fake.base_url, ns, cluster=topology == "cluster")
            assert base.shared is not None
            cfg = msgspec.structs.replace(
                base, shared=msgspec.structs.replace(base.shared, op_timeout_s=0.5)
            )
            async with LLMService(cfg) as one, LLMService(cfg) as two:
                for svc in (one, two):
                    for _ in range(500):
                        if svc.metrics.snapshot().shared["breakers"]["listening"]:
                            break
                        await asyncio.sleep(0.02)
                outs = []
                for svc in (one, two):
                    try:
                        await svc.achat("fail once")
                    except Exception as exc:
                        outs.append(type(exc).__name__)
                for _ in range(1000):
                    if _state(one) == "open" and _state(two) == "open":
                        break
                    await asyncio.sleep(0.02)
                before = len(fake.requests)
                with pytest.raises(CircuitOpenError) as refused:
                    await one.achat("refused")
                assert refused.value.retry_after is None or refused.value.retry_after > 0
                sent = len(fake.requests) - before
                return outs, dict(one.metrics.snapshot().shared["breakers"]), sent

    outs, snap, sent = asyncio.run(run())
    assert "CircuitOpenError" not in outs  # each local breaker saw one failure of 2
    assert sent == 0
    assert snap["deployments"][DEPLOYMENT]["state"] == "open"


def test_a_gate_shares_its_breaker_once() -> None:
    hub = _core.SharedBreakers("redis://127.0.0.1:1", namespace="ns", op_timeout_s=0.02)
    gate = _core.Gate("dep", limiter=_core.RateLimiter())
    assert gate.shared_breaker_stats() is None
    gate.share_breaker(hub)
    st = gate.shared_breaker_stats()
    assert st is not None and st["state"] == "closed" and st["published"] == 0
    with pytest.raises(Exception, match="shared already"):
        gate.share_breaker(hub)
    with pytest.raises(Exception, match="namespace"):
        _core.SharedBreakers("redis://127.0.0.1:1", namespace="a{b}")
    assert "hunter2" not in repr(_core.SharedBreakers("redis://u:hunter2@127.0.0.1:1"))
