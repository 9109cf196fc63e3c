"""Provider adapters and the provider registry.

Built-in kinds: ``openai`` (and ``openai_compatible`` for any server speaking the
OpenAI Chat Completions protocol), ``anthropic`` and ``ollama``; ``azure`` (Azure
OpenAI's deployment URLs and ``api-key``); the OpenAI-compatible services
``gemini``, ``groq``, ``together``, ``deepseek``, ``mistral``, ``openrouter``,
``xai``, ``fireworks`` and the local servers ``vllm``, ``lmstudio``, ``llamacpp``. Third-party
kinds register with :func:`register_provider` or the ``llmrelay.providers``
entry-point group.
"""

from __future__ import annotations

from llmrelay._wire import WireReply, WireRequest
from llmrelay.providers._accumulate import ChunkAccumulator, accumulate_chunks
from llmrelay.providers._base import ProviderAdapter, StreamDecoder
from llmrelay.providers._builtins import register_builtins
from llmrelay.providers._inprocess import EchoAdapter, InProcessAdapter
from llmrelay.providers._ratelimit import RateLimitInfo, parse_rate_limit_headers
from llmrelay.providers._registry import (
    ENTRY_POINT_GROUP,
    ModelInfo,
    ProviderRegistration,
    capabilities,
    get_provider,
    list_providers,
    register_provider,
    unregister_provider,
)
from llmrelay.providers.anthropic import AnthropicAdapter
from llmrelay.providers.azure import AzureOpenAIAdapter
from llmrelay.providers.ollama import OllamaAdapter
from llmrelay.providers.openai import OpenAIAdapter

__all__ = [
    "ENTRY_POINT_GROUP",
    "AnthropicAdapter",
    "AzureOpenAIAdapter",
    "ChunkAccumulator",
    "EchoAdapter",
    "InProcessAdapter",
    "ModelInfo",
    "OllamaAdapter",
    "OpenAIAdapter",
    "ProviderAdapter",
    "ProviderRegistration",
    "RateLimitInfo",
    "StreamDecoder",
    "WireReply",
    "WireRequest",
    "accumulate_chunks",
    "capabilities",
    "get_provider",
    "list_providers",
    "parse_rate_limit_headers",
    "register_builtins",
    "register_provider",
    "unregister_provider",
]

register_builtins()
