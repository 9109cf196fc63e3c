"""Shared fixtures: services wired to the fake providers on 127.0.0.1."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from llmrelay import (
    LLMServiceConfig,
    ProviderConfig,
)
from llmrelay.testing import FakeProvider
from redis_server import RedisCluster, RedisServer
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


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A three-master Redis Cluster on 127.0.0.1 for the module (stopped by PID);
    skipped when redis-server or redis-cli is not installed."""
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (.ci/run installs redis-server)")
    cluster = RedisCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A redis-server on a free 127.0.0.1 port for the module (no persistence), stopped
    by PID; tests that use it mark their module with ``redis_server.needs_redis``."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
