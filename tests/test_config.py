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
from llmrelay.testing import FakeProvider


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


# ---- issue 10 item 3: mistakes caught at construction, with the path in ConfigError.field ----


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"providers": [{"name": "a", "models": "gpt-4o"}]}, "providers[0].models"),
        ({"providers": [{"name": "a", "models": ["x", 3]}]}, "providers[0].models[1]"),
        (
            {"providers": [{"name": "a", "rate_limit": {"requests_per_minute": -1}}]},
            "providers[0].rate_limit.requests_per_minute",
        ),
        ({"providers": [{"name": "a"}, {"name": "b", "rate_limit": 5}]}, "providers[1].rate_limit"),
        ({"providers": [{"name": "a", "bogus": 1}]}, "providers[0].bogus"),
        ({"providers": [{"name": "a"}, {"name": "a"}]}, "providers[1].name"),
        ({"providers": [{"name": "a/b"}]}, "providers[0].name"),
        ({"providers": [{"name": "a", "base_url": "ftp://x"}]}, "providers[0].base_url"),
        ({"providers": [{"name": "a", "headers": {"X-Org": 1}}]}, "providers[0].headers['X-Org']"),
        ({"orchestrator": {"max_retries": "x"}}, "orchestrator.max_retries"),
        (
            {"orchestrator": {"min_concurrency": 9, "max_concurrency": 2}},
            "orchestrator.min_concurrency",
        ),
        ({"cache": {"eviction": "fifo"}}, "cache.eviction"),
        ({"timeouts": {"total_s": 0}}, "timeouts.total_s"),
        (
            {"selection": {"required_capabilities": ["telepathy"]}},
            "selection.required_capabilities[0]",
        ),
        (
            {
                "providers": [{"name": "openai"}],
                "selection": {"fallbacks": {"openai/gpt-4o": ["opnai/gpt-4o-mini"]}},
            },
            "selection.fallbacks['openai/gpt-4o'][0]",
        ),
        (
            {
                "providers": [{"name": "openai"}],
                "selection": {"fallbacks": {"openai/gpt-4o": "openai/gpt-4o-mini"}},
            },
            "selection.fallbacks['openai/gpt-4o']",
        ),
        ({"providers": [{"name": "openai"}], "default_model": "opnai/gpt-4o"}, "default_model"),
    ],
)
def test_config_error_field_is_the_path(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        LLMServiceConfig.from_dict(data)
    assert info.value.field == field, str(info.value)
    assert field in str(info.value)


def test_models_given_as_a_string_is_rejected() -> None:
    # a str is a sequence of characters: accepted, "4o" would match it as a substring
    with pytest.raises(ConfigError, match=r"give a list, e\.g\. \['gpt-4o'\]") as info:
        ProviderConfig(name="openai", models="gpt-4o")  # type: ignore[arg-type]
    assert info.value.field == "models"
    with pytest.raises(ConfigError) as info:
        LLMServiceConfig(providers=[{"name": "openai", "models": "gpt-4o"}])  # type: ignore[list-item]
    assert info.value.field == "providers[0].models"


def test_wrong_types_in_code_are_rejected_with_the_field() -> None:
    for build, field in (
        (lambda: ProviderConfig(name="a", max_concurrency="5"), "max_concurrency"),
        (lambda: ProviderConfig(name="a", headers={"X": 1}), "headers['X']"),
        (lambda: OrchestratorConfig(max_retries=True), "max_retries"),
        (lambda: CacheConfig(eviction="fifo"), "eviction"),
        (lambda: RateLimitConfig(burst=0), "burst"),
        (lambda: ProviderConfig(name=""), "name"),
        (lambda: ProviderConfig(name="a", api_key_env=""), "api_key_env"),
        (lambda: ModelSelectionStrategy(fallbacks={"a": [""]}), "fallbacks['a'][0]"),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.field == field, str(info.value)


def test_nested_dicts_built_in_code_become_structs() -> None:
    p = ProviderConfig(
        name="openai",
        rate_limit={"requests_per_minute": 60, "burst": 2},  # type: ignore[arg-type]
        timeouts={"total_s": 5},  # type: ignore[arg-type]
        circuit_breaker={"window_size": 4},  # type: ignore[arg-type]
    )
    assert p.rate_limit == RateLimitConfig(requests_per_minute=60, burst=2)
    assert p.timeouts == RequestTimeouts(total_s=5)
    assert p.circuit_breaker == CircuitBreakerConfig(window_size=4)
    cfg = LLMServiceConfig(
        providers=[p, {"name": "local", "kind": "ollama"}],  # type: ignore[list-item]
        orchestrator={"max_retries": 1},  # type: ignore[arg-type]
        selection={"fallbacks": {"openai/gpt-4o": ["local/llama3.2"]}},  # type: ignore[arg-type]
    )
    assert isinstance(cfg.providers[1], ProviderConfig)
    assert cfg.orchestrator == OrchestratorConfig(max_retries=1)
    assert cfg.selection.fallbacks == {"openai/gpt-4o": ["local/llama3.2"]}
    assert LLMServiceConfig.from_dict(cfg.to_dict()) == cfg
    from llmrelay import LLMService

    LLMService(cfg).close()  # it used to fail here with AttributeError on the dict
    with pytest.raises(ConfigError) as info:
        ProviderConfig(name="a", rate_limit={"burst": 0})  # type: ignore[arg-type]
    assert info.value.field == "rate_limit.burst"
    with pytest.raises(ConfigError) as info:
        LLMServiceConfig(
            providers=[p, {"name": "b", "rate_limit": {"rpm": 1}}]  # type: ignore[list-item]
        )
    assert info.value.field == "providers[1].rate_limit.rpm"


def test_fallback_and_default_naming_an_unknown_deployment() -> None:
    openai = ProviderConfig(name="openai", api_key="sk-x")
    with pytest.raises(ConfigError, match="no provider is named 'opnai'") as info:
        LLMServiceConfig(
            providers=[openai],
            selection=ModelSelectionStrategy(fallbacks={"openai/gpt-4o": ["opnai/gpt-4o-mini"]}),
        )
    assert info.value.field == "selection.fallbacks['openai/gpt-4o'][0]"
    with pytest.raises(ConfigError) as info:
        LLMServiceConfig(
            providers=[openai],
            selection=ModelSelectionStrategy(fallbacks={"opnai/gpt-4o": ["openai/gpt-4o-mini"]}),
        )
    assert info.value.field == "selection.fallbacks['opnai/gpt-4o']"
    with pytest.raises(ConfigError) as info:
        LLMServiceConfig(providers=[openai], default_model="opnai/gpt-4o")
    assert info.value.field == "default_model"
    # a model whose own name has a '/' is fine once listed
    hf = ProviderConfig(name="vllm", kind="openai_compatible", models=["meta-llama/Llama-3.1-8B"])
    cfg = LLMServiceConfig(providers=[hf], default_model="meta-llama/Llama-3.1-8B")
    assert cfg.default_model == "meta-llama/Llama-3.1-8B"


def test_service_checks_bare_names_against_the_registry() -> None:
    from llmrelay import LLMService

    two = [
        ProviderConfig(name="openai", api_key="sk-x"),
        ProviderConfig(name="claude", kind="anthropic", api_key="sk-y"),
    ]
    with pytest.raises(ConfigError, match="no configured provider serves it") as info:
        LLMService(LLMServiceConfig(providers=two, default_model="gpt-4o-typo"))
    assert info.value.field == "default_model"
    bad_fallback = ModelSelectionStrategy(fallbacks={"gpt-4o": ["claude-haiku-typo"]})
    with pytest.raises(ConfigError) as info:
        LLMService(LLMServiceConfig(providers=two, selection=bad_fallback))
    assert info.value.field == "selection.fallbacks['gpt-4o'][0]"
    with pytest.raises(ConfigError, match="unknown provider kind") as info:
        LLMService(LLMServiceConfig(providers=[ProviderConfig(name="x", kind="nope")]))
    assert info.value.field == "providers[0].kind"
    ok = ModelSelectionStrategy(fallbacks={"gpt-4o": ["claude-haiku-4-5", "claude/other"]})
    LLMService(LLMServiceConfig(providers=two, default_model="gpt-4o", selection=ok)).close()


def test_api_key_env_naming_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmrelay import LLMService

    monkeypatch.delenv("LLMRELAY_TEST_UNSET_KEY", raising=False)
    cfg = LLMServiceConfig(
        providers=[
            ProviderConfig(name="local", kind="ollama"),
            ProviderConfig(name="openai", api_key_env="LLMRELAY_TEST_UNSET_KEY"),
        ]
    )
    with pytest.raises(ConfigError, match="LLMRELAY_TEST_UNSET_KEY is not set") as info:
        LLMService(cfg)
    assert info.value.field == "providers[1].api_key_env"
    monkeypatch.setenv("LLMRELAY_TEST_UNSET_KEY", "sk-secret-value")
    svc = LLMService(cfg)
    assert "sk-secret-value" not in repr(svc)
    svc.close()


def test_header_secrets_never_in_repr() -> None:
    p = ProviderConfig(name="gw", headers={"Authorization": "Bearer tok-123", "X-Org": "acme"})
    assert "tok-123" not in repr(p) and "acme" in repr(p)


# ---- issue 10 item 2: a provider without base_url takes its kind's base-URL variable ----

_ENV_VARS = (
    "LLMRELAY_CONFIG",
    "LLMRELAY_DEFAULT_MODEL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OLLAMA_HOST",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_base_url_env_used_when_base_url_unset(
    clean_env: pytest.MonkeyPatch, fakes: dict[str, FakeProvider]
) -> None:
    from llmrelay import LLMService

    clean_env.setenv("OPENAI_BASE_URL", fakes["openai"].base_url)
    clean_env.setenv("ANTHROPIC_BASE_URL", fakes["anthropic"].base_url)
    # OLLAMA_HOST as the ollama CLI takes it: host:port without a scheme
    clean_env.setenv("OLLAMA_HOST", fakes["ollama"].url.removeprefix("http://"))
    cfg = LLMServiceConfig(
        providers=[
            ProviderConfig(name="openai", api_key="sk-x"),
            ProviderConfig(name="claude", kind="anthropic", api_key="sk-y"),
            ProviderConfig(name="local", kind="ollama"),
        ]
    )
    with LLMService(cfg) as svc:
        for model, fake in (
            ("openai/gpt-4o-mini", fakes["openai"]),
            ("claude/claude-haiku-4-5", fakes["anthropic"]),
            ("local/llama3.2", fakes["ollama"]),
        ):
            assert svc.chat("hi", model).text
            assert fake.request_count == 1, model


def test_explicit_base_url_wins_over_the_env(
    clean_env: pytest.MonkeyPatch, fakes: dict[str, FakeProvider]
) -> None:
    from llmrelay import LLMService

    clean_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    p = ProviderConfig(name="openai", api_key="sk-x", base_url=fakes["openai"].base_url)
    with LLMService(LLMServiceConfig(providers=[p])) as svc:
        assert svc.chat("hi", "openai/gpt-4o-mini").text
    assert fakes["openai"].request_count == 1


def test_base_url_env_precedence_in_the_registry(clean_env: pytest.MonkeyPatch) -> None:
    from llmrelay.providers import get_provider

    openai, ollama = get_provider("openai"), get_provider("ollama")
    assert openai.resolve_base_url({}) == "https://api.openai.com/v1"
    assert openai.resolve_base_url({"OPENAI_BASE_URL": ""}) == "https://api.openai.com/v1"
    assert openai.resolve_base_url({"OPENAI_BASE_URL": "http://gw:8/v1/"}) == "http://gw:8/v1"
    assert ollama.resolve_base_url({"OLLAMA_HOST": "box"}) == "http://box:11434"
    assert ollama.resolve_base_url({"OLLAMA_HOST": "https://o.example"}) == "https://o.example"
    assert get_provider("openai_compatible").resolve_base_url({"OPENAI_BASE_URL": "http://x"}) == (
        "http://127.0.0.1:8000/v1"
    )
    clean_env.setenv("OPENAI_BASE_URL", "http://from-os-environ/v1")
    assert openai.resolve_base_url() == "http://from-os-environ/v1"


def test_bad_base_url_env_is_a_config_error(clean_env: pytest.MonkeyPatch) -> None:
    from llmrelay import LLMService

    clean_env.setenv("OPENAI_BASE_URL", "ftp://proxy")
    cfg = LLMServiceConfig(providers=[ProviderConfig(name="openai", api_key="sk-x")])
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL='ftp://proxy'") as info:
        LLMService(cfg)
    assert info.value.field == "providers[0].base_url"
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL") as info:
        LLMServiceConfig.from_env({"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "nope://x"})


def test_from_env_default_model_and_cache_dir_fill_what_the_file_leaves(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[[providers]]\nname = "e"\nkind = "echo"\n')
    env = {
        "LLMRELAY_CONFIG": str(f),
        "LLMRELAY_DEFAULT_MODEL": "e/echo",
        "LLMRELAY_CACHE_DIR": str(tmp_path / "cache"),
    }
    cfg = LLMServiceConfig.from_env(env)
    assert cfg.default_model == "e/echo"
    assert cfg.cache.disk_path == str(tmp_path / "cache")
    f.write_text(
        'default_model = "e/other"\n[cache]\ndisk_path = "/elsewhere"\n'
        '[[providers]]\nname = "e"\nkind = "echo"\n'
    )
    cfg = LLMServiceConfig.from_env(env)  # the file's own settings win
    assert cfg.default_model == "e/other" and cfg.cache.disk_path == "/elsewhere"
    env_only = LLMServiceConfig.from_env({"OLLAMA_HOST": "box", "LLMRELAY_CACHE_DIR": "/c"})
    assert env_only.providers[0].base_url == "http://box:11434"
    assert env_only.cache.disk_path == "/c"
    with pytest.raises(ConfigError, match="LLMRELAY_DEFAULT_MODEL") as info:
        LLMServiceConfig.from_env({"OLLAMA_HOST": "box", "LLMRELAY_DEFAULT_MODEL": "olama/x"})
    assert info.value.field == "default_model"
