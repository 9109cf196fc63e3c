"""Config structs: defaults, loading from dict / TOML / env, and typed errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelay._config import (
    CacheConfig,
    CircuitBreakerConfig,
    LLMServiceConfig,
    ModelSelectionStrategy,
    OrchestratorConfig,
    ProviderConfig,
    RateLimitConfig,
    RequestTimeouts,
)
from llmrelay.errors import ConfigError


def test_from_dict_builds_nested_structs() -> None:
    cfg = LLMServiceConfig.from_dict(
        {
            "providers": [
                {"name": "openai", "api_key_env": "X", "rate_limit": {"requests_per_minute": 60}},
                {"name": "local", "kind": "ollama", "base_url": "http://127.0.0.1:11434"},
            ],
            "default_model": "openai/gpt-4o-mini",
            "orchestrator": {"max_retries": 5},
        }
    )
    assert cfg.providers[0].rate_limit == RateLimitConfig(requests_per_minute=60)
    assert cfg.providers[1].provider_kind == "ollama"
    assert cfg.orchestrator.max_retries == 5
    assert cfg.to_dict()["orchestrator"]["max_retries"] == 5


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            {"providers": [{"name": "a", "rate_limit": {"requests_per_minute": -1}}]},
            "requests_per_minute=-1",
        ),
        ({"providers": [{"name": "a", "bogus": 1}]}, "unknown field `bogus`"),
        ({"orchestrator": {"max_retries": "x"}}, "max_retries"),
        ({"orchestrator": {"retry_budget_ratio": 1.5}}, "retry_budget_ratio=1.5"),
        ({"circuit_breaker": {"failure_rate_threshold": 2}}, "failure_rate_threshold=2"),
        ({"cache": {"eviction": "fifo"}}, "eviction"),
        ({"timeouts": {"total_s": 0}}, "total_s=0"),
        ({"providers": [{"name": "a"}, {"name": "a"}]}, "duplicate name='a'"),
        ({"providers": [{"name": "a", "base_url": "ftp://x"}]}, "base_url='ftp://x'"),
        ({"selection": {"strategy": "random"}}, "strategy"),
        ({"selection": {"required_capabilities": ["telepathy"]}}, "telepathy"),
        ({"orchestrator": {"min_concurrency": 9, "max_concurrency": 2}}, "min_concurrency=9"),
    ],
)
def test_bad_values_name_the_field(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        LLMServiceConfig.from_dict(data)
    assert needle in str(info.value)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match="requests_per_minute=nan"):
        RateLimitConfig(requests_per_minute=float("nan"))
    with pytest.raises(ConfigError, match="burst=0"):
        RateLimitConfig(burst=0)
    with pytest.raises(ConfigError, match="window_size=0"):
        CircuitBreakerConfig(window_size=0)
    with pytest.raises(ConfigError, match="stream_idle_s=-1"):
        RequestTimeouts(stream_idle_s=-1)
    with pytest.raises(ConfigError, match="max_concurrency=0"):
        OrchestratorConfig(max_concurrency=0)
    with pytest.raises(ConfigError, match="ttl_s=inf"):
        CacheConfig(ttl_s=float("inf"))
    with pytest.raises(ConfigError, match="name=''"):
        ProviderConfig(name="")
    assert ModelSelectionStrategy().strategy == "priority"


def test_api_key_never_in_repr() -> None:
    p = ProviderConfig(name="openai", api_key="sk-very-secret")
    cfg = LLMServiceConfig(providers=[p])
    for text in (repr(p), str(p), repr(cfg), str(cfg)):
        assert "sk-very-secret" not in text
    assert "api_key='***'" in repr(p)
    assert p.resolve_api_key() == "sk-very-secret"


def test_from_toml(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        'default_model = "local/llama3.2"\n[[providers]]\nname = "local"\nkind = "ollama"\n'
        'base_url = "http://127.0.0.1:11434"\n[cache]\nttl_s = 60\n'
    )
    cfg = LLMServiceConfig.from_toml(f)
    assert cfg.providers[0].name == "local" and cfg.cache.ttl_s == 60
    with pytest.raises(ConfigError, match="file not found"):
        LLMServiceConfig.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("not toml = = =")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        LLMServiceConfig.from_toml(bad)


def test_from_env(tmp_path: Path) -> None:
    cfg = LLMServiceConfig.from_env({"OPENAI_API_KEY": "sk-x", "OLLAMA_HOST": "127.0.0.1:11434"})
    assert [p.name for p in cfg.providers] == ["openai", "ollama"]
    assert cfg.providers[1].base_url == "http://127.0.0.1:11434"
    assert "sk-x" not in repr(cfg)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        LLMServiceConfig.from_env({})
    f = tmp_path / "c.toml"
    f.write_text('[[providers]]\nname = "x"\nkind = "openai"\napi_key_env = "K"\n')
    assert LLMServiceConfig.from_env({"LLMRELAY_CONFIG": str(f)}).providers[0].name == "x"


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        LLMServiceConfig.from_dict([1, 2])  # type: ignore[arg-type]
