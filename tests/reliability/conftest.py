"""The reliability suites' fakes run in processes of their own.

A fake served from a thread of the test's process freezes with it (a GC pause, a busy
loop), while the core's read and idle timers keep running on their own threads: the
"provider" then looks silent for reasons that are the test's, not the engine's. So these
suites talk to fakes spawned once per session (``FakeProvider.spawn``) and scripted
through their control channel; each test starts from a reset fake.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from llmrelay.testing import FakeProvider, SpawnedFake


@pytest.fixture(scope="session")
def spawned_fakes() -> Iterator[dict[str, SpawnedFake]]:
    handles: dict[str, SpawnedFake] = {}
    try:
        for protocol in ("openai", "anthropic", "ollama"):
            handles[protocol] = FakeProvider.spawn(protocol)  # type: ignore[arg-type]
        yield handles
    finally:
        for h in handles.values():
            h.close()


@pytest.fixture
def fakes(spawned_fakes: dict[str, SpawnedFake]) -> Iterator[dict[str, SpawnedFake]]:
    """The session's three out-of-process fakes, reset for this test."""
    for h in spawned_fakes.values():
        _settle(h)
        h.reset()
        if h.latency_s:
            h.latency_s = 0.0
        if h.stream_chunk_delay_s:
            h.stream_chunk_delay_s = 0.0
    yield spawned_fakes
    for h in spawned_fakes.values():
        assert h.process.poll() is None, f"the fake {h.protocol} process died"


def _settle(fake: SpawnedFake, quiet_s: float = 0.25, limit_s: float = 3.0) -> None:
    """Wait until the fake has received nothing new for ``quiet_s`` (at most ``limit_s``).

    A request the previous test's service had written before it closed can reach a fake
    lagging on a loaded machine after the reset, and would be counted for this test (seen
    once at load 15: 8 requests counted for 4 sent).
    """
    deadline = time.monotonic() + limit_s
    seen, since = fake.request_count, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.05)
        now = fake.request_count
        if now != seen:
            seen, since = now, time.monotonic()
