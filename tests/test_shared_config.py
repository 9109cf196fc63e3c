"""SharedStateConfig: validation, TOML ``[shared]``, ``LLMRELAY_REDIS_URL``, and a
service that starts with it (Redis absent) and says what is not shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import llmrelay
from llmrelay import LLMServiceConfig, SharedStateConfig
from llmrelay.errors import ConfigError
from service_helpers import ConfigFactory


def test_defaults_and_export() -> None:
    cfg = SharedStateConfig(url="redis://127.0.0.1:6379/0")
    assert llmrelay.SharedStateConfig is SharedStateConfig
    assert (cfg.namespace, cfg.mode, cfg.on_unavailable, cfg.op_timeout_s) == (
        "llmrelay",
        "exact",
        "local_share",
        0.025,
    )
    assert (cfg.limits, cfg.cache, cfg.breakers, cfg.dedup) == (True, True, True, True)
    assert LLMServiceConfig().shared is None


@pytest.mark.parametrize(
    "url", ["redis://h:6379", "rediss://user:pw@h:6380/1", "unix:///run/redis.sock"]
)
def test_accepted_urls(url: str) -> None:
    assert SharedStateConfig(url=url).url == url


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "http://h:6379"}, "url"),
        ({"url": "redis://"}, "url"),
        ({"url": "redis://h:port"}, "url"),
        ({"url": "unix://"}, "url"),
        ({"url": "redis://h", "op_timeout_s": 0}, "op_timeout_s"),
        ({"url": "redis://h", "op_timeout_s": float("nan")}, "op_timeout_s"),
        ({"url": "redis://h", "namespace": ""}, "namespace"),
        ({"url": "redis://h", "namespace": "a{b}"}, "namespace"),
        ({"url": "redis://h", "mode": "fast"}, "mode"),
        ({"url": "redis://h", "on_unavailable": "retry"}, "on_unavailable"),
        ({"url": 6379}, "url"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        SharedStateConfig(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field


def test_nested_field_path_and_password_never_shown() -> None:
    with pytest.raises(ConfigError) as e:
        LLMServiceConfig.from_dict({"shared": {"url": "ftp://u:hunter2@h"}})
    assert e.value.field == "shared.url"
    assert "hunter2" not in str(e.value)
    cfg = SharedStateConfig(url="redis://u:hunter2@h:6379/0")
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in repr(LLMServiceConfig(shared=cfg))


def test_toml_section(tmp_path: Path) -> None:
    path = tmp_path / "llmrelay.toml"
    path.write_text(
        '[shared]\nurl = "redis://127.0.0.1:6379"\non_unavailable = "closed"\n'
        "op_timeout_s = 0.05\ncache = false\n"
    )
    cfg = LLMServiceConfig.from_toml(path)
    assert cfg.shared == SharedStateConfig(
        url="redis://127.0.0.1:6379", on_unavailable="closed", op_timeout_s=0.05, cache=False
    )


def test_env_url() -> None:
    env = {"OPENAI_API_KEY": "k", "LLMRELAY_REDIS_URL": "redis://127.0.0.1:7000"}
    cfg = LLMServiceConfig.from_env(env)
    assert cfg.shared == SharedStateConfig(url="redis://127.0.0.1:7000")
    with pytest.raises(ConfigError) as e:
        LLMServiceConfig.from_env({"OPENAI_API_KEY": "k", "LLMRELAY_REDIS_URL": "localhost"})
    assert e.value.field == "LLMRELAY_REDIS_URL"


def test_env_url_does_not_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[shared]\nurl = "unix:///tmp/r.sock"\n')
    env = {"LLMRELAY_CONFIG": str(path), "LLMRELAY_REDIS_URL": "redis://other"}
    shared = LLMServiceConfig.from_env(env).shared
    assert shared is not None and shared.url == "unix:///tmp/r.sock"


def test_service_with_shared_starts_without_redis_and_shares_every_switch(
    make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    import msgspec

    # nothing listens on port 1: start-up must not wait for it
    cfg = msgspec.structs.replace(
        make_config(), shared=SharedStateConfig(url="redis://u:hunter2@127.0.0.1:1")
    )
    with caplog.at_level("WARNING", logger="llmrelay"):
        svc = llmrelay.LLMService(cfg)
    try:
        shared = svc.metrics.snapshot().shared
        # every switch is shared now (breakers too): nothing stays per process
        assert shared["limits"] is True and shared["not_shared"] == []
        assert shared["breakers"]["listening"] is False
        assert shared["pid"] == os.getpid() and "hunter2" not in str(shared)
        assert not any("stay per process" in r.getMessage() for r in caplog.records)
        assert "hunter2" not in caplog.text
    finally:
        svc.close()


def test_service_builds_in_leased_mode_without_waiting_for_redis(
    make_config: ConfigFactory,
) -> None:
    import msgspec

    cfg = msgspec.structs.replace(
        make_config(), shared=SharedStateConfig(url="redis://127.0.0.1:1", mode="leased")
    )
    svc = llmrelay.LLMService(cfg)
    try:
        shared = svc.metrics.snapshot().shared
        assert shared["mode"] == "leased" and shared["lease_ttl_s"] == 1.0
        assert shared["leases_taken"] == 0
    finally:
        svc.close()
