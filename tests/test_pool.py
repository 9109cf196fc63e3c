"""ProviderPool: one client per deployment and loop, idle clients closed, health view."""

from __future__ import annotations

import asyncio

from llmrelay import LLMServiceConfig, ProviderConfig
from llmrelay._pool import DeploymentHealth, ProviderPool


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _pool(clock: Clock) -> ProviderPool:
    cfg = LLMServiceConfig(
        providers=[
            ProviderConfig(name="a", kind="openai", base_url="http://127.0.0.1:1/v1", api_key="k1"),
            ProviderConfig(name="b", kind="openai", base_url="http://127.0.0.1:2/v1", api_key="k2"),
        ]
    )
    return ProviderPool(
        cfg,
        adapter_for=lambda p, url, key: None,
        default_base_url=lambda kind: "http://127.0.0.1:3",
        idle_timeout_s=10.0,
        clock=clock,
    )


async def test_idle_clients_closed_and_rebuilt() -> None:
    clock = Clock()
    pool = _pool(clock)
    a, b = pool.get("a"), pool.get("b")
    ca = pool.client(a)
    assert pool.client(a) is ca
    clock.t = 8.0
    pool.client(b)
    clock.t = 12.0
    assert await pool.close_idle() == 1  # a idle for 12 s, b for 4 s
    assert ca.is_closed
    assert pool.client(a) is not ca
    await pool.aclose_loop(asyncio.get_running_loop())
    assert not pool.loops()


async def test_sweep_runs_when_due() -> None:
    clock = Clock()
    pool = _pool(clock)
    c = pool.client(pool.get("a"))
    clock.t = 20.0
    pool.maybe_sweep()
    await pool.aclose_loop(asyncio.get_running_loop())  # waits for the sweep
    assert c.is_closed


def test_scopes_differ_per_credential_and_hide_the_key() -> None:
    pool = _pool(Clock())
    sa, sb = pool.get("a").credential_scope, pool.get("b").credential_scope
    assert sa != sb and "k1" not in sa and len(sa) == 16
    assert "k1" not in repr(pool.get("a"))


def test_health_ewma() -> None:
    h = DeploymentHealth()
    h.observe(1.0, 10, ok=True)
    h.observe(2.0, 10, ok=True)
    assert h.ewma_latency_s is not None and 1.0 < h.ewma_latency_s < 2.0
    h.observe(0.5, 0, ok=False)
    assert h.recent_errors == 1 and h.requests == 3
