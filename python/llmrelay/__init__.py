"""llmrelay: one fast, reliable API over many LLM providers, with a native core."""

from __future__ import annotations

from llmrelay import errors
from llmrelay.errors import LLMRelayError

__version__ = "0.1.0"

__all__ = [
    "LLMRelayError",
    "__version__",
    "errors",
]
