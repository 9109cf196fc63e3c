"""Conversation: a history with a system prompt, trimmed to the model's window.

Trimming drops the oldest turns first, never the system prompt, and never
separates an assistant's tool calls from the tool results that answer them
(they go as one group). After tool results (``add_tool_result``) the
conversation continues with ``asend()`` / ``astream()`` and no text. A call
changes the history only when it succeeds: the user turn and the answer are
added together (a stream's once it has ended), so a failed or abandoned call
leaves it as it was. A conversation saves to and loads from JSON.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay._tokens import message_tokens
from llmrelay._types import ChatChunk, ChatResponse, Message, ToolCall, to_messages
from llmrelay.errors import InvalidRequestError
from llmrelay.providers._accumulate import ChunkAccumulator

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
    """A running chat with one service: ``send`` / ``asend`` / ``stream`` / ``astream``
    add both sides to ``history``."""

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
        return self._compose(self.history)

    def _compose(self, history: list[Message]) -> list[Message]:
        head = [Message(role="system", content=self.system)] if self.system else []
        budget = self._budget()
        groups = _groups(history)
        if budget is not None:
            used = sum(message_tokens(m) for m in head)
            kept: list[list[Message]] = []
            for g in reversed(groups):
                cost = sum(message_tokens(m) for m in g)
                if used + cost > budget and kept:
                    break
                kept.append(g)
                used += cost
            groups = list(reversed(kept))
        return head + [m for g in groups for m in g]

    @property
    def pending_tool_calls(self) -> list[ToolCall]:
        """The last assistant turn's tool calls that have no tool result yet, in order."""
        groups = _groups(self.history)
        if not groups:
            return []
        head, *results = groups[-1]
        if head.role != "assistant" or not head.tool_calls:
            return []
        answered = {m.tool_call_id for m in results}
        return [c for c in head.tool_calls if c.id not in answered]

    def add_tool_result(self, tool_call_id: str, content: Any, *, name: str | None = None) -> None:
        """Append the result of one of :attr:`pending_tool_calls`.

        ``content`` is a str, or anything JSON-encodable (sent as its JSON text). Then
        ``asend()`` / ``astream()`` with no text continue the conversation, no user turn
        needed.
        """
        pending = self.pending_tool_calls
        if not any(c.id == tool_call_id for c in pending):
            waiting = ", ".join(repr(c.id) for c in pending)
            detail = (
                f"the calls waiting for a result are {waiting}"
                if waiting
                else ("the last assistant turn made no tool call still waiting for a result")
            )
            raise InvalidRequestError(
                f"invalid tool_call_id={tool_call_id!r}: no tool call with this id; {detail}",
                field="tool_call_id",
            )
        if not isinstance(content, str):
            try:
                content = msgspec.json.encode(content).decode()
            except (TypeError, msgspec.EncodeError):
                raise InvalidRequestError(
                    f"invalid content of type {type(content).__name__}: expected a str or"
                    " a JSON-encodable value",
                    field="content",
                ) from None
        self.history.append(
            Message(role="tool", content=content, tool_call_id=tool_call_id, name=name)
        )

    def _turn(self, text: str | Message | Mapping[str, Any] | None) -> list[Message]:
        """The user turn a call adds (none for ``text=None``), checked before sending."""
        pending = self.pending_tool_calls
        if pending:
            missing = ", ".join(repr(c.id) for c in pending)
            raise InvalidRequestError(
                f"invalid history: tool calls {missing} have no result yet;"
                " add_tool_result() each before sending",
                field="tool_call_id",
            )
        if text is None:
            if not self.history or self.history[-1].role not in ("user", "tool"):
                raise InvalidRequestError(
                    "invalid text=None: nothing to answer (the history does not end with a"
                    " user turn or a tool result); give the text of the next user turn",
                    field="text",
                )
            return []
        if isinstance(text, str):
            if not text:
                raise InvalidRequestError("invalid text='': empty message", field="text")
            return to_messages(text)
        return to_messages([text])

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.params, **params} if params else self.params

    async def asend(
        self, text: str | Message | Mapping[str, Any] | None = None, **params: Any
    ) -> ChatResponse:
        """Add a user turn, get the answer, add both to the history, return the answer.

        With no ``text`` the model answers the history as it is (after tool results).
        If the call fails the history stays as it was.
        """
        turn = self._turn(text)
        resp = await self._service.achat(
            self._compose(self.history + turn),
            self.model,
            priority=self.priority,
            **self._params(params),
        )
        self.history.extend([*turn, resp.message])
        return resp

    def send(
        self, text: str | Message | Mapping[str, Any] | None = None, **params: Any
    ) -> ChatResponse:
        """The sync twin of :meth:`asend`."""
        turn = self._turn(text)
        resp = self._service.chat(
            self._compose(self.history + turn),
            self.model,
            priority=self.priority,
            **self._params(params),
        )
        self.history.extend([*turn, resp.message])
        return resp

    def astream(
        self, text: str | Message | Mapping[str, Any] | None = None, **params: Any
    ) -> AsyncIterator[ChatChunk]:
        """Like :meth:`asend`, streamed: an async iterator of :class:`ChatChunk`.

        The user turn and the assistant turn (its text and tool calls, reassembled from
        the deltas) are added to the history together, once the stream has ended
        completely. A stream that fails or is left unfinished adds nothing: the history
        is as before the call, so the same call can simply be made again. Bad input
        raises here, before anything is sent.
        """
        turn = self._turn(text)
        return self._streamed(turn, self._params(params))

    def stream(
        self, text: str | Message | Mapping[str, Any] | None = None, **params: Any
    ) -> Iterator[ChatChunk]:
        """The sync twin of :meth:`astream`."""
        turn = self._turn(text)
        return self._service._engine.runner.iterate(self._streamed(turn, self._params(params)))

    async def _streamed(
        self, turn: list[Message], params: dict[str, Any]
    ) -> AsyncGenerator[ChatChunk, None]:
        chunks = self._service.astream(
            self._compose(self.history + turn), self.model, priority=self.priority, **params
        )
        acc = ChunkAccumulator()
        try:
            async for chunk in chunks:
                acc.add(chunk)
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        self.history.extend([*turn, acc.response().message])

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
