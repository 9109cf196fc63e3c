"""Shared fixtures: services wired to the fake providers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llmrelay import (
    LLMServiceConfig,
    ProviderConfig,
)
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory, RecordingSleep


@pytest.fixture
def recording_sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeProvider]]:
    """The three fakes, each on its own loop thread, so sync and async tests both work."""
    with (
        FakeProvider("openai").run_in_thread() as oa,
        FakeProvider("anthropic").run_in_thread() as an,
        FakeProvider("ollama").run_in_thread() as ol,
    ):
        yield {"openai": oa, "anthropic": an, "ollama": ol}


@pytest.fixture
def make_config(fakes: dict[str, FakeProvider]) -> ConfigFactory:
    """A config with the three fakes as deployments ``openai``, ``claude``, ``local``."""

    def make(**kw: Any) -> LLMServiceConfig:
        provider_kw: dict[str, dict[str, Any]] = kw.pop("provider_kw", {})
        base: dict[str, dict[str, Any]] = {
            "openai": {
                "kind": "openai",
                "base_url": fakes["openai"].base_url,
                "api_key": "sk-test-openai-key",
                "models": ["gpt-4o-mini"],
            },
            "claude": {
                "kind": "anthropic",
                "base_url": fakes["anthropic"].base_url,
                "api_key": "sk-ant-test-key",
                "models": ["claude-haiku-4-5"],
            },
            "local": {
                "kind": "ollama",
                "base_url": fakes["ollama"].base_url,
                "models": ["llama3.2"],
            },
        }
        providers = [
            ProviderConfig(name=name, **{**fields, **provider_kw.get(name, {})})
            for name, fields in base.items()
        ]
        kw.setdefault("default_model", "openai/gpt-4o-mini")
        return LLMServiceConfig(providers=providers, **kw)

    return make
