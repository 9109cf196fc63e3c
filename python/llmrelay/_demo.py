"""``llmrelay demo``: a mixed workload through a real LLMService, with live progress.

Uses a local Ollama if one answers at ``OLLAMA_HOST``; otherwise starts the
bundled fake providers on 127.0.0.1 with realistic latency and faults. The
workload mixes priorities, duplicate requests in flight (dedup), repeats
(cache), streams, a failing primary with a fallback, and a rate-limited
deployment; it ends with a metrics table.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import httpx

from llmrelay._config import (
    CircuitBreakerConfig,
    LLMServiceConfig,
    ModelSelectionStrategy,
    OrchestratorConfig,
    ProviderConfig,
    RateLimitConfig,
    RequestTimeouts,
)
from llmrelay._service import LLMService
from llmrelay.errors import LLMRelayError

__all__ = ["run_demo"]

_TOPICS = [
    "tides",
    "compilers",
    "bees",
    "rust",
    "jazz",
    "volcanoes",
    "chess",
    "tea",
    "maps",
    "owls",
]


async def _ollama_model() -> str | None:
    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
    url = host if host.startswith("http") else f"http://{host}"
    try:
        async with httpx.AsyncClient(timeout=0.5) as c:
            r = await c.get(f"{url}/api/tags")
            models = r.json().get("models") or []
    except (httpx.HTTPError, ValueError):
        return None
    return f"{url}|{models[0]['name']}" if models else None


async def _fake_config(stack: AsyncExitStack, seed: int) -> tuple[LLMServiceConfig, str]:
    from llmrelay.testing import FakeProvider

    primary = await stack.enter_async_context(FakeProvider("openai", latency_s=0.03))
    fallback = await stack.enter_async_context(FakeProvider("anthropic", latency_s=0.04))
    local = await stack.enter_async_context(FakeProvider("ollama", latency_s=0.015))
    primary.inject("unavailable", ratio=0.15, seed=seed)
    primary.inject("rate_limit", ratio=0.1, seed=seed + 1, retry_after=0.05)
    config = LLMServiceConfig(
        providers=[
            ProviderConfig(
                name="openai",
                kind="openai",
                base_url=primary.base_url,
                api_key="demo-key",
                models=["gpt-4o-mini"],
            ),
            ProviderConfig(
                name="claude",
                kind="anthropic",
                base_url=fallback.base_url,
                api_key="demo-key",
                models=["claude-haiku-4-5"],
            ),
            ProviderConfig(
                name="local",
                kind="ollama",
                base_url=local.base_url,
                models=["llama3.2"],
                rate_limit=RateLimitConfig(requests_per_minute=3000, burst=10),
            ),
        ],
        default_model="openai/gpt-4o-mini",
        orchestrator=OrchestratorConfig(
            max_concurrency=32, max_retries=2, backoff_initial_s=0.02, backoff_max_s=0.2
        ),
        circuit_breaker=CircuitBreakerConfig(minimum_calls=20, window_size=40, open_duration_s=1.0),
        selection=ModelSelectionStrategy(
            fallbacks={"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]}
        ),
        timeouts=RequestTimeouts(total_s=10.0),
    )
    return config, "fake providers on 127.0.0.1 (openai primary with 25% faults, claude fallback)"


def _ollama_config(spec: str) -> tuple[LLMServiceConfig, str]:
    url, model = spec.split("|", 1)
    config = LLMServiceConfig(
        providers=[ProviderConfig(name="local", kind="ollama", base_url=url, models=[model])],
        default_model=f"local/{model}",
        timeouts=RequestTimeouts(total_s=120.0),
    )
    return config, f"local Ollama at {url} ({model})"


def _workload(n: int, rng: random.Random, default: str, local: str, fallback: str) -> list[Any]:
    jobs: list[Any] = []
    while len(jobs) < n:
        r = rng.random()
        prio = rng.choice([0, 1, 2, 2, 2, 3, 4])
        if r < 0.3:
            jobs.append(("chat", default, f"Explain topic #{len(jobs)} briefly.", prio))
        elif r < 0.5:
            jobs.append(("chat", default, f"One fact about {rng.choice(_TOPICS)}.", prio))
        elif r < 0.65:
            prompt = f"Summarise {rng.choice(_TOPICS)} in a line (burst {len(jobs)})."
            jobs.extend(("chat", default, prompt, prio) for _ in range(5))
        elif r < 0.8:
            jobs.append(
                ("stream", fallback, f"Tell a short story about {rng.choice(_TOPICS)}.", prio)
            )
        else:
            jobs.append(("chat", local, f"Local question {len(jobs)}.", prio))
    return jobs[:n]


async def run_demo(*, requests: int, seed: int, use_ollama: bool, live: bool) -> int:
    """Run the demo workload; returns the process exit code."""
    rng = random.Random(seed)
    async with AsyncExitStack() as stack:
        spec = await _ollama_model() if use_ollama else None
        if spec:
            config, where = _ollama_config(spec)
            model = config.default_model or ""
            local = fallback = model
        else:
            config, where = await _fake_config(stack, seed)
            model, local, fallback = (
                "openai/gpt-4o-mini",
                "local/llama3.2",
                "claude/claude-haiku-4-5",
            )
        print(f"llmrelay demo: {requests} calls against {where}")
        jobs = _workload(requests, rng, model, local, fallback)
        outcomes: Counter[str] = Counter()
        svc = await stack.enter_async_context(LLMService(config))
        started = time.perf_counter()
        progress = _Progress(len(jobs), live)

        async def run(job: Any) -> None:
            kind, m, prompt, prio = job
            try:
                if kind == "stream":
                    parts = [
                        c.text async for c in svc.astream(prompt, m, priority=prio, temperature=0)
                    ]
                    outcomes["stream ok" if parts else "stream empty"] += 1
                else:
                    r = await svc.achat(prompt, m, priority=prio, temperature=0)
                    outcomes["cached" if r.cached else f"ok via {r.provider}"] += 1
            except LLMRelayError as e:
                outcomes[f"error {type(e).__name__}"] += 1
            progress.advance(outcomes)

        with progress:
            # three waves: duplicates inside a wave share a call (dedup), repeats in a
            # later wave are answered from the cache
            third = max(1, len(jobs) // 3)
            for start in range(0, len(jobs), third):
                await asyncio.gather(*(run(j) for j in jobs[start : start + third]))
        elapsed = time.perf_counter() - started
        _report(svc, outcomes, elapsed, len(jobs))
    return 0 if sum(v for k, v in outcomes.items() if k.startswith("error")) < len(jobs) else 1


class _Progress:
    """A rich progress bar when a terminal is there; a few plain lines otherwise."""

    def __init__(self, total: int, live: bool) -> None:
        self.total = total
        self.done = 0
        self._bar: Any = None
        self._task: Any = None
        if live:
            try:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

                self._bar = Progress(
                    TextColumn("[bold]calls"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.description}"),
                )
            except ImportError:
                self._bar = None

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def advance(self, outcomes: Counter[str]) -> None:
        self.done += 1
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=summary)
        elif self.done % max(1, self.total // 4) == 0 or self.done == self.total:
            print(f"  {self.done}/{self.total}  {summary}")


def _report(svc: LLMService, outcomes: Counter[str], elapsed: float, n: int) -> None:
    snap = svc.metrics.snapshot()
    rows = []
    for s in snap.series:
        lat = s.histograms.get("latency", {})
        br = snap.breakers.get(s.deployment, {})
        conc = snap.concurrency.get(s.deployment, {})
        failures = sum(v for k, v in s.counters.items() if k.startswith("failures."))
        rows.append(
            [
                f"{s.deployment}/{s.model}",
                str(s.counter("requests")),
                str(s.counter("successes")),
                str(failures),
                str(s.counter("retries")),
                str(s.counter("fallbacks")),
                str(s.counter("cache_hits.memory") + s.counter("cache_hits.disk")),
                str(s.counter("dedup_joins")),
                f"{lat.get('p50_s', 0) * 1000:.1f}",
                f"{lat.get('p99_s', 0) * 1000:.1f}",
                str(br.get("state", "-")),
                f"{conc.get('limit', 0):.0f}",
            ]
        )
    head = [
        "deployment/model",
        "req",
        "ok",
        "fail",
        "retry",
        "fallbk",
        "cache",
        "dedup",
        "p50 ms",
        "p99 ms",
        "breaker",
        "limit",
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"llmrelay demo: {n} calls in {elapsed:.2f}s ({n / elapsed:.0f}/s)")
        for h in head:
            table.add_column(h, justify="left" if h == "deployment/model" else "right")
        for r in rows:
            table.add_row(*r)
        Console(width=max(132, Console().width)).print(table)
    except ImportError:
        print(f"{n} calls in {elapsed:.2f}s")
        print("  ".join(head))
        for r in rows:
            print("  ".join(r))
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
