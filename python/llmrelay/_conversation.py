"""Conversation: a history with a system prompt, trimmed to the model's window.

Trimming drops the oldest turns first, never the system prompt, and never
separates an assistant's tool calls from the tool results that answer them
(they go as one group). A conversation saves to and loads from JSON.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay._types import ChatResponse, Message, to_messages
from llmrelay.errors import InvalidRequestError

if TYPE_CHECKING:
    from llmrelay._service import LLMService

__all__ = ["Conversation"]

_RESERVE_OUTPUT = 1024


class _Saved(msgspec.Struct, kw_only=True):
    system: str | None = None
    model: str | None = None
    priority: int | None = None
    params: dict[str, Any] = {}
    history: list[Message] = []


def _tokens(m: Message) -> int:
    c = m.content
    n = len(c) if isinstance(c, str) else len(msgspec.json.encode(c)) if c else 0
    if m.tool_calls:
        n += len(msgspec.json.encode(m.tool_calls))
    return n // 4 + 4


def _groups(history: list[Message]) -> list[list[Message]]:
    """Turns that must stay together: an assistant with tool calls and its tool results."""
    groups: list[list[Message]] = []
    for m in history:
        if m.role == "tool" and groups:
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


class Conversation:
    """A running chat with one service: ``send`` / ``asend`` add both sides to ``history``."""

    def __init__(
        self,
        service: LLMService,
        *,
        system: str | None = None,
        model: str | None = None,
        priority: int | None = None,
        max_context_tokens: int | None = None,
        **params: Any,
    ) -> None:
        self._service = service
        self.system = system
        self.model = model
        self.priority = priority
        self.max_context_tokens = max_context_tokens
        self.params = params
        self.history: list[Message] = []

    def add(self, message: Message | Mapping[str, Any] | str) -> None:
        """Append a message (a str is a user message)."""
        if isinstance(message, str):
            self.history.extend(to_messages(message))
        else:
            self.history.extend(to_messages([message]))

    def clear(self) -> None:
        """Forget the history (the system prompt stays)."""
        self.history.clear()

    def _budget(self) -> int | None:
        if self.max_context_tokens is not None:
            return self.max_context_tokens
        eng = self._service._engine
        try:
            model = self.model or self._service._model or eng.selector.default_model
            cand = eng.selector.resolve(model)[0]
        except Exception:
            return None
        from llmrelay.providers import capabilities

        window = capabilities(cand.deployment.kind, cand.model).context_window
        if window is None:
            return None
        reserve = int(self.params.get("max_tokens") or _RESERVE_OUTPUT)
        return max(1, window - reserve)

    def messages(self) -> list[Message]:
        """What the next request sends: the system prompt and the history that fits."""
        head = [Message(role="system", content=self.system)] if self.system else []
        budget = self._budget()
        groups = _groups(self.history)
        if budget is not None:
            used = sum(_tokens(m) for m in head)
            kept: list[list[Message]] = []
            for g in reversed(groups):
                cost = sum(_tokens(m) for m in g)
                if used + cost > budget and kept:
                    break
                kept.append(g)
                used += cost
            groups = list(reversed(kept))
        return head + [m for g in groups for m in g]

    def _prepare(self, text: str | Message | Mapping[str, Any]) -> None:
        if isinstance(text, str) and not text:
            raise InvalidRequestError("invalid text='': empty message", field="text")
        self.add(text)

    async def asend(self, text: str | Message | Mapping[str, Any], **params: Any) -> ChatResponse:
        """Add a user turn, get the answer, add it to the history, return it."""
        self._prepare(text)
        try:
            resp = await self._service.achat(
                self.messages(), self.model, priority=self.priority, **{**self.params, **params}
            )
        except BaseException:
            self.history.pop()
            raise
        self.history.append(resp.message)
        return resp

    def send(self, text: str | Message | Mapping[str, Any], **params: Any) -> ChatResponse:
        """The sync twin of :meth:`asend`."""
        self._prepare(text)
        try:
            resp = self._service.chat(
                self.messages(), self.model, priority=self.priority, **{**self.params, **params}
            )
        except BaseException:
            self.history.pop()
            raise
        self.history.append(resp.message)
        return resp

    def to_json(self) -> str:
        """The conversation as JSON (system prompt, defaults and history)."""
        saved = _Saved(
            system=self.system,
            model=self.model,
            priority=self.priority,
            params=self.params,
            history=self.history,
        )
        return msgspec.json.encode(saved).decode()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_json(cls, service: LLMService, data: str | bytes) -> Conversation:
        """A conversation restored from :meth:`to_json` output."""
        try:
            saved = msgspec.json.decode(data, type=_Saved)
        except msgspec.DecodeError as e:
            raise InvalidRequestError(f"invalid conversation JSON: {e}", field="data") from None
        conv = cls(
            service,
            system=saved.system,
            model=saved.model,
            priority=saved.priority,
            **saved.params,
        )
        conv.history = list(saved.history)
        return conv

    @classmethod
    def load(cls, service: LLMService, path: str | os.PathLike[str]) -> Conversation:
        """Read a conversation saved with :meth:`save`."""
        return cls.from_json(service, Path(path).read_bytes())

    def __len__(self) -> int:
        return len(self.history)

    def __repr__(self) -> str:
        return f"<Conversation model={self.model!r} messages={len(self.history)}>"
