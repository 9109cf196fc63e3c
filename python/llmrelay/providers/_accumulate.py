"""Reassemble a streamed answer (text, reasoning and its blocks, tool calls, finish reason,
usage, log probabilities) into a ChatResponse."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmrelay._types import (
    ChatChunk,
    ChatResponse,
    Message,
    TokenLogprob,
    ToolCall,
    Usage,
    parse_arguments,
)

__all__ = ["ChunkAccumulator", "accumulate_chunks"]


class ChunkAccumulator:
    """Collects chunks one by one (``add``) and gives the whole answer (``response``)."""

    __slots__ = (
        "_blocks",
        "_calls",
        "_logprobs",
        "_reasoning",
        "_text",
        "finish_reason",
        "id",
        "model",
        "provider",
        "usage",
    )

    def __init__(self, *, id: str = "", model: str = "", provider: str = "") -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._blocks: list[dict[str, Any]] = []
        # index -> [id, name, argument pieces]
        self._calls: dict[int, tuple[list[str | None], list[str]]] = {}
        self._logprobs: list[TokenLogprob] | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.id = id
        self.model = model
        self.provider = provider

    def add(self, chunk: ChatChunk) -> None:
        """Take one chunk into account."""
        if chunk.text:
            self._text.append(chunk.text)
        if chunk.reasoning:
            self._reasoning.append(chunk.reasoning)
        if chunk.reasoning_blocks:
            self._blocks.extend(chunk.reasoning_blocks)
        for delta in chunk.tool_calls:
            entry = self._calls.get(delta.index)
            if entry is None:
                entry = self._calls[delta.index] = ([None, None], [])
            if delta.id:
                entry[0][0] = delta.id
            if delta.name:
                entry[0][1] = delta.name
            if delta.arguments_delta:
                entry[1].append(delta.arguments_delta)
        if chunk.logprobs:
            if self._logprobs is None:
                self._logprobs = []
            self._logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.id and not self.id:
            self.id = chunk.id
        if chunk.model and not self.model:
            self.model = chunk.model
        if chunk.provider and not self.provider:
            self.provider = chunk.provider

    def response(self) -> ChatResponse:
        """The answer assembled so far."""
        text = "".join(self._text)
        calls: list[ToolCall] = []
        for index in sorted(self._calls):
            (call_id, name), pieces = self._calls[index]
            raw = "".join(pieces)
            args = parse_arguments(raw)
            calls.append(
                ToolCall(
                    id=call_id or f"call_{index}",
                    name=name or "",
                    arguments=args if args is not None else {},
                    raw_arguments=None if args is not None else raw,
                )
            )
        reasoning = "".join(self._reasoning) if self._reasoning else None
        blocks = self._blocks or None
        message = Message(
            role="assistant",
            content=text if text or not (calls or blocks) else None,
            tool_calls=calls or None,
            reasoning=reasoning,
            reasoning_blocks=blocks,
        )
        return ChatResponse(
            id=self.id,
            model=self.model,
            provider=self.provider,
            text=text,
            message=message,
            tool_calls=calls,
            finish_reason=self.finish_reason,
            usage=self.usage or Usage(),
            logprobs=self._logprobs,
            reasoning=reasoning,
        )


def accumulate_chunks(
    chunks: Iterable[ChatChunk], *, id: str = "", model: str = "", provider: str = ""
) -> ChatResponse:
    """The ChatResponse a stream of chunks adds up to (tool call arguments joined and parsed)."""
    acc = ChunkAccumulator(id=id, model=model, provider=provider)
    for chunk in chunks:
        acc.add(chunk)
    return acc.response()
