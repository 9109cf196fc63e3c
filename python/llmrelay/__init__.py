"""llmrelay: one fast, reliable API over many LLM providers, with a native core."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmrelay import errors
from llmrelay._types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    Message,
    ToolCall,
    Usage,
)
from llmrelay.errors import LLMRelayError

if TYPE_CHECKING:
    from llmrelay.providers import ProviderRegistration, register_provider

__version__ = "0.1.0"

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "EmbeddingResponse",
    "LLMRelayError",
    "Message",
    "ProviderRegistration",
    "ToolCall",
    "Usage",
    "__version__",
    "errors",
    "register_provider",
]

# names whose modules import httpx: loaded on first use, so `import llmrelay` stays fast
_LAZY = {"ProviderRegistration": "llmrelay.providers", "register_provider": "llmrelay.providers"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrelay' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
