"""Scripted and default replies: what a fake answers, independent of the wire protocol.

A reply is planned once per request (text, tool calls, finish reason, token counts) and then
rendered by a protocol module. The default reply echoes the last user message; scripted
replies are consumed in order, chat and embedding scripts from separate queues. A script
given ``match=`` answers only a request it matches (see :class:`ScriptMatch`); a request
takes the first queued script that matches it, else the first one without ``match``, else
the default reply.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from llmrelay.errors import ConfigError

__all__ = [
    "ChatPlan",
    "EmbeddingScript",
    "Finish",
    "ScriptMatch",
    "ScriptedChat",
    "ToolCallSpec",
    "embedding_vector",
    "estimate_tokens",
    "pick_script",
    "plan_chat",
    "text_pieces",
]

Finish = Literal["stop", "length", "tool_calls"]

_json_encode = msgspec.json.encode


def estimate_tokens(text: str) -> int:
    """The fakes' token count: about four characters per token, at least one for non-empty."""
    return (len(text) + 3) // 4


@dataclass(frozen=True, slots=True)
class ToolCallSpec:
    """A tool call a fake will answer with; ``id`` is generated when not given."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        return _json_encode(self.arguments).decode()


BodyPredicate = Callable[[dict[str, Any]], object]
_MATCH_KEYS = frozenset({"path", "model", "body"})


@dataclass(frozen=True, slots=True, eq=False)
class ScriptMatch:
    """Which requests a script answers: all of ``path``, ``model`` and ``body`` that are set.

    ``path`` is the request path (``"/v1/chat/completions"``), ``model`` the ``model`` of
    the JSON body, ``body`` a predicate called with the JSON body (truthy: a match).
    """

    path: str | None = None
    model: str | None = None
    body: BodyPredicate | None = None

    @classmethod
    def parse(cls, match: object) -> ScriptMatch | None:
        """``script(match=...)``: None, a body predicate, or a mapping of path/model/body."""
        if match is None:
            return None
        if callable(match):
            return cls(body=match)
        if not isinstance(match, Mapping) or not match:
            raise ConfigError(
                f"match={match!r}: must be a callable(body) -> bool or a mapping with any of"
                " 'path', 'model', 'body'"
            )
        unknown = set(match) - _MATCH_KEYS
        if unknown:
            raise ConfigError(f"match has unknown keys {sorted(unknown)}: use path, model, body")
        for key in ("path", "model"):
            value = match.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"match[{key!r}]={value!r}: must be a non-empty str")
        body = match.get("body")
        if body is not None and not callable(body):
            raise ConfigError(f"match['body']={body!r}: must be a callable(body) -> bool")
        return cls(match.get("path"), match.get("model"), body)

    def __call__(self, path: str, body: Any) -> bool:
        if self.path is not None and path != self.path:
            return False
        if self.model is not None and not (
            isinstance(body, dict) and body.get("model") == self.model
        ):
            return False
        return self.body is None or bool(self.body(body if isinstance(body, dict) else {}))

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in (("path", self.path), ("model", self.model)) if v]
        if self.body is not None:
            parts.append(f"body={getattr(self.body, '__qualname__', repr(self.body))}")
        return f"match({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class ScriptedChat:
    """One queued chat reply."""

    text: str | None = None
    tool_calls: tuple[ToolCallSpec, ...] = ()
    finish_reason: Finish | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    match: ScriptMatch | None = None
    #: the reasoning the model shows (thinking / reasoning_content), and whether it is
    #: redacted (Anthropic's ``redacted_thinking``)
    reasoning: str | None = None
    redacted: bool = False
    #: prompt-cache counts to report instead of the emulated ones
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None

    def describe(self) -> str:
        parts = [repr(self.text)] if self.text is not None else []
        if self.reasoning is not None:
            parts.append(f"reasoning {self.reasoning!r}")
        parts += [f"tool call {c.name}({c.arguments_json})" for c in self.tool_calls]
        if self.match is not None:
            parts.append(repr(self.match))
        return "chat reply " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class EmbeddingScript:
    """One queued embeddings reply: fixed vectors, or hashed vectors of ``dims`` dimensions."""

    dims: int | None = None
    vectors: tuple[tuple[float, ...], ...] | None = None
    match: ScriptMatch | None = None

    def describe(self) -> str:
        what = (
            f"{len(self.vectors)} fixed vectors"
            if self.vectors is not None
            else (f"dims={self.dims}")
        )
        return f"embedding reply {what}" + (f", {self.match!r}" if self.match else "")


def pick_script(
    queue: Iterable[ScriptedChat | EmbeddingScript], path: str, body: Any
) -> int | None:
    """The index of the script a request takes: the first matching one with ``match``,
    else the first one without, else None."""
    fallback: int | None = None
    for i, script in enumerate(queue):
        match = script.match
        if match is None:
            if fallback is None:
                fallback = i
        elif match(path, body):
            return i
    return fallback


@dataclass(slots=True)
class ChatPlan:
    """A planned chat reply, ready for a protocol module to render."""

    text: str
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    finish: Finish = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning: str | None = None
    redacted: bool = False
    #: the part of ``completion_tokens`` spent reasoning
    reasoning_tokens: int = 0
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


def plan_chat(
    script: ScriptedChat | None,
    prompt_tokens: int,
    last_user_text: str,
    max_tokens: int | None,
) -> ChatPlan:
    """Plan the reply: the script's if one is queued, else ``"echo: <last user text>"``."""
    if script is None:
        text, calls, finish = f"echo: {last_user_text}", [], None
    else:
        text, calls, finish = script.text or "", list(script.tool_calls), script.finish_reason
    if finish is None:
        finish = "tool_calls" if calls else "stop"
        if max_tokens is not None and not calls and estimate_tokens(text) > max_tokens:
            text = text[: max(0, max_tokens) * 4]
            finish = "length"
    completion = estimate_tokens(text) + sum(
        estimate_tokens(c.name) + estimate_tokens(c.arguments_json) for c in calls
    )
    if script is not None and script.prompt_tokens is not None:
        prompt_tokens = script.prompt_tokens
    reasoning = script.reasoning if script is not None else None
    thought = estimate_tokens(reasoning) if reasoning else 0
    completion += thought
    if script is not None and script.completion_tokens is not None:
        completion = script.completion_tokens
    plan = ChatPlan(text, calls, finish, prompt_tokens, completion, reasoning)
    plan.reasoning_tokens = min(thought, completion)
    if script is not None:
        plan.redacted = script.redacted
        plan.cached_tokens = script.cached_tokens
        plan.cache_write_tokens = script.cache_write_tokens
    return plan


def text_pieces(text: str) -> list[str]:
    """Split a reply into stream deltas, one word each (with its leading space)."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])] if text else []


def json_pieces(text: str, size: int = 16) -> list[str]:
    """Split a JSON string into deltas of ``size`` characters (tool-call arguments)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def embedding_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector of ``dims`` floats derived from a hash of ``text``."""
    raw = bytearray()
    counter = 0
    data = text.encode()
    while len(raw) < dims:
        raw += hashlib.blake2b(data, digest_size=64, salt=struct.pack("<Q", counter)).digest()
        counter += 1
    values = [(b - 127.5) / 127.5 for b in raw[:dims]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def parse_tool_calls(tool_calls: Sequence[Mapping[str, Any]]) -> tuple[ToolCallSpec, ...]:
    """Validate ``script(tool_calls=[{"name": ..., "arguments": {...}}])``."""
    specs = []
    for i, call in enumerate(tool_calls):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ConfigError(f"tool_calls[{i}] must be a mapping with a str 'name', got {call!r}")
        args = call.get("arguments", {})
        if not isinstance(args, Mapping):
            raise ConfigError(f"tool_calls[{i}].arguments must be a mapping, got {args!r}")
        extra = set(call) - {"name", "arguments", "id"}
        if extra:
            raise ConfigError(f"tool_calls[{i}] has unknown keys {sorted(extra)}")
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise ConfigError(f"tool_calls[{i}].id must be a str, got {call_id!r}")
        specs.append(ToolCallSpec(call["name"], dict(args), call_id))
    return tuple(specs)
