"""The default service proxy (`llmrelay.llm`), and the `llmrelay` command."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import llmrelay
from llmrelay import LLMServiceConfig, ProviderConfig
from llmrelay._cli import main
from llmrelay._proxy import DefaultServiceProxy
from llmrelay.errors import ConfigError
from llmrelay.testing import FakeProvider

ENV_VARS = (
    "LLMRELAY_CONFIG",
    "LLMRELAY_DEFAULT_MODEL",
    "LLMRELAY_CACHE_DIR",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OLLAMA_HOST",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


ECHO = LLMServiceConfig(providers=[ProviderConfig(name="e", kind="echo")], default_model="e/echo")


def test_proxy_builds_on_first_use_from_configure() -> None:
    proxy = DefaultServiceProxy()
    proxy.configure(ECHO)
    assert "not built" in repr(proxy)
    assert proxy.chat("hi").text == "echo: hi"
    with pytest.raises(ConfigError, match="already built"):
        proxy.configure(ECHO)
    proxy.close()
    proxy.configure(ECHO.to_dict())  # allowed again once closed


def test_proxy_without_config_names_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LLMRELAY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OLLAMA_HOST"):
        monkeypatch.delenv(var, raising=False)
    proxy = DefaultServiceProxy()
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        proxy.chat("hi")


def test_module_level_llm_and_configure_exist() -> None:
    assert isinstance(llmrelay.llm, DefaultServiceProxy)
    assert callable(llmrelay.configure)


def test_proxy_from_toml_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text('default_model = "e/echo"\n[[providers]]\nname = "e"\nkind = "echo"\n')
    monkeypatch.setenv("LLMRELAY_CONFIG", str(f))
    proxy = DefaultServiceProxy()
    assert proxy.chat("toml").text == "echo: toml"
    proxy.close()


def test_cli_providers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    assert "openai" in out and "anthropic" in out and "ollama" in out


def _make_cache(path: str, entries: int) -> None:
    from llmrelay import _core

    disk = _core.DiskCache(path)
    for i in range(entries):
        disk.set(f"k{i}".encode(), b"v" * 10)
    disk.close()


def test_cli_cache_stats_and_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "c")
    _make_cache(path, 3)
    assert main(["cache", "stats", "--path", path]) == 0
    assert re.search(r"^entries\s+3$", capsys.readouterr().out, re.M)
    assert main(["cache", "clear", "--path", path]) == 0
    assert main(["cache", "stats", "--path", path]) == 0
    assert re.search(r"^entries\s+0$", capsys.readouterr().out, re.M)
    assert main(["cache", "stats"]) == 2
    assert "LLMRELAY_CACHE_DIR" in capsys.readouterr().err


def test_cli_chat_with_echo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text('default_model = "e/echo"\n[[providers]]\nname = "e"\nkind = "echo"\n')
    monkeypatch.setenv("LLMRELAY_CONFIG", str(f))
    r = subprocess.run(
        [sys.executable, "-m", "llmrelay", "chat", "ping"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "echo: ping" in r.stdout


def test_cli_demo_small_run() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "llmrelay", "demo", "--plain", "--no-ollama", "--requests", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "llmrelay demo: 60 calls" in r.stdout
    assert "openai/gpt-4o-mini" in r.stdout


def test_cli_bad_config_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[[providers]]\nname = 3\n")
    monkeypatch.setenv("LLMRELAY_CONFIG", str(f))
    assert main(["chat", "x"]) == 2


# ---- issue 10 item 1: the zero-config path (only OPENAI_API_KEY, plus the fake's URL) ----


def test_zero_config_uses_the_registry_default_model(
    clean_env: pytest.MonkeyPatch, fakes: dict[str, FakeProvider]
) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-zero-config")
    clean_env.setenv("OPENAI_BASE_URL", fakes["openai"].base_url)
    proxy = DefaultServiceProxy()
    try:
        r = proxy.chat("Hello")
    finally:
        proxy.close()
    assert r.provider == "openai" and r.model.startswith("gpt-4o-mini")
    (req,) = fakes["openai"].requests
    assert req.json is not None and req.json["model"] == "gpt-4o-mini"
    assert req.headers["authorization"] == "Bearer sk-zero-config"


def test_zero_config_prefers_the_configured_default(
    clean_env: pytest.MonkeyPatch, fakes: dict[str, FakeProvider]
) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-x")
    clean_env.setenv("OPENAI_BASE_URL", fakes["openai"].base_url)
    clean_env.setenv("LLMRELAY_DEFAULT_MODEL", "openai/gpt-4.1-nano")
    with llmrelay.LLMService() as svc:
        svc.chat("Hello")
    assert fakes["openai"].requests[0].json["model"] == "gpt-4.1-nano"  # type: ignore[index]


def test_explicit_provider_without_models_uses_the_registry_default(
    fakes: dict[str, FakeProvider],
) -> None:
    cfg = LLMServiceConfig(
        providers=[
            ProviderConfig(name="vllm", kind="openai_compatible", base_url="http://127.0.0.1:9/v1"),
            ProviderConfig(
                name="claude",
                kind="anthropic",
                api_key="sk-y",
                base_url=fakes["anthropic"].base_url,
            ),
        ]
    )
    with llmrelay.LLMService(cfg) as svc:
        r = svc.chat("Hello")  # openai_compatible has no registry default: the next one
    assert r.provider == "claude"
    assert fakes["anthropic"].requests[0].json["model"] == "claude-haiku-4-5"  # type: ignore[index]


def test_cli_chat_zero_config(
    clean_env: pytest.MonkeyPatch,
    fakes: dict[str, FakeProvider],
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-x")
    clean_env.setenv("OPENAI_BASE_URL", fakes["openai"].base_url)
    assert main(["chat", "Hello"]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert out.strip() and "[openai/gpt-4o-mini" in err


# ---- issue 10 item 15: the CLI ----


def test_cli_chat_options_reach_the_provider(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    fakes: dict[str, FakeProvider],
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        f'[[providers]]\nname = "oa"\nkind = "openai"\napi_key = "sk-t"\n'
        f'base_url = "{fakes["openai"].base_url}"\n'
    )
    fakes["openai"].script("scripted answer")
    argv = ["chat", "Hi", "--config", str(f), "--system", "Be brief.", "--temperature", "0.2"]
    assert main([*argv, "--max-tokens", "7"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "scripted answer" and "[oa/gpt-4o-mini" in err
    (req,) = fakes["openai"].requests
    assert req.json is not None
    assert req.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert req.json["temperature"] == 0.2 and req.json["max_tokens"] == 7
    assert main(["chat", "Hi", "--config", str(f), "--temperature", "-3"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert main(["chat", "Hi", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_cli_chat_error_names_the_url(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    f = tmp_path / "c.toml"
    f.write_text(
        f'[orchestrator]\nmax_retries = 0\n[[providers]]\nname = "oa"\nkind = "openai"\n'
        f'base_url = "{url}"\n'
    )
    assert main(["chat", "Hi", "--config", str(f)]) == 1
    err = capsys.readouterr().err
    assert "ProviderUnavailableError" in err
    assert f"tried oa/gpt-4o-mini at {url}" in err


def test_cli_cache_stats_on_a_missing_path_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo"
    for action in ("stats", "clear"):
        assert main(["cache", action, "--path", str(path)]) == 1
        assert "does not exist" in capsys.readouterr().err
    assert not path.exists()
    (tmp_path / "plain").mkdir()
    assert main(["cache", "stats", "--path", str(tmp_path / "plain")]) == 1
    assert "not an llmrelay disk cache" in capsys.readouterr().err
    assert list((tmp_path / "plain").iterdir()) == []


def test_cli_cache_stats_on_a_cache_held_by_a_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "c")
    cfg = LLMServiceConfig(
        providers=[ProviderConfig(name="e", kind="echo")],
        default_model="e/echo",
        cache={"disk_path": path},  # type: ignore[arg-type]
    )
    with llmrelay.LLMService(cfg) as svc:
        svc.chat("hi", temperature=0)
        assert main(["cache", "stats", "--path", path]) == 1
        err = capsys.readouterr().err
        assert "held by a running service" in err and "metrics.snapshot().cache" in err
    assert main(["cache", "stats", "--path", path]) == 0  # released on close
    assert re.search(r"^entries\s+1$", capsys.readouterr().out, re.M)


def test_cli_cache_stats_never_shows_another_process_hits_as_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "c")
    _make_cache(path, 2)
    assert main(["cache", "stats", "--path", path]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"^(hits|misses)\s+0$", out, re.M)
    assert "hits, misses" in out and "unknown here" in out
