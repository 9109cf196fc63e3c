"""Adapters that answer in-process, with no HTTP: local models, test doubles, benchmarks.

Subclass :class:`InProcessAdapter` and implement ``complete`` (and optionally
``complete_stream``); register it with :func:`register_provider` like any other
kind. The service calls it directly, skipping the HTTP client, but everything
else (selection, cache, dedup, scheduling, limits, breakers, metrics) applies.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

from llmrelay._types import ChatChunk, ChatRequest, ChatResponse, EmbeddingResponse, Message, Usage
from llmrelay.providers._base import ProviderAdapter

__all__ = ["EchoAdapter", "InProcessAdapter"]


class InProcessAdapter(ProviderAdapter):
    """Base of adapters that need no HTTP client (``client`` arguments are ``None``)."""

    in_process: ClassVar[bool] = True
    kind: ClassVar[str] = "in_process"

    async def complete(self, req: ChatRequest, model: str) -> ChatResponse:
        """Answer one chat request."""
        raise NotImplementedError(f"{type(self).__name__} must implement complete()")

    async def complete_stream(
        self, req: ChatRequest, model: str
    ) -> AsyncGenerator[ChatChunk, None]:
        """Answer as a stream; by default the whole answer as one chunk."""
        resp = await self.complete(req, model)
        yield ChatChunk(text=resp.text, model=resp.model, provider=resp.provider)
        yield ChatChunk(finish_reason=resp.finish_reason, usage=resp.usage, model=resp.model)

    async def chat(self, client: Any, req: ChatRequest, model: str, **_: Any) -> ChatResponse:
        return await self.complete(req, model)

    async def embed(
        self, client: Any, inputs: list[str], model: str, **params: Any
    ) -> EmbeddingResponse:
        """In-process adapters have embeddings only where they implement this."""
        raise NotImplementedError(f"{self.kind} adapter has no embeddings")

    async def stream(
        self, client: Any, req: ChatRequest, model: str, **_: Any
    ) -> AsyncGenerator[ChatChunk, None]:
        async for chunk in self.complete_stream(req, model):
            yield chunk


class EchoAdapter(InProcessAdapter):
    """Answers every request at once with the last user message, echoed. Zero latency."""

    kind: ClassVar[str] = "echo"
    #: Answers without ever suspending, so no deadline timer is armed around it.
    never_blocks: ClassVar[bool] = True

    async def complete(self, req: ChatRequest, model: str) -> ChatResponse:
        last = req.messages[-1].content if req.messages else ""
        text = f"echo: {last if isinstance(last, str) else ''}"
        n_in = sum(len(str(m.content or "")) for m in req.messages) // 4 + 1
        n_out = len(text) // 4 + 1
        return ChatResponse(
            id="echo",
            model=model,
            provider=self.deployment,
            text=text,
            message=Message(role="assistant", content=text),
            tool_calls=[],
            finish_reason="stop",
            usage=Usage(prompt_tokens=n_in, completion_tokens=n_out, total_tokens=n_in + n_out),
        )
