"""API keys never leak: not in reprs, logs, errors, metrics, cache keys or cache files.

The keys are distinctive canaries; every check looks for their distinctive middle, so a
half-masked key (``sk-SECRET-can***``) counts as a leak too. Cache entries of one
credential are never served to another.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import pytest

from llmrelay import (
    CacheConfig,
    LLMService,
    LLMServiceConfig,
    ModelSelectionStrategy,
    OrchestratorConfig,
    ProviderConfig,
)
from llmrelay.errors import AllProvidersFailedError, AuthenticationError, LLMRelayError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory, RecordingSleep

OPENAI_KEY = "sk-SECRET-canary-123"
ANTHROPIC_KEY = "sk-ant-SECRET-canary-456"
ENV_KEY = "sk-SECRET-canary-env-789"
MARKERS = ("SECRET-canary", "canary-123", "canary-456", "canary-env")


def leaks(text: str) -> list[str]:
    return [m for m in MARKERS if m in text]


def _dump(obj: Any, depth: int = 0, seen: set[int] | None = None) -> str:
    """str and repr of an object and (a few levels of) everything it holds."""
    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 3:
        return ""
    seen.add(id(obj))
    try:
        parts = [str(obj), repr(obj)]
    except Exception as e:  # a repr that fails is itself worth seeing
        parts = [f"<repr failed: {e!r}>"]
    if isinstance(obj, BaseException):
        parts.append("".join(traceback.format_exception(obj)))
        for linked in (obj.__cause__, obj.__context__, *obj.args):
            parts.append(_dump(linked, depth + 1, seen))
    children: list[Any] = []
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set):
        children = list(obj)
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    for slot in getattr(type(obj), "__slots__", ()):
        if slot not in ("_api_key", "api_key") and hasattr(obj, slot):
            children.append(getattr(obj, slot))
    for child in children:
        if isinstance(child, str | bytes | int | float | type(None)):
            parts.append(repr(child))
        else:
            parts.append(_dump(child, depth + 1, seen))
    return "\n".join(parts)


@pytest.fixture
def secret_config(
    fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> LLMServiceConfig:
    monkeypatch.setenv("RELIABILITY_CANARY_KEY", ENV_KEY)
    return LLMServiceConfig(
        providers=[
            ProviderConfig(
                name="openai",
                base_url=fakes["openai"].base_url,
                api_key=OPENAI_KEY,
                models=["gpt-4o-mini"],
            ),
            ProviderConfig(
                name="claude",
                kind="anthropic",
                base_url=fakes["anthropic"].base_url,
                api_key=ANTHROPIC_KEY,
                models=["claude-haiku-4-5"],
            ),
            ProviderConfig(
                name="envkey",
                kind="openai",
                base_url=fakes["openai"].base_url,
                api_key_env="RELIABILITY_CANARY_KEY",
                models=["gpt-4o"],
            ),
        ],
        default_model="openai/gpt-4o-mini",
        orchestrator=OrchestratorConfig(max_retries=1, backoff_initial_s=0.001),
        selection=ModelSelectionStrategy(
            fallbacks={"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]}
        ),
        cache=CacheConfig(disk_path=str(tmp_path / "cache")),
    )


async def test_keys_appear_nowhere(
    secret_config: LLMServiceConfig,
    fakes: dict[str, FakeProvider],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: llmrelay, httpx, httpcore, asyncio...
    for name in ("httpx", "httpcore", "llmrelay", "asyncio"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    errors: list[BaseException] = []
    sleep = RecordingSleep()
    # keys are what the server saw (so they were really sent) ...
    async with LLMService(secret_config, sleep=sleep) as svc:
        await svc.achat("plain", temperature=0)
        await svc.achat("plain", temperature=0)  # a cache hit
        _ = [c async for c in svc.astream("streamed", "claude/claude-haiku-4-5")]
        await svc.achat("via env", "envkey/gpt-4o")
        # ... and providers that echo the key in their error bodies must not leak it
        echo = f"Incorrect API key provided: {OPENAI_KEY} and {ANTHROPIC_KEY}"
        fakes["openai"].inject("auth", times=1, message=echo)
        with pytest.raises(AuthenticationError) as auth:
            await svc.achat("auth fails")
        errors.append(auth.value)
        fakes["openai"].inject("unavailable", times=2, message=echo)
        fakes["anthropic"].inject("overloaded", times=2, message=echo)
        with pytest.raises(AllProvidersFailedError) as allf:
            await svc.achat("all fail")
        errors.append(allf.value)
        fakes["openai"].inject("rate_limit", times=2, retry_after=0, message=echo)
        fakes["anthropic"].inject("server_error", times=2, message=echo)
        with pytest.raises(LLMRelayError) as other:
            _ = [c async for c in svc.astream("stream fails")]
        errors.append(other.value)
        texts = {
            "config": _dump(secret_config) + str(secret_config.providers),
            "service": _dump(svc) + repr(svc._engine.pool),
            "deployments": _dump(list(svc._engine.pool)),
            "adapters": _dump([d.adapter for d in svc._engine.pool]),
            "errors": _dump(errors),
            "metrics": _dump(svc.metrics.snapshot().to_dict()) + svc.metrics.prometheus(),
        }
        p = svc._engine.prepare("plain", None, 2, None, {"temperature": 0}, stream=False)
        assert p.key is not None
        texts["cache_key"] = p.key.hex() + repr(p.key)
    sent = [
        r.headers.get("authorization", "") + r.headers.get("x-api-key", "")
        for r in fakes["openai"].requests + fakes["anthropic"].requests
    ]
    assert any(OPENAI_KEY in s for s in sent) and any(ANTHROPIC_KEY in s for s in sent)
    assert any(ENV_KEY in s for s in sent)
    logs = []
    for r in caplog.records:
        logs.append(r.getMessage())
        if r.exc_info and r.exc_info[1] is not None:
            logs.append(_dump(r.exc_info[1]))
        logs.append(repr(r.__dict__))
    texts["logs"] = "\n".join(logs)
    assert len(caplog.records) > 0
    found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert not found, found
    for f in (tmp_path / "cache").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for m in MARKERS:
                assert m.encode() not in data, (f, m)


def test_config_reprs_and_errors_hide_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    p = ProviderConfig(name="x", kind="openai", api_key=OPENAI_KEY)
    assert not leaks(repr(p) + str(p))
    cfg = LLMServiceConfig(providers=[p])
    assert not leaks(repr(cfg) + str(cfg))
    # a config error about the provider must not echo its key
    bad: list[dict[str, Any]] = [
        {"providers": [{"name": "a/b", "api_key": OPENAI_KEY}]},
        {"providers": [{"name": "a", "api_key": OPENAI_KEY, "base_url": "nope"}]},
        {"providers": [{"name": "a", "api_key": OPENAI_KEY, "weight": "heavy"}]},
        {"providers": [{"name": "a", "api_key": OPENAI_KEY}, {"name": "a", "api_key": OPENAI_KEY}]},
    ]
    for data in bad:
        with pytest.raises(LLMRelayError) as info:
            LLMServiceConfig.from_dict(data)
        assert not leaks(_dump(info.value)), info.value


async def test_cache_scopes_never_cross(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    disk = CacheConfig(disk_path=str(tmp_path / "shared"))
    tenants = {"a": "sk-tenant-a-key", "b": "sk-tenant-b-key", "c": "sk-tenant-c-key"}
    answers: dict[str, str] = {}
    for round_ in range(2):
        for name, key in tenants.items():
            fakes["openai"].script(f"answer for {name} round {round_}")
            cfg = make_config(cache=disk, provider_kw={"openai": {"api_key": key}})
            async with LLMService(cfg) as svc:
                r = await svc.achat("shared question", temperature=0)
                if round_ == 0:
                    assert not r.cached
                    answers[name] = r.text
                else:  # each tenant sees its own cached answer, never another's
                    assert r.cached and r.text == answers[name]
    assert len(set(answers.values())) == 3
    assert fakes["openai"].request_count == 3
