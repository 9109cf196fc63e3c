"""Request and response types (msgspec Structs) and the checks that build them.

Messages convert losslessly to and from OpenAI-style dicts (``Message.to_dict`` /
``Message.from_dict``), so a response's message goes straight back into the next
request's history. ``to_messages`` and ``build_request`` validate a call's
arguments and raise :class:`~llmrelay.errors.InvalidRequestError` naming the
field path (``messages[1].role``, ``params.temperature``) and the bad value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import msgspec

from llmrelay.errors import InvalidRequestError

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "ContentPart",
    "EmbeddingResponse",
    "Message",
    "Role",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "build_request",
    "to_messages",
]

Role = Literal["system", "user", "assistant", "tool"]
_ROLES = frozenset(("system", "user", "assistant", "tool"))
# Keys of OpenAI response messages that carry nothing we keep; accepted and dropped.
_IGNORED_MESSAGE_KEYS = frozenset(
    ("refusal", "annotations", "audio", "function_call", "reasoning_content")
)
_MESSAGE_KEYS = frozenset(("role", "content", "name", "tool_calls", "tool_call_id"))
_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(field: str, value: Any, expected: str) -> InvalidRequestError:
    return InvalidRequestError(f"{field}={_short(value)}: expected {expected}", field=field)


class ContentPart(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One part of a multi-part message: ``text``, or an ``image_url`` (http(s) or data: URL)."""

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style part dict."""
        if self.type == "text":
            return {"type": "text", "text": self.text or ""}
        image: dict[str, Any] = {"url": self.image_url}
        if self.detail is not None:
            image["detail"] = self.detail
        return {"type": "image_url", "image_url": image}

    @classmethod
    def from_dict(cls, d: Any, field: str = "part") -> ContentPart:
        """Parse an OpenAI-style part dict; a bad shape raises InvalidRequestError at ``field``."""
        if isinstance(d, ContentPart):
            return d
        if not isinstance(d, dict):
            raise _bad(field, d, "a content part dict")
        kind = d.get("type")
        if kind == "text":
            text = d.get("text")
            if not isinstance(text, str):
                raise _bad(f"{field}.text", text, "a string")
            return cls(type="text", text=text)
        if kind == "image_url":
            image = d.get("image_url")
            detail = None
            if isinstance(image, dict):
                detail = image.get("detail")
                image = image.get("url")
                if detail is not None and not isinstance(detail, str):
                    raise _bad(f"{field}.image_url.detail", detail, "a string")
            if not isinstance(image, str) or not image:
                raise _bad(f"{field}.image_url", image, "a URL string or {'url': ...}")
            return cls(type="image_url", image_url=image, detail=detail)
        raise _bad(f"{field}.type", kind, "'text' or 'image_url'")


class ToolCall(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A tool call the model made; ``arguments`` is the parsed JSON object.

    ``raw_arguments`` keeps the model's text when it was not a JSON object (models
    do emit broken JSON); ``arguments`` is then empty.
    """

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style tool call dict (``arguments`` JSON-encoded)."""
        if self.raw_arguments is not None and not self.arguments:
            args = self.raw_arguments
        else:
            args = _json_encode(self.arguments).decode()
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": args},
        }

    @classmethod
    def from_dict(cls, d: Any, field: str = "tool_call") -> ToolCall:
        """Parse an OpenAI-style tool call dict (arguments as a JSON string or an object)."""
        if isinstance(d, ToolCall):
            return d
        if not isinstance(d, dict):
            raise _bad(field, d, "a tool call dict")
        call_id = d.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise _bad(f"{field}.id", call_id, "a non-empty string")
        kind = d.get("type", "function")
        if kind != "function":
            raise _bad(f"{field}.type", kind, "'function'")
        fn = d.get("function")
        if not isinstance(fn, dict):
            raise _bad(f"{field}.function", fn, "a dict with name and arguments")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{field}.function.name", name, "a non-empty string")
        args = fn.get("arguments", {})
        if isinstance(args, dict):
            return cls(id=call_id, name=name, arguments=args)
        if not isinstance(args, str):
            raise _bad(f"{field}.function.arguments", args, "a JSON object string")
        parsed = parse_arguments(args)
        if parsed is None:
            return cls(id=call_id, name=name, arguments={}, raw_arguments=args)
        return cls(id=call_id, name=name, arguments=parsed)


def parse_arguments(text: str) -> dict[str, Any] | None:
    """Parse a tool call's JSON arguments; ``""`` is ``{}``, anything not an object is None."""
    if not text.strip():
        return {}
    try:
        value = _json_decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class ToolCallDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A streamed piece of tool call ``index``: its id and name first, then argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One chat message, convertible to and from the OpenAI-style dict."""

    role: Role
    content: str | list[ContentPart] | None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style message dict."""
        content = self.content
        d: dict[str, Any] = {
            "role": self.role,
            "content": content if not isinstance(content, list) else [p.to_dict() for p in content],
        }
        if self.name is not None:
            d["name"] = self.name
        if self.tool_calls:
            d["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Message:
        """Parse and validate one OpenAI-style message dict."""
        return _message(d, "message")

    @property
    def text(self) -> str:
        """The message's text: the content string, or its text parts joined."""
        content = self.content
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(p.text or "" for p in content if p.type == "text")


def _message(d: Any, field: str) -> Message:
    # fast path: the common {"role": ..., "content": "..."} message
    if type(d) is dict and len(d) == 2:
        role = d.get("role")
        content = d.get("content")
        if type(content) is str and (role == "user" or role == "system" or role == "assistant"):
            return Message(role=role, content=content)
    if isinstance(d, Message):
        if type(d.role) is not str or d.role not in _ROLES:
            raise _bad(f"{field}.role", d.role, "one of system, user, assistant, tool")
        if d.role == "tool" and not d.tool_call_id:
            raise _bad(f"{field}.tool_call_id", d.tool_call_id, "the id of the answered tool call")
        return d
    if not isinstance(d, Mapping):
        raise _bad(field, d, "a message dict or Message")
    role = d.get("role")
    if type(role) is not str:
        raise _bad(f"{field}.role", role, "one of system, user, assistant, tool")
    content = d.get("content")
    if role not in _ROLES:
        raise _bad(f"{field}.role", role, "one of system, user, assistant, tool")
    for key in d:
        if key not in _MESSAGE_KEYS and key not in _IGNORED_MESSAGE_KEYS:
            raise _bad(f"{field}.{key}", d[key], "no such message field")
    if isinstance(content, list):
        content = [ContentPart.from_dict(p, f"{field}.content[{j}]") for j, p in enumerate(content)]
    elif content is not None and not isinstance(content, str):
        raise _bad(f"{field}.content", content, "a string, a list of parts or None")
    name = d.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad(f"{field}.name", name, "a string")
    raw_calls = d.get("tool_calls")
    tool_calls: list[ToolCall] | None = None
    if raw_calls is not None:
        if role != "assistant":
            raise _bad(f"{field}.tool_calls", raw_calls, "tool calls only on assistant messages")
        if not isinstance(raw_calls, list):
            raise _bad(f"{field}.tool_calls", raw_calls, "a list of tool calls")
        tool_calls = [
            ToolCall.from_dict(c, f"{field}.tool_calls[{j}]") for j, c in enumerate(raw_calls)
        ] or None
    tool_call_id = d.get("tool_call_id")
    if role == "tool":
        if not isinstance(tool_call_id, str) or not tool_call_id:
            raise _bad(f"{field}.tool_call_id", tool_call_id, "the id of the answered tool call")
    elif tool_call_id is not None:
        raise _bad(f"{field}.tool_call_id", tool_call_id, "tool_call_id only on tool messages")
    if content is None and not (role == "assistant" and tool_calls):
        raise _bad(f"{field}.content", content, "content (None only with assistant tool_calls)")
    return Message(
        role=cast(Role, role),
        content=content,
        name=name,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
    )


def to_messages(messages: str | Sequence[Mapping[str, Any] | Message]) -> list[Message]:
    """Validate a call's messages: a string is one user message; dicts are OpenAI-style."""
    if isinstance(messages, str):
        return [Message(role="user", content=messages)]
    if not isinstance(messages, (list, tuple)):
        raise _bad("messages", messages, "a string or a list of messages")
    if not messages:
        raise InvalidRequestError("messages=[]: expected at least one message", field="messages")
    out: list[Message] = []
    append = out.append
    for m in messages:
        # fast path: the common {"role": ..., "content": "..."} message
        if type(m) is dict and len(m) == 2:
            role = m.get("role")
            content = m.get("content")
            if type(content) is str and (role == "user" or role == "system" or role == "assistant"):
                append(Message(role=role, content=content))
                continue
        append(_message(m, f"messages[{len(out)}]"))
    return out


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """Token counts of one call; ``cached_tokens`` is the part of the prompt read from cache."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


class ChatRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A validated chat request; build it with :func:`build_request`.

    ``extra`` is passed through to the provider as is (OpenAI/Anthropic: merged into
    the body; Ollama: ``keep_alive``/``think``/``format`` top level, the rest into
    ``options``, e.g. ``num_ctx``). ``metadata`` stays with llmrelay (logs, metrics)
    and is not sent to providers.
    """

    messages: list[Message]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    extra: dict[str, Any] | None = None
    stream: bool = False


class ChatResponse(msgspec.Struct, kw_only=True):
    """A provider's answer. The service fills ``latency_s``, ``cached`` and ``attempts``."""

    id: str
    model: str
    provider: str
    text: str
    message: Message
    tool_calls: list[ToolCall]
    finish_reason: str | None
    usage: Usage
    latency_s: float = 0.0
    cached: bool = False
    attempts: int = 1


class ChatChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One piece of a streamed answer: a text delta, tool call deltas, and at the end the
    finish reason and usage."""

    text: str = ""
    tool_calls: list[ToolCallDelta] = []
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    provider: str | None = None
    id: str | None = None


class EmbeddingResponse(msgspec.Struct, kw_only=True):
    """Embeddings of the inputs, in input order."""

    embeddings: list[list[float]]
    model: str
    provider: str
    usage: Usage


# ---------------------------------------------------------------- params


def _number(field: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise _bad(field, v, f"a number in [{lo:g}, {hi:g}]")
    return float(v)


def _int(field: str, v: Any, lo: int | None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
        raise _bad(field, v, "an integer" + (f" >= {lo}" if lo is not None else ""))
    return v


def _stop(field: str, v: Any) -> list[str] | None:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s for s in v):
        raise _bad(field, v, "a string or a list of non-empty strings")
    return list(v) or None


def _tools(field: str, v: Any) -> list[dict[str, Any]] | None:
    if not isinstance(v, (list, tuple)):
        raise _bad(field, v, "a list of tool dicts")
    for i, tool in enumerate(v):
        f = f"{field}[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _bad(f, tool, "{'type': 'function', 'function': {...}}")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise _bad(f"{f}.function", fn, "a dict with a name")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _bad(f"{f}.function.name", fn.get("name"), "a non-empty string")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _bad(f"{f}.function.parameters", params, "a JSON schema dict")
    return list(v) or None


def _tool_choice(field: str, v: Any) -> str | dict[str, Any]:
    if v in ("auto", "none", "required"):
        return str(v)
    if isinstance(v, dict) and v.get("type") == "function":
        fn = v.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]:
            return v
    raise _bad(field, v, "'auto', 'none', 'required' or {'type': 'function', 'function': {...}}")


def _response_format(field: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict) or v.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad(field, v, "{'type': 'text' | 'json_object' | 'json_schema', ...}")
    if v["type"] == "json_schema" and not isinstance(v.get("json_schema"), dict):
        raise _bad(f"{field}.json_schema", v.get("json_schema"), "a dict with name and schema")
    return v


def _str(field: str, v: Any) -> str:
    if not isinstance(v, str):
        raise _bad(field, v, "a string")
    return v


def _str_map(field: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise _bad(field, v, "a dict of strings to strings")
    return v


def _extra(field: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise _bad(field, v, "a dict with string keys")
    return v


_PARAMS: dict[str, Any] = {
    "temperature": lambda f, v: _number(f, v, 0.0, 2.0),
    "top_p": lambda f, v: _number(f, v, 0.0, 1.0),
    "max_tokens": lambda f, v: _int(f, v, 1),
    "seed": lambda f, v: _int(f, v, None),
    "stop": _stop,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "response_format": _response_format,
    "user": _str,
    "metadata": _str_map,
    "extra": _extra,
}


def build_request(
    messages: str | Sequence[Mapping[str, Any] | Message],
    model: str | None,
    params: Mapping[str, Any],
    *,
    stream: bool = False,
) -> ChatRequest:
    """Validate a call and build its :class:`ChatRequest`.

    ``params`` takes temperature, max_tokens, top_p, stop, seed, tools, tool_choice,
    response_format, user, metadata and extra; a None value means unset. Anything
    else raises InvalidRequestError with ``field="params.<name>"``.
    """
    msgs = to_messages(messages)
    if model is not None and (not isinstance(model, str) or not model):
        raise _bad("model", model, "a non-empty model name")
    checked: dict[str, Any] = {}
    for key, value in params.items():
        check = _PARAMS.get(key)
        if check is None:
            raise InvalidRequestError(
                f"params.{key}={_short(value)}: unknown parameter "
                f"(known: {', '.join(sorted(_PARAMS))})",
                field=f"params.{key}",
            )
        if value is not None:
            checked[key] = check(f"params.{key}", value)
    return ChatRequest(messages=msgs, model=model, stream=stream, **checked)
