"""Shared fixtures: services wired to the fake providers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from llmrelay.testing import FakeProvider

from llmrelay import (
    LLMServiceConfig,
    ProviderConfig,
)


class RecordingSleep:
    """An injected ``sleep`` that records every delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def recording_sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeProvider]]:
    async with (
        FakeProvider("openai") as oa,
        FakeProvider("anthropic") as an,
        FakeProvider("ollama") as ol,
    ):
        yield {"openai": oa, "anthropic": an, "ollama": ol}


ConfigFactory = Callable[..., LLMServiceConfig]


@pytest.fixture
def make_config(fakes: dict[str, FakeProvider]) -> ConfigFactory:
    """A config with the three fakes as deployments ``openai``, ``claude``, ``local``."""

    def make(**kw: Any) -> LLMServiceConfig:
        provider_kw: dict[str, dict[str, Any]] = kw.pop("provider_kw", {})
        providers = [
            ProviderConfig(
                name="openai",
                kind="openai",
                base_url=fakes["openai"].base_url,
                api_key="sk-test-openai-key",
                models=["gpt-4o-mini"],
                **provider_kw.get("openai", {}),
            ),
            ProviderConfig(
                name="claude",
                kind="anthropic",
                base_url=fakes["anthropic"].base_url,
                api_key="sk-ant-test-key",
                models=["claude-haiku-4-5"],
                **provider_kw.get("claude", {}),
            ),
            ProviderConfig(
                name="local",
                kind="ollama",
                base_url=fakes["ollama"].base_url,
                models=["llama3.2"],
                **provider_kw.get("local", {}),
            ),
        ]
        kw.setdefault("default_model", "openai/gpt-4o-mini")
        return LLMServiceConfig(providers=providers, **kw)

    return make
