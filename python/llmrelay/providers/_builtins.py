"""The built-in provider kinds and the models they list.

Context windows, output limits and list prices (USD per million tokens) are
from the providers' public model pages; a model not listed here is "unknown",
never "incapable".
"""

from __future__ import annotations

from llmrelay.providers._compatible import COMPATIBLE
from llmrelay.providers._inprocess import EchoAdapter
from llmrelay.providers._registry import ModelInfo, ProviderRegistration, register_provider
from llmrelay.providers.anthropic import AnthropicAdapter
from llmrelay.providers.ollama import OllamaAdapter
from llmrelay.providers.openai import OpenAIAdapter

__all__ = ["register_builtins"]


def _chat(
    ctx: int,
    out: int,
    price_in: float | None,
    price_out: float | None,
    *,
    vision: bool | None = True,
    tools: bool = True,
    json_mode: bool = True,
    json_schema: bool | None = True,
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
        input_price_per_mtok=price_in,
        output_price_per_mtok=price_out,
    )


def _embedding(ctx: int, price: float | None) -> ModelInfo:
    return ModelInfo(
        tools=False,
        vision=False,
        json_mode=False,
        streaming=False,
        embeddings=True,
        context_window=ctx,
        input_price_per_mtok=price,
    )


OPENAI_MODELS = {
    "gpt-4o": _chat(128_000, 16_384, 2.50, 10.00),
    "gpt-4o-mini": _chat(128_000, 16_384, 0.15, 0.60),
    "gpt-4.1": _chat(1_047_576, 32_768, 2.00, 8.00),
    "gpt-4.1-mini": _chat(1_047_576, 32_768, 0.40, 1.60),
    "gpt-4.1-nano": _chat(1_047_576, 32_768, 0.10, 0.40),
    "o3-mini": _chat(200_000, 100_000, 1.10, 4.40, vision=False),
    "o4-mini": _chat(200_000, 100_000, 1.10, 4.40),
    # no structured outputs (json_schema) on these two: JSON mode plus the instruction
    "gpt-4-turbo": _chat(128_000, 4_096, 10.00, 30.00, json_schema=False),
    "gpt-3.5-turbo": _chat(16_385, 4_096, 0.50, 1.50, vision=False, json_schema=False),
    "text-embedding-3-small": _embedding(8_191, 0.02),
    "text-embedding-3-large": _embedding(8_191, 0.13),
    "text-embedding-ada-002": _embedding(8_191, 0.10),
}

# Anthropic has no JSON mode; a JSON schema is asked for as a forced tool (json_schema).
ANTHROPIC_MODELS = {
    "claude-opus-4-1": _chat(200_000, 32_000, 15.00, 75.00, json_mode=False),
    "claude-opus-4-0": _chat(200_000, 32_000, 15.00, 75.00, json_mode=False),
    "claude-sonnet-4-5": _chat(200_000, 64_000, 3.00, 15.00, json_mode=False),
    "claude-sonnet-4-0": _chat(200_000, 64_000, 3.00, 15.00, json_mode=False),
    "claude-haiku-4-5": _chat(200_000, 64_000, 1.00, 5.00, json_mode=False),
    "claude-3-7-sonnet-latest": _chat(200_000, 64_000, 3.00, 15.00, json_mode=False),
    "claude-3-5-haiku": _chat(200_000, 8_192, 0.80, 4.00, vision=None, json_mode=False),
    "claude-3-5-haiku-latest": _chat(200_000, 8_192, 0.80, 4.00, vision=None, json_mode=False),
    "claude-3-haiku-20240307": _chat(200_000, 4_096, 0.25, 1.25, json_mode=False),
}

# Local models cost nothing per token; what they can do depends on the weights pulled,
# so only what the model cards state is filled in.
OLLAMA_MODELS = {
    "llama3.2": ModelInfo(tools=True, vision=False, streaming=True, context_window=131_072),
    "llama3.1": ModelInfo(tools=True, vision=False, streaming=True, context_window=131_072),
    "qwen2.5": ModelInfo(tools=True, vision=False, streaming=True, context_window=32_768),
    "qwen3": ModelInfo(tools=True, vision=False, streaming=True, context_window=40_960),
    "mistral": ModelInfo(tools=True, vision=False, streaming=True, context_window=32_768),
    "gemma3": ModelInfo(vision=True, streaming=True, context_window=131_072),
    "llava": ModelInfo(vision=True, streaming=True, context_window=4_096),
    "nomic-embed-text": ModelInfo(embeddings=True, context_window=8_192),
    "mxbai-embed-large": ModelInfo(embeddings=True, context_window=512),
}

BUILTINS = (
    ProviderRegistration(
        kind="openai",
        adapter_factory=OpenAIAdapter,
        default_base_url="https://api.openai.com/v1",
        api_key_env="OPENAI_API_KEY",
        base_url_env="OPENAI_BASE_URL",
        default_model="gpt-4o-mini",
        models=OPENAI_MODELS,
        requires_api_key=True,
    ),
    ProviderRegistration(
        kind="openai_compatible",
        adapter_factory=OpenAIAdapter,
        default_base_url="http://127.0.0.1:8000/v1",
        api_key_env=None,
        base_url_env=None,
        default_model=None,
        models={},
        requires_api_key=False,
    ),
    ProviderRegistration(
        kind="anthropic",
        adapter_factory=AnthropicAdapter,
        default_base_url="https://api.anthropic.com",
        api_key_env="ANTHROPIC_API_KEY",
        base_url_env="ANTHROPIC_BASE_URL",
        default_model="claude-haiku-4-5",
        models=ANTHROPIC_MODELS,
        requires_api_key=True,
    ),
    ProviderRegistration(
        kind="ollama",
        adapter_factory=OllamaAdapter,
        default_base_url="http://127.0.0.1:11434",
        api_key_env=None,
        base_url_env="OLLAMA_HOST",
        default_model="llama3.2",
        models=OLLAMA_MODELS,
        requires_api_key=False,
    ),
    # in-process, zero latency, no HTTP: for tests, demos and overhead benchmarks
    ProviderRegistration(
        kind="echo",
        adapter_factory=EchoAdapter,
        default_base_url="http://127.0.0.1:9",
        api_key_env=None,
        base_url_env=None,
        default_model="echo",
        models={},
        requires_api_key=False,
    ),
)


def register_builtins() -> None:
    """Register the built-in kinds (again, replacing any override): the protocols above
    and the OpenAI-compatible services of :mod:`llmrelay.providers._compatible`."""
    for reg in (*BUILTINS, *COMPATIBLE):
        register_provider(reg, replace=True)
