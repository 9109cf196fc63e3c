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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from llmrelay._config import LLMServiceConfig
from llmrelay._params import ChatParams, EmbedParams
from llmrelay.errors import ConfigError, LLMRelayError

if TYPE_CHECKING:
    from llmrelay._conversation import Conversation
    from llmrelay._metrics import ServiceMetrics
    from llmrelay._service import BatchItem, CacheIn, LLMService
    from llmrelay._types import ChatChunk, ChatResponse, EmbeddingResponse, MessagesIn
    from llmrelay.events import Listener

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

    def chat(
        self,
        messages: MessagesIn,
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> ChatResponse:
        """``LLMService.chat`` on the default service."""
        return self.service.chat(
            messages, model, priority=priority, timeout=timeout, cache=cache, **params
        )

    async def achat(
        self,
        messages: MessagesIn,
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> ChatResponse:
        """``LLMService.achat`` on the default service."""
        return await self.service.achat(
            messages, model, priority=priority, timeout=timeout, cache=cache, **params
        )

    def stream(
        self,
        messages: MessagesIn,
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> Iterator[ChatChunk]:
        """``LLMService.stream`` on the default service."""
        return self.service.stream(
            messages, model, priority=priority, timeout=timeout, cache=cache, **params
        )

    def astream(
        self,
        messages: MessagesIn,
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> AsyncIterator[ChatChunk]:
        """``LLMService.astream`` on the default service."""
        return self.service.astream(
            messages, model, priority=priority, timeout=timeout, cache=cache, **params
        )

    def embed(
        self,
        inputs: str | Sequence[str],
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **params: Unpack[EmbedParams],
    ) -> EmbeddingResponse:
        """``LLMService.embed`` on the default service."""
        return self.service.embed(inputs, model, priority=priority, timeout=timeout, **params)

    async def aembed(
        self,
        inputs: str | Sequence[str],
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **params: Unpack[EmbedParams],
    ) -> EmbeddingResponse:
        """``LLMService.aembed`` on the default service."""
        return await self.service.aembed(
            inputs, model, priority=priority, timeout=timeout, **params
        )

    def batch(
        self,
        requests: Sequence[BatchItem],
        *,
        concurrency: int | None = None,
        priority: int | None = None,
        model: str | None = None,
        **params: Unpack[ChatParams],
    ) -> list[ChatResponse | LLMRelayError]:
        """``LLMService.batch`` on the default service."""
        return self.service.batch(
            requests, concurrency=concurrency, priority=priority, model=model, **params
        )

    async def abatch(
        self,
        requests: Sequence[BatchItem],
        *,
        concurrency: int | None = None,
        priority: int | None = None,
        model: str | None = None,
        **params: Unpack[ChatParams],
    ) -> list[ChatResponse | LLMRelayError]:
        """``LLMService.abatch`` on the default service."""
        return await self.service.abatch(
            requests, concurrency=concurrency, priority=priority, model=model, **params
        )

    def conversation(
        self,
        system: str | None = None,
        model: str | None = None,
        priority: int | None = None,
        **params: Unpack[ChatParams],
    ) -> Conversation:
        """``LLMService.conversation`` on the default service."""
        return self.service.conversation(system, model, priority, **params)

    def with_options(
        self,
        model: str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> LLMService:
        """``LLMService.with_options`` on the default service."""
        return self.service.with_options(model, priority, timeout, cache, **params)

    @property
    def metrics(self) -> ServiceMetrics:
        """The default service's metrics."""
        return self.service.metrics

    def add_listener(self, listener: Listener) -> Callable[[], bool]:
        """``LLMService.add_listener`` on the default service (built if need be). A
        listener does not carry over to the service built after a ``close``."""
        return self.service.add_listener(listener)

    def remove_listener(self, listener: Listener) -> bool:
        """``LLMService.remove_listener`` on the default service."""
        return self.service.remove_listener(listener)

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
