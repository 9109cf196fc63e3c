"""Worker processes of the cross-process cache and dedup tests (started with the
``spawn`` context of multiprocessing, so each is a fresh interpreter).

Each builds its own LLMService on a fake provider that runs in its own process
(``FakeProvider.spawn``, started by the test), with the shared tier on the
test's ``redis-server``, and reports through a queue.
"""

from __future__ import annotations

import os
from typing import Any

from llmrelay import CacheConfig, LLMService, LLMServiceConfig, ProviderConfig, SharedStateConfig

QUESTION_KW: dict[str, Any] = {"temperature": 0, "max_tokens": 32}


def service_config(
    redis_url: str,
    namespace: str,
    base_url: str,
    *,
    disk_path: str | None = None,
    cache: bool = True,
    dedup: bool = True,
    lease_s: float = 3.0,
    cluster: bool = False,
) -> LLMServiceConfig:
    """One fake OpenAI deployment, the shared cache tier and cross-process dedup."""
    return LLMServiceConfig(
        providers=[
            ProviderConfig(
                name="openai",
                kind="openai",
                base_url=base_url,
                api_key="sk-test-openai-key",
                models=["gpt-4o-mini"],
            )
        ],
        default_model="openai/gpt-4o-mini",
        cache=CacheConfig(disk_path=disk_path),
        shared=SharedStateConfig(
            url=redis_url,
            cluster=cluster,
            namespace=namespace,
            op_timeout_s=0.5,  # a loaded 2-core CI machine: generous, still bounded
            limits=False,
            breakers=False,
            cache=cache,
            dedup=dedup,
            dedup_lease_s=lease_s,
        ),
    )


def ask(
    cfg: dict[str, Any],
    question: str,
    out: Any,
    go: Any = None,
    hold: Any = None,
    timeout_s: float = 60.0,
) -> None:
    """Ask ``question`` once and put ``{pid, text, cached, counters, cache, dedup}`` on ``out``.

    With ``go`` (an Event), say ``ready`` first and wait for it (a common start line).
    With ``hold`` (an Event), keep the service open after answering until it is set.
    """
    config = service_config(**cfg)
    with LLMService(config) as svc:
        if go is not None:
            out.put({"pid": os.getpid(), "ready": True})
            go.wait(60)
        out.put({"pid": os.getpid(), "asking": True})
        r = svc.chat(question, timeout=timeout_s, **QUESTION_KW)
        snap = svc.metrics.snapshot()
        counters: dict[str, int] = {}
        for s in snap.series:
            for k, v in s.counters.items():
                counters[k] = counters.get(k, 0) + v
        out.put(
            {
                "pid": os.getpid(),
                "text": r.text,
                "cached": r.cached,
                "counters": counters,
                "cache": dict(snap.cache),
                "dedup": dict(snap.dedup),
                "disk_tier": dict(snap.disk_tier),
            }
        )
        if hold is not None:
            hold.wait(60)
