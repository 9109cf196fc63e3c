"""``llmrelay.llm``: a default service built on first use, from the environment.

The config comes from :func:`configure` if it was called, else from
``LLMRELAY_CONFIG`` (a TOML file), else from ``OPENAI_API_KEY``,
``ANTHROPIC_API_KEY`` and ``OLLAMA_HOST`` (see ``LLMServiceConfig.from_env``).
A call naming no model uses ``default_model``, else ``LLMRELAY_DEFAULT_MODEL``,
else the registry's default model of the first provider (``openai`` ->
``gpt-4o-mini``), so ``llm.chat("Hello")`` works with only ``OPENAI_API_KEY``
set. Building is thread-safe and happens once; a ConfigError names what to set
when nothing is configured.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from llmrelay._config import LLMServiceConfig
from llmrelay.errors import ConfigError

if TYPE_CHECKING:
    from llmrelay._service import LLMService
    from llmrelay._types import ChatChunk, ChatResponse, EmbeddingResponse

__all__ = ["DefaultServiceProxy", "configure"]


class DefaultServiceProxy:
    """Forwards every call to a lazily built default :class:`LLMService`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._service: LLMService | None = None
        self._config: LLMServiceConfig | None = None

    def configure(self, config: LLMServiceConfig | Mapping[str, Any]) -> None:
        """Set the config used when the default service is built (before first use)."""
        cfg = LLMServiceConfig.from_dict(config) if isinstance(config, Mapping) else config
        if not isinstance(cfg, LLMServiceConfig):
            raise ConfigError(
                f"invalid config: expected LLMServiceConfig, got {type(cfg).__name__}"
            )
        with self._lock:
            if self._service is not None:
                raise ConfigError(
                    "invalid configure(): the default service is already built; "
                    "call llmrelay.llm.close() first"
                )
            self._config = cfg

    @property
    def service(self) -> LLMService:
        """The default service, built on first use."""
        svc = self._service
        if svc is not None:
            return svc
        with self._lock:
            if self._service is None:
                from llmrelay._service import LLMService

                cfg = self._config or LLMServiceConfig.from_env()
                self._service = LLMService(cfg)
            return self._service

    def chat(self, messages: Any, model: str | None = None, **kw: Any) -> ChatResponse:
        """``LLMService.chat`` on the default service."""
        return self.service.chat(messages, model, **kw)

    async def achat(self, messages: Any, model: str | None = None, **kw: Any) -> ChatResponse:
        """``LLMService.achat`` on the default service."""
        return await self.service.achat(messages, model, **kw)

    def stream(self, messages: Any, model: str | None = None, **kw: Any) -> Iterator[ChatChunk]:
        """``LLMService.stream`` on the default service."""
        return self.service.stream(messages, model, **kw)

    def astream(
        self, messages: Any, model: str | None = None, **kw: Any
    ) -> AsyncIterator[ChatChunk]:
        """``LLMService.astream`` on the default service."""
        return self.service.astream(messages, model, **kw)

    def embed(self, inputs: Any, model: str | None = None, **kw: Any) -> EmbeddingResponse:
        """``LLMService.embed`` on the default service."""
        return self.service.embed(inputs, model, **kw)

    async def aembed(self, inputs: Any, model: str | None = None, **kw: Any) -> EmbeddingResponse:
        """``LLMService.aembed`` on the default service."""
        return await self.service.aembed(inputs, model, **kw)

    def batch(self, requests: Any, **kw: Any) -> list[Any]:
        """``LLMService.batch`` on the default service."""
        return self.service.batch(requests, **kw)

    async def abatch(self, requests: Any, **kw: Any) -> list[Any]:
        """``LLMService.abatch`` on the default service."""
        return await self.service.abatch(requests, **kw)

    def conversation(self, *args: Any, **kw: Any) -> Any:
        """``LLMService.conversation`` on the default service."""
        return self.service.conversation(*args, **kw)

    def with_options(self, **kw: Any) -> LLMService:
        """``LLMService.with_options`` on the default service."""
        return self.service.with_options(**kw)

    @property
    def metrics(self) -> Any:
        """The default service's metrics."""
        return self.service.metrics

    def close(self) -> None:
        """Close the default service (a later call builds a new one)."""
        with self._lock:
            svc, self._service = self._service, None
        if svc is not None:
            svc.close()

    async def aclose(self) -> None:
        """Close the default service from async code."""
        with self._lock:
            svc, self._service = self._service, None
        if svc is not None:
            await svc.aclose()

    def __repr__(self) -> str:
        state = "built" if self._service is not None else "not built"
        return f"<DefaultServiceProxy {state}>"


llm = DefaultServiceProxy()


def configure(config: LLMServiceConfig | Mapping[str, Any]) -> None:
    """Replace the default service's config before its first use."""
    llm.configure(config)
