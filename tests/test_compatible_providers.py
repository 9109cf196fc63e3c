"""The OpenAI-compatible registrations, Azure OpenAI against its fake, and model aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from llmrelay import LLMService, LLMServiceConfig, ModelSelectionStrategy, ProviderConfig
from llmrelay.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    LLMRelayError,
)
from llmrelay.providers import AzureOpenAIAdapter, capabilities, get_provider
from llmrelay.testing import FakeProvider

HOSTED = {
    # kind: (default base URL, key variable, default model, its context window)
    "gemini": (
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "GEMINI_API_KEY",
        "gemini-2.5-flash",
        1_048_576,
    ),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY", "llama-3.1-8b-instant", 131_072),
    "together": (
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        131_072,
    ),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "deepseek-chat", 131_072),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY", "mistral-small-latest", 131_072),
    "openrouter": (
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
        "openai/gpt-4o-mini",
        128_000,
    ),
    "xai": ("https://api.x.ai/v1", "XAI_API_KEY", "grok-3-mini", 131_072),
    "fireworks": (
        "https://api.fireworks.ai/inference/v1",
        "FIREWORKS_API_KEY",
        "accounts/fireworks/models/llama-v3p1-8b-instruct",
        131_072,
    ),
}
LOCAL = {
    "vllm": "http://127.0.0.1:8000/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
}


@pytest.mark.parametrize("kind", sorted(HOSTED))
def test_hosted_registration(kind: str) -> None:
    url, key_env, model, window = HOSTED[kind]
    reg = get_provider(kind)
    assert reg.default_base_url == url and reg.api_key_env == key_env
    assert reg.default_model == model and reg.requires_api_key
    info = capabilities(kind, model)
    assert info.context_window == window and info.streaming
    adapter = reg.adapter_factory(deployment=kind, base_url=url, api_key="k")
    assert adapter.kind == kind and type(adapter).__name__.endswith("Adapter")


@pytest.mark.parametrize("kind", sorted(LOCAL))
def test_local_registration(kind: str) -> None:
    reg = get_provider(kind)
    assert reg.default_base_url == LOCAL[kind] and not reg.requires_api_key


def test_structured_mode_per_kind() -> None:
    def mode(kind: str, model: str) -> str:
        adapter = get_provider(kind).adapter_factory(deployment="d", base_url="http://x")
        result: str = adapter.structured_mode(model)
        return result

    assert mode("groq", "llama-3.1-8b-instant") == "json_object"
    assert mode("groq", "openai/gpt-oss-20b") == "json_schema"
    assert mode("deepseek", "deepseek-chat") == "json_object"
    assert mode("mistral", "mistral-small-latest") == "json_schema"
    assert mode("vllm", "any-local-model") == "json_schema"
    assert mode("together", "some/unlisted-model") == "json_object"


async def test_compatible_kind_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A groq deployment with no key given takes GROQ_API_KEY; a structured call on a
    model without JSON-schema support goes as JSON mode plus the instruction; ``n`` > 1 is
    refused before sending."""
    monkeypatch.setenv("GROQ_API_KEY", "gsk-from-env")
    async with FakeProvider("openai", api_key="gsk-from-env") as fake:
        fake.script('{"answer": 42}')
        cfg = LLMServiceConfig(
            providers=[ProviderConfig(name="groq", base_url=fake.base_url)],
            default_model="groq/llama-3.1-8b-instant",
        )
        async with LLMService(cfg) as svc:
            schema = {
                "type": "object",
                "properties": {"answer": {"type": "integer"}},
                "required": ["answer"],
            }
            r = await svc.achat("q", response_format=schema)  # type: ignore[arg-type]
            assert r.parsed == {"answer": 42}
            with pytest.raises(InvalidRequestError) as info:
                await svc.achat("q", n=2)
            assert info.value.field == "params.n"
        rec = fake.requests[-1]
        assert rec.headers["authorization"] == "Bearer gsk-from-env"
        assert rec.json is not None and rec.json["response_format"] == {"type": "json_object"}
        assert fake.request_count == 1


# ---- Azure OpenAI ----------------------------------------------------------------------------


def azure_config(fake: FakeProvider, **kw: Any) -> LLMServiceConfig:
    provider = {"name": "az", "kind": "azure", "base_url": fake.url, "api_key": "azure-key"}
    provider.update(kw)
    return LLMServiceConfig(
        providers=[ProviderConfig(**provider)], default_model="az/my-gpt4o-deployment"
    )


async def test_azure_chat_stream_embed_and_structured() -> None:
    async with FakeProvider("azure", api_key="azure-key") as fake:
        fake.script("hi there")
        async with LLMService(azure_config(fake)) as svc:
            r = await svc.achat("hello")
            assert r.text == "hi there" and r.model == "my-gpt4o-deployment"
            chunks = [c async for c in svc.astream("hello")]
            assert "".join(c.text for c in chunks) == "echo: hello" and chunks[-1].usage is not None
            e = await svc.aembed(["a", "b"], "az/my-embedding")
            assert len(e.embeddings) == 2
            schema = {
                "type": "object",
                "properties": {"answer": {"type": "integer"}},
                "required": ["answer"],
            }
            fake.script('{"answer": 1}')
            s = await svc.achat("q", response_format=schema)  # type: ignore[arg-type]
            assert s.parsed == {"answer": 1}
    paths = [r.path for r in fake.requests]
    assert paths == [
        "/openai/deployments/my-gpt4o-deployment/chat/completions",
        "/openai/deployments/my-gpt4o-deployment/chat/completions",
        "/openai/deployments/my-embedding/embeddings",
        "/openai/deployments/my-gpt4o-deployment/chat/completions",
    ]
    for rec in fake.requests:
        assert rec.headers["api-key"] == "azure-key" and "authorization" not in rec.headers
    last = fake.requests[-1].json
    assert last is not None and last["response_format"]["type"] == "json_schema"


async def test_azure_api_version_from_base_url_and_errors() -> None:
    async with FakeProvider("azure", api_key="azure-key") as fake:
        fake.script("ok")
        cfg = azure_config(fake, base_url=f"{fake.url}?api-version=2025-01-01-preview")
        async with LLMService(cfg) as svc:
            assert (await svc.achat("x")).text == "ok"
        bad_version = azure_config(fake, base_url=f"{fake.url}?api-version=latest")
        async with LLMService(bad_version) as svc:
            with pytest.raises(LLMRelayError) as info:
                await svc.achat("x")
            assert getattr(info.value, "status_code", None) == 404
        async with LLMService(azure_config(fake, api_key="wrong")) as svc:
            with pytest.raises(AuthenticationError):
                await svc.achat("x")


def test_azure_adapter_url_and_version_sources() -> None:
    a = AzureOpenAIAdapter(
        deployment="az",
        base_url="https://r.openai.azure.com/openai/",
        api_key="secret-azure-key",
        environ={},
    )
    assert a.endpoint == "https://r.openai.azure.com" and a.api_version == "2024-10-21"
    b = AzureOpenAIAdapter(
        deployment="az",
        base_url="https://r.openai.azure.com",
        environ={"OPENAI_API_VERSION": "2024-08-01-preview"},
    )
    assert b.api_version == "2024-08-01-preview"
    wire = b.wire_embed(["x"], "dep/with space", {})
    assert wire.url == (
        "https://r.openai.azure.com/openai/deployments/dep%2Fwith%20space/embeddings"
        "?api-version=2024-08-01-preview"
    )
    assert "secret-azure-key" not in repr(a) and "***" in repr(a)


def test_azure_without_endpoint_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    cfg = LLMServiceConfig(
        providers=[ProviderConfig(name="az", kind="azure", api_key="k")],
        default_model="az/dep",
    )
    with pytest.raises(ConfigError) as info:
        LLMService(cfg)
    assert info.value.field == "providers[0].base_url" and "AZURE_OPENAI_ENDPOINT" in str(
        info.value
    )


# ---- aliases ---------------------------------------------------------------------------------


async def test_alias_routes_calls_defaults_and_fallbacks() -> None:
    async with FakeProvider("openai") as primary, FakeProvider("openai") as backup:
        primary.script("from primary")
        backup.script("from backup")
        cfg = LLMServiceConfig(
            providers=[
                ProviderConfig(name="groq", base_url=primary.base_url, api_key="k"),
                ProviderConfig(name="other", kind="openai", base_url=backup.base_url, api_key="k"),
            ],
            aliases={"fast": "groq/llama-3.1-8b-instant", "spare": "other/gpt-4o-mini"},
            default_model="fast",
            selection=ModelSelectionStrategy(fallbacks={"fast": ["spare"]}),
        )
        async with LLMService(cfg) as svc:
            r = await svc.achat("x")
            assert r.text == "from primary" and r.provider == "groq"
            assert primary.requests[-1].json["model"] == "llama-3.1-8b-instant"  # type: ignore[index]
            primary.inject("server_error", times=10)
            r = await svc.achat("x", "fast", cache=False)
            assert r.text == "from backup" and r.provider == "other"


@pytest.mark.parametrize(
    ("aliases", "field"),
    [
        ({"a/b": "openai/gpt-4o"}, "aliases['a/b']"),
        ({"": "openai/gpt-4o"}, "aliases['']"),
        ({"fast": ""}, "aliases['fast']"),
        ({"fast": "nosuch/model"}, "aliases['fast']"),
        ({"fast": "quick", "quick": "openai/gpt-4o"}, "aliases['fast']"),
        ({"openai": "openai/gpt-4o"}, "aliases['openai']"),
    ],
)
def test_bad_aliases_are_config_errors(aliases: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        LLMServiceConfig(providers=[ProviderConfig(name="openai", api_key="k")], aliases=aliases)
    assert info.value.field == field


def test_aliases_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "llmrelay.toml"
    path.write_text(
        'aliases = {fast = "groq/llama-3.1-8b-instant"}\n'
        'default_model = "fast"\n'
        "[[providers]]\n"
        'name = "groq"\n'
        'api_key = "k"\n',
        encoding="utf-8",
    )
    cfg = LLMServiceConfig.from_toml(path)
    assert cfg.aliases == {"fast": "groq/llama-3.1-8b-instant"}
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'aliases = {fast = "nosuch/m"}\n[[providers]]\nname = "groq"\napi_key = "k"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        LLMServiceConfig.from_toml(bad)
    assert info.value.field == "aliases['fast']"
    assert msgspec.json.decode(msgspec.json.encode(cfg))["aliases"] == {
        "fast": "groq/llama-3.1-8b-instant"
    }


def test_azure_fake_in_a_subprocess() -> None:
    """``python -m llmrelay.testing azure`` serves the same protocol from another process."""
    with FakeProvider.spawn("azure", api_key="azure-key") as fake:
        fake.script("from the child")
        cfg = LLMServiceConfig(
            providers=[
                ProviderConfig(name="az", kind="azure", base_url=fake.base_url, api_key="azure-key")
            ],
            default_model="az/dep",
        )
        with LLMService(cfg) as svc:
            assert svc.chat("x").text == "from the child"
