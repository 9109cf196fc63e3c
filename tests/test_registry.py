"""The provider registry: built-ins, registration, capabilities lookup, entry-point plug-ins."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import llmrelay
from llmrelay.errors import ConfigError
from llmrelay.providers import (
    ENTRY_POINT_GROUP,
    AnthropicAdapter,
    ModelInfo,
    OllamaAdapter,
    OpenAIAdapter,
    ProviderRegistration,
    _registry,
    capabilities,
    get_provider,
    list_providers,
    register_builtins,
    register_provider,
    unregister_provider,
)


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    yield
    for kind in list_providers():
        if kind.startswith("test"):
            unregister_provider(kind)
    register_builtins()


def test_builtins() -> None:
    assert {"openai", "openai_compatible", "anthropic", "ollama"} <= set(list_providers())
    openai = get_provider("openai")
    assert openai.adapter_factory is OpenAIAdapter and openai.api_key_env == "OPENAI_API_KEY"
    assert openai.default_base_url == "https://api.openai.com/v1" and openai.requires_api_key
    anthropic = get_provider("anthropic")
    assert (
        anthropic.adapter_factory is AnthropicAdapter
        and anthropic.default_base_url == "https://api.anthropic.com"
    )
    ollama = get_provider("ollama")
    assert ollama.adapter_factory is OllamaAdapter and not ollama.requires_api_key
    assert get_provider("openai_compatible").adapter_factory is OpenAIAdapter
    for reg in (openai, anthropic, ollama):
        assert reg.default_model in reg.models
    a = openai.adapter_factory(
        deployment="d", base_url=openai.default_base_url, api_key="k", headers={}
    )
    assert isinstance(a, OpenAIAdapter)


def test_capabilities_lookup() -> None:
    mini = capabilities("openai", "gpt-4o-mini")
    assert mini.tools and mini.vision and mini.context_window == 128_000
    assert mini.input_price_per_mtok == 0.15 and mini.output_price_per_mtok == 0.60
    assert capabilities("openai", "gpt-4o-mini-2024-07-18") is mini  # dated snapshot
    assert capabilities("openai", "gpt-4o-2024-08-06") is capabilities("openai", "gpt-4o")
    assert capabilities("anthropic", "claude-sonnet-4-5-20250929").max_output_tokens == 64_000
    assert capabilities("ollama", "llama3.2:3b").tools is True
    assert capabilities("openai", "text-embedding-3-small").embeddings is True
    unknown = capabilities("openai", "gpt-99")
    assert unknown == ModelInfo() and unknown.tools is None and unknown.context_window is None
    with pytest.raises(ConfigError, match=r"kind='nope'.*known: anthropic"):
        capabilities("nope", "m")


def test_register_replace_and_errors() -> None:
    reg = ProviderRegistration(
        kind="testkind",
        adapter_factory=OpenAIAdapter,
        default_base_url="http://x/v1",
        models={"m": ModelInfo(tools=True)},
    )
    register_provider(reg)
    assert get_provider("testkind") is reg and "testkind" in list_providers()
    assert capabilities("testkind", "m").tools is True
    with pytest.raises(ConfigError, match="already registered"):
        register_provider(reg)
    other = ProviderRegistration(
        kind="testkind", adapter_factory=OllamaAdapter, default_base_url="http://y"
    )
    register_provider(other, replace=True)
    assert get_provider("testkind") is other
    with pytest.raises(ConfigError, match="kind=''"):
        register_provider(
            ProviderRegistration(kind="", adapter_factory=OpenAIAdapter, default_base_url="u")
        )
    with pytest.raises(ConfigError, match="kind='a/b'"):
        register_provider(
            ProviderRegistration(kind="a/b", adapter_factory=OpenAIAdapter, default_base_url="u")
        )
    with pytest.raises(ConfigError, match="adapter_factory"):
        register_provider(
            ProviderRegistration(kind="testx", adapter_factory=3, default_base_url="u")
        )  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ProviderRegistration"):
        register_provider({"kind": "x"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown provider kind"):
        get_provider("testmissing")


def test_public_reexports() -> None:
    assert llmrelay.ProviderRegistration is ProviderRegistration
    assert llmrelay.register_provider is register_provider


class FakeEntryPoint:
    def __init__(self, name: str, load: Callable[[], Any]) -> None:
        self.name = name
        self.value = f"fake:{name}"
        self._load = load

    def load(self) -> Any:
        return self._load()


def test_entry_point_discovery(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = ProviderRegistration(
        kind="testplugin", adapter_factory=OpenAIAdapter, default_base_url="http://p/v1"
    )

    def broken() -> Any:
        raise ImportError("missing dependency")

    eps = [
        FakeEntryPoint("good", lambda: good),
        FakeEntryPoint(
            "factory",
            lambda: (
                lambda: ProviderRegistration(
                    kind="testfactory", adapter_factory=OllamaAdapter, default_base_url="http://q"
                )
            ),
        ),
        FakeEntryPoint("broken", broken),
        FakeEntryPoint("wrongtype", lambda: lambda: 42),
        FakeEntryPoint(
            "clash",
            lambda: ProviderRegistration(
                kind="openai", adapter_factory=OllamaAdapter, default_base_url="http://z"
            ),
        ),
    ]
    calls: list[str] = []

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        calls.append(group)
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(_registry, "_started", False)
    monkeypatch.setattr(_registry, "_done", False)
    with caplog.at_level(logging.WARNING, logger="llmrelay.providers"):
        kinds = list_providers()
        list_providers()
    assert calls == [ENTRY_POINT_GROUP]  # discovered once
    assert "testplugin" in kinds and "testfactory" in kinds
    assert get_provider("testplugin") is good
    assert (
        get_provider("openai").adapter_factory is OpenAIAdapter
    )  # a plug-in cannot shadow a built-in
    text = caplog.text
    assert (
        "broken" in text
        and "missing dependency" in text
        and "wrongtype" in text
        and "clash" in text
    )


def test_entry_point_listing_failure_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*, group: str) -> list[Any]:
        raise RuntimeError("broken metadata")

    monkeypatch.setattr(importlib.metadata, "entry_points", fail)
    monkeypatch.setattr(_registry, "_started", False)
    monkeypatch.setattr(_registry, "_done", False)
    with caplog.at_level(logging.WARNING, logger="llmrelay.providers"):
        assert "openai" in list_providers()
    assert "broken metadata" in caplog.text


def test_unknown_kind_triggers_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    late = ProviderRegistration(
        kind="testlate", adapter_factory=OpenAIAdapter, default_base_url="http://l/v1"
    )
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda *, group: [FakeEntryPoint("late", lambda: late)]
    )
    monkeypatch.setattr(_registry, "_started", False)
    monkeypatch.setattr(_registry, "_done", False)
    assert get_provider("testlate") is late


def test_a_factory_that_builds_no_adapter_is_a_config_error() -> None:
    class NotAnAdapter:
        def __init__(self, **kw: Any) -> None:
            self.kw = kw

    register_provider(
        ProviderRegistration(
            kind="testnotadapter", adapter_factory=NotAnAdapter, default_base_url="http://x"
        )
    )
    cfg = llmrelay.LLMServiceConfig(
        providers=[llmrelay.ProviderConfig(name="d1", kind="testnotadapter")]
    )
    with pytest.raises(
        ConfigError, match=r"providers\['d1'\].*NotAnAdapter, not a ProviderAdapter"
    ):
        llmrelay.LLMService(cfg)
