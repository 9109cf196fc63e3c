"""Structured output's reply side: unwrapping a forced tool call, the repair turn
and the stream's tail. The schema side (``response_format=Model`` to an
:class:`~llmrelay._outputspec.OutputSpec`, validation of a reply's text) is in
:mod:`llmrelay._outputspec`; the engine decides when each applies
(:mod:`llmrelay._structured_call`).
"""

from __future__ import annotations

import msgspec

from llmrelay._outputspec import (
    OutputSpec,
    instruction,
    is_object_schema,
    output_spec,
    parsed_builtins,
    schema_of,
    with_instruction,
)
from llmrelay._types import ChatChunk, ChatResponse, Message, ToolCallDelta

__all__ = [
    "OutputSpec",
    "StreamTail",
    "instruction",
    "is_object_schema",
    "output_spec",
    "parsed_builtins",
    "repair_messages",
    "schema_of",
    "unwrap",
    "with_instruction",
]

_encode = msgspec.json.encode


def unwrap(spec: OutputSpec, resp: ChatResponse, user_tools: bool) -> ChatResponse:
    """A reply given as the forced tool's call (Anthropic), as text: the JSON it holds.

    Untouched when the call had tools of its own or the reply is not exactly
    one call of the schema's tool.
    """
    calls = resp.tool_calls
    if user_tools or len(calls) != 1 or calls[0].name != spec.name or resp.text:
        return resp
    text = _encode(calls[0].arguments).decode()
    finish = "stop" if resp.finish_reason == "tool_calls" else resp.finish_reason
    return msgspec.structs.replace(
        resp,
        text=text,
        tool_calls=[],
        message=Message(role="assistant", content=text),
        finish_reason=finish,
    )


def repair_messages(messages: list[Message], raw: str, error: str) -> list[Message]:
    """The history of the repair attempt: the call's, the reply that failed, and the
    validation error sent back."""
    return [
        *messages,
        Message(role="assistant", content=raw or "(empty reply)"),
        Message(
            role="user",
            content=(
                f"Your reply does not validate against the JSON schema: {error}. "
                "Reply again with only the corrected JSON, nothing else."
            ),
        ),
    ]


class StreamTail:
    """A structured stream's last step: the forced tool's argument deltas as text,
    the tail (finish reason, usage) held back until the end, then ``parsed`` on the
    final chunk.

    ``feed`` gives the chunks to hand on now; ``finish`` the last ones, with the
    text's parse (or the validation error) known.
    """

    __slots__ = ("_held", "_spec", "_text", "_tool_index", "_user_tools", "error")

    def __init__(self, spec: OutputSpec, user_tools: bool) -> None:
        self._spec = spec
        self._user_tools = user_tools
        self._text: list[str] = []
        self._held: list[ChatChunk] = []
        self._tool_index: int | None = None
        self.error: str | None = None

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return "".join(self._text)

    def feed(self, chunk: ChatChunk) -> list[ChatChunk]:
        """The chunks to hand on now for ``chunk`` (none while it is held back)."""
        chunk = self._as_text(chunk)
        if chunk.text:
            self._text.append(chunk.text)
        if chunk.finish_reason is not None or chunk.usage is not None:
            self._held.append(chunk)
            return []
        out, self._held = [*self._held, chunk], []
        return out

    def finish(self) -> list[ChatChunk]:
        """The held tail, the last chunk carrying ``parsed`` when the text validates
        (else ``error`` says why and nothing carries it)."""
        value, self.error = self._spec.try_parse(self.text)
        held, self._held = self._held, []
        if self.error is not None:
            return held
        last = held.pop() if held else ChatChunk()
        return [*held, msgspec.structs.replace(last, parsed=value)]

    def _as_text(self, chunk: ChatChunk) -> ChatChunk:
        if self._user_tools:
            return chunk
        keep: list[ToolCallDelta] = []
        text = chunk.text
        for d in chunk.tool_calls:
            if self._tool_index is None and d.name == self._spec.name:
                self._tool_index = d.index
            if d.index == self._tool_index:
                text += d.arguments_delta
            else:
                keep.append(d)
        finish = chunk.finish_reason
        if finish == "tool_calls" and self._tool_index is not None and not keep:
            finish = "stop"
        same = len(keep) == len(chunk.tool_calls) and finish == chunk.finish_reason
        if same and text == chunk.text:
            return chunk
        return msgspec.structs.replace(chunk, text=text, tool_calls=keep, finish_reason=finish)
