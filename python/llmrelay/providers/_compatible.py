"""Registrations of OpenAI-compatible services: hosted APIs and local servers.

Each kind is the OpenAI adapter under its own name (so its models' capabilities
are looked up under that kind) with its default base URL, key variable, default
model, the models it is known to serve and how it takes a JSON schema
(``structured_default``, see :meth:`OpenAIAdapter.structured_mode`). Facts are
from each provider's public documentation (base URLs, key variables, context
windows); a model not listed is "unknown", never "incapable". Azure OpenAI has
its own URL shape and header (:mod:`llmrelay.providers.azure`).
"""

from __future__ import annotations

from typing import Any

from llmrelay.providers._registry import ModelInfo, ProviderRegistration
from llmrelay.providers.azure import AzureOpenAIAdapter
from llmrelay.providers.openai import OpenAIAdapter

__all__ = ["COMPATIBLE", "compatible_adapter"]


def compatible_adapter(
    kind: str, *, structured_default: str = "json_schema", supports_n: bool = False
) -> type[OpenAIAdapter]:
    """An OpenAI adapter class speaking for ``kind``.

    ``n`` > 1 is refused before sending unless ``supports_n`` (most compatible
    services answer one choice, or reject ``n``).
    """
    name = "".join(part.capitalize() for part in kind.split("_")) + "Adapter"
    attrs: dict[str, Any] = {
        "kind": kind,
        "structured_default": structured_default,
        "supports_n": supports_n,
        "__doc__": f"The OpenAI Chat Completions protocol as {kind} serves it.",
        "__module__": __name__,
    }
    return type(name, (OpenAIAdapter,), attrs)


def _chat(
    ctx: int,
    out: int | None = None,
    *,
    tools: bool | None = True,
    vision: bool | None = None,
    json_mode: bool | None = True,
    json_schema: bool | None = None,
) -> ModelInfo:
    return ModelInfo(
        tools=tools,
        vision=vision,
        json_mode=json_mode,
        json_schema=json_schema,
        streaming=True,
        embeddings=False,
        context_window=ctx,
        max_output_tokens=out,
    )


def _embedding(ctx: int) -> ModelInfo:
    return ModelInfo(
        tools=False, vision=False, json_mode=False, streaming=False, embeddings=True,
        context_window=ctx,
    )  # fmt: skip


_M1 = 1_048_576
_K128 = 131_072

GEMINI_MODELS = {
    "gemini-2.5-pro": _chat(_M1, 65_536, vision=True, json_schema=True),
    "gemini-2.5-flash": _chat(_M1, 65_536, vision=True, json_schema=True),
    "gemini-2.5-flash-lite": _chat(_M1, 65_536, vision=True, json_schema=True),
    "gemini-2.0-flash": _chat(_M1, 8_192, vision=True, json_schema=True),
    "gemini-embedding-001": _embedding(2_048),
    "text-embedding-004": _embedding(2_048),
}

# Groq: JSON mode on every model; a JSON schema natively on the models it lists for it
GROQ_MODELS = {
    "llama-3.1-8b-instant": _chat(_K128, 131_072, vision=False, json_schema=False),
    "llama-3.3-70b-versatile": _chat(_K128, 32_768, vision=False, json_schema=False),
    "openai/gpt-oss-120b": _chat(_K128, 65_536, vision=False, json_schema=True),
    "openai/gpt-oss-20b": _chat(_K128, 65_536, vision=False, json_schema=True),
    "moonshotai/kimi-k2-instruct": _chat(_K128, 16_384, vision=False, json_schema=True),
}

TOGETHER_MODELS = {
    "meta-llama/Llama-3.3-70B-Instruct-Turbo": _chat(_K128, vision=False),
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo": _chat(_K128, vision=False),
    "Qwen/Qwen2.5-72B-Instruct-Turbo": _chat(32_768, vision=False),
    "deepseek-ai/DeepSeek-V3": _chat(_K128, vision=False),
}

# DeepSeek: JSON mode (json_object), no JSON schema
DEEPSEEK_MODELS = {
    "deepseek-chat": _chat(_K128, 8_192, vision=False, json_schema=False),
    "deepseek-reasoner": _chat(_K128, 65_536, tools=None, vision=False, json_schema=False),
}

MISTRAL_MODELS = {
    "mistral-large-latest": _chat(_K128, vision=True, json_schema=True),
    "mistral-medium-latest": _chat(_K128, vision=True, json_schema=True),
    "mistral-small-latest": _chat(_K128, vision=True, json_schema=True),
    "codestral-latest": _chat(256_000, vision=False, json_schema=True),
    "open-mistral-nemo": _chat(_K128, vision=False, json_schema=True),
    "mistral-embed": _embedding(8_192),
}

OPENROUTER_MODELS = {
    "openai/gpt-4o-mini": _chat(128_000, 16_384, vision=True, json_schema=True),
    "openai/gpt-4o": _chat(128_000, 16_384, vision=True, json_schema=True),
    "meta-llama/llama-3.3-70b-instruct": _chat(_K128, vision=False),
}

XAI_MODELS = {
    "grok-4": _chat(256_000, vision=True, json_schema=True),
    "grok-3": _chat(_K128, vision=False, json_schema=True),
    "grok-3-mini": _chat(_K128, vision=False, json_schema=True),
}

FIREWORKS_MODELS = {
    "accounts/fireworks/models/llama-v3p1-8b-instruct": _chat(_K128, vision=False),
    "accounts/fireworks/models/llama-v3p3-70b-instruct": _chat(_K128, vision=False),
}


def _hosted(
    kind: str,
    base_url: str,
    key_env: str,
    default_model: str,
    models: dict[str, ModelInfo],
    structured_default: str = "json_schema",
) -> ProviderRegistration:
    return ProviderRegistration(
        kind=kind,
        adapter_factory=compatible_adapter(kind, structured_default=structured_default),
        default_base_url=base_url,
        api_key_env=key_env,
        default_model=default_model,
        models=models,
        requires_api_key=True,
    )


def _local(kind: str, base_url: str, key_env: str | None, n: bool = False) -> ProviderRegistration:
    return ProviderRegistration(
        kind=kind,
        adapter_factory=compatible_adapter(kind, supports_n=n),
        default_base_url=base_url,
        api_key_env=key_env,
        default_model=None,
        models={},
        requires_api_key=False,
    )


COMPATIBLE = (
    ProviderRegistration(
        kind="azure",
        adapter_factory=AzureOpenAIAdapter,
        default_base_url="",  # each resource has its own endpoint: base_url is required
        api_key_env="AZURE_OPENAI_API_KEY",
        base_url_env="AZURE_OPENAI_ENDPOINT",
        default_model=None,  # the model is the deployment's name, chosen in the portal
        models={},
        requires_api_key=True,
    ),
    _hosted(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "GEMINI_API_KEY",
        "gemini-2.5-flash",
        GEMINI_MODELS,
    ),
    _hosted(
        "groq",
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        "llama-3.1-8b-instant",
        GROQ_MODELS,
        "json_object",
    ),
    _hosted(
        "together",
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        TOGETHER_MODELS,
        "json_object",
    ),
    _hosted(
        "deepseek",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
        "deepseek-chat",
        DEEPSEEK_MODELS,
        "json_object",
    ),
    _hosted(
        "mistral",
        "https://api.mistral.ai/v1",
        "MISTRAL_API_KEY",
        "mistral-small-latest",
        MISTRAL_MODELS,
    ),
    _hosted(
        "openrouter",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
        "openai/gpt-4o-mini",
        OPENROUTER_MODELS,
    ),
    _hosted("xai", "https://api.x.ai/v1", "XAI_API_KEY", "grok-3-mini", XAI_MODELS),
    _hosted(
        "fireworks",
        "https://api.fireworks.ai/inference/v1",
        "FIREWORKS_API_KEY",
        "accounts/fireworks/models/llama-v3p1-8b-instruct",
        FIREWORKS_MODELS,
    ),
    # local servers: no key unless the server was started with one
    _local("vllm", "http://127.0.0.1:8000/v1", "VLLM_API_KEY", n=True),
    _local("lmstudio", "http://127.0.0.1:1234/v1", None),
    _local("llamacpp", "http://127.0.0.1:8080/v1", "LLAMA_API_KEY"),
)
