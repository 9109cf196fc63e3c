"""llmrelay: one fast, reliable API over many LLM providers, with a native core.

Heavy parts (httpx, the providers, the service) load on first use, so
``import llmrelay`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmrelay import _core, errors
from llmrelay._config import (
    BudgetConfig,
    CacheConfig,
    CircuitBreakerConfig,
    DedupConfig,
    LLMServiceConfig,
    ModelPrice,
    ModelSelectionStrategy,
    OrchestratorConfig,
    ProviderConfig,
    RateLimitConfig,
    RequestTimeouts,
    SharedStateConfig,
    TelemetryConfig,
)
from llmrelay._priority import Priority
from llmrelay.errors import LLMRelayError

if TYPE_CHECKING:
    from llmrelay._cachekey import CacheControl
    from llmrelay._conversation import Conversation
    from llmrelay._metrics import MetricsSnapshot, ServiceMetrics
    from llmrelay._params import ChatParams, EmbedParams
    from llmrelay._proxy import DefaultServiceProxy, configure, llm
    from llmrelay._runner import RunSummary
    from llmrelay._service import LLMService
    from llmrelay._types import (
        ChatChunk,
        ChatRequest,
        ChatResponse,
        Choice,
        Cost,
        EmbeddingResponse,
        Message,
        TokenLogprob,
        ToolCall,
        ToolCallDelta,
        Usage,
    )
    from llmrelay.providers import (
        ChunkAccumulator,
        ProviderRegistration,
        accumulate_chunks,
        register_provider,
    )

__version__: str = _core.__version__  # Cargo.toml owns the version (pyproject reads it)

_LAZY = {
    "CacheControl": "llmrelay._cachekey",
    "ChatChunk": "llmrelay._types",
    "ChatParams": "llmrelay._params",
    "ChatRequest": "llmrelay._types",
    "ChatResponse": "llmrelay._types",
    "ChunkAccumulator": "llmrelay.providers",
    "Choice": "llmrelay._types",
    "Conversation": "llmrelay._conversation",
    "Cost": "llmrelay._types",
    "DefaultServiceProxy": "llmrelay._proxy",
    "EmbedParams": "llmrelay._params",
    "EmbeddingResponse": "llmrelay._types",
    "LLMService": "llmrelay._service",
    "Message": "llmrelay._types",
    "MetricsSnapshot": "llmrelay._metrics",
    "ProviderRegistration": "llmrelay.providers",
    "RunSummary": "llmrelay._runner",
    "ServiceMetrics": "llmrelay._metrics",
    "TokenLogprob": "llmrelay._types",
    "ToolCall": "llmrelay._types",
    "ToolCallDelta": "llmrelay._types",
    "Usage": "llmrelay._types",
    "accumulate_chunks": "llmrelay.providers",
    "configure": "llmrelay._proxy",
    "llm": "llmrelay._proxy",
    "register_provider": "llmrelay.providers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrelay' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BudgetConfig",
    "CacheConfig",
    "CacheControl",
    "ChatChunk",
    "ChatParams",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "ChunkAccumulator",
    "CircuitBreakerConfig",
    "Conversation",
    "Cost",
    "DedupConfig",
    "DefaultServiceProxy",
    "EmbedParams",
    "EmbeddingResponse",
    "LLMRelayError",
    "LLMService",
    "LLMServiceConfig",
    "Message",
    "MetricsSnapshot",
    "ModelPrice",
    "ModelSelectionStrategy",
    "OrchestratorConfig",
    "Priority",
    "ProviderConfig",
    "ProviderRegistration",
    "RateLimitConfig",
    "RequestTimeouts",
    "RunSummary",
    "ServiceMetrics",
    "SharedStateConfig",
    "TelemetryConfig",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "__version__",
    "accumulate_chunks",
    "configure",
    "errors",
    "llm",
    "register_provider",
]
