"""Request and response types (msgspec Structs) and the checks that build them.

Messages convert losslessly to and from OpenAI-style dicts (``Message.to_dict`` /
``Message.from_dict``), so a response's message goes straight back into the next
request's history; openai SDK objects (anything with ``model_dump()``) are taken
as their dicts. ``to_messages`` and ``build_request`` validate a call's arguments
and raise :class:`~llmrelay.errors.InvalidRequestError` naming the field path
(``messages[1].role``, ``params.temperature``) and the bad value. Every result
type has ``to_dict()``: plain JSON-ready builtins, nested objects in their own
``to_dict`` shape (messages and tool calls OpenAI-style).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, cast

import msgspec

from llmrelay._params import bad as _bad
from llmrelay._params import check_chat_params, check_encodable
from llmrelay.errors import InvalidRequestError

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "ContentPart",
    "Cost",
    "EmbeddingResponse",
    "Message",
    "MessagesIn",
    "Role",
    "SupportsModelDump",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "build_request",
    "to_messages",
]

Role = Literal["system", "user", "assistant", "tool"]
_ROLES = frozenset(("system", "user", "assistant", "tool"))
# Keys of OpenAI response messages that carry nothing we keep; accepted and dropped.
_IGNORED_MESSAGE_KEYS = frozenset(("refusal", "annotations", "audio", "function_call"))
_MESSAGE_KEYS = frozenset(
    (
        "role",
        "content",
        "name",
        "tool_calls",
        "tool_call_id",
        "reasoning_content",
        "thinking_blocks",
        "cache_control",
    )
)
#: The reasoning blocks a Message keeps (Anthropic's shape) and the string keys each needs.
_BLOCK_KEYS = {"thinking": ("thinking", "signature"), "redacted_thinking": ("data",)}
_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


class SupportsModelDump(Protocol):
    """An object that dumps itself to a dict: a pydantic model, e.g. an openai SDK message."""

    def model_dump(self) -> Mapping[str, Any]:
        """The object as a dict."""
        ...


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready builtins, objects with ``to_dict`` in their own shape."""
    to_dict = getattr(value, "to_dict", None)
    if to_dict is not None:
        return to_dict()
    dump = getattr(value, "model_dump", None)  # a pydantic model in ``parsed``
    if dump is not None and not isinstance(value, type):
        return dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return msgspec.to_builtins(value)


def _struct_dict(obj: msgspec.Struct) -> dict[str, Any]:
    """Every field of ``obj`` (defaults included), each as :func:`_plain` builtins."""
    return {name: _plain(getattr(obj, name)) for name in obj.__struct_fields__}


class ContentPart(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One part of a multi-part message: ``text``, or an ``image_url`` (http(s) or data: URL)."""

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: str | None = None
    detail: str | None = None
    #: Anthropic's prompt-caching breakpoint on this part (``{"type": "ephemeral"}``);
    #: sent to Anthropic only, left out for other providers
    cache_control: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style part dict (with ``cache_control`` when set)."""
        if self.type == "text":
            d: dict[str, Any] = {"type": "text", "text": self.text or ""}
        else:
            image: dict[str, Any] = {"url": self.image_url}
            if self.detail is not None:
                image["detail"] = self.detail
            d = {"type": "image_url", "image_url": image}
        if self.cache_control is not None:
            d["cache_control"] = self.cache_control
        return d

    @classmethod
    def from_dict(cls, d: Any, field: str = "part") -> ContentPart:
        """Parse an OpenAI-style part dict; a bad shape raises InvalidRequestError at ``field``."""
        if isinstance(d, ContentPart):
            return d
        if not isinstance(d, dict):
            raise _bad(field, d, "a content part dict")
        kind = d.get("type")
        cc = d.get("cache_control")
        if cc is not None:
            cc = check_cache_control(cc, f"{field}.cache_control")
        if kind == "text":
            text = d.get("text")
            if not isinstance(text, str):
                raise _bad(f"{field}.text", text, "a string")
            return cls(type="text", text=text, cache_control=cc)
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
            return cls(type="image_url", image_url=image, detail=detail, cache_control=cc)
        raise _bad(f"{field}.type", kind, "'text' or 'image_url'")


def check_cache_control(cc: Any, field: str) -> dict[str, Any]:
    """A ``cache_control`` value (``{"type": "ephemeral"}``, optionally ``"ttl"``: ``"5m"``
    or ``"1h"``), or InvalidRequestError at ``field``."""
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise _bad(field, cc, "{'type': 'ephemeral'} (optionally with 'ttl': '5m' or '1h')")
    for key in cc:
        if key not in ("type", "ttl"):
            raise _bad(f"{field}.{key}", cc[key], "no such cache_control field")
    ttl = cc.get("ttl")
    if ttl is not None and ttl not in ("5m", "1h"):
        raise _bad(f"{field}.ttl", ttl, "'5m' or '1h'")
    return cc


def check_reasoning_blocks(blocks: Any, field: str) -> list[dict[str, Any]]:
    """Reasoning blocks as a provider sent them (``thinking`` with its ``signature``,
    ``redacted_thinking`` with its ``data``), or InvalidRequestError at ``field``."""
    if not isinstance(blocks, list):
        raise _bad(field, blocks, "a list of thinking / redacted_thinking blocks")
    for j, block in enumerate(blocks):
        f = f"{field}[{j}]"
        keys = _BLOCK_KEYS.get(str(block.get("type"))) if isinstance(block, dict) else None
        if keys is None:
            raise _bad(f, block, "a {'type': 'thinking' | 'redacted_thinking', ...} block")
        for key in keys:
            if not isinstance(block.get(key), str):
                raise _bad(f"{f}.{key}", block.get(key), "a string")
    return blocks


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

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (JSON-ready), every field present."""
        return _struct_dict(self)


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One chat message, convertible to and from the OpenAI-style dict.

    An assistant message keeps the model's reasoning: ``reasoning`` (its text, the
    OpenAI-compatible ``reasoning_content``) and ``reasoning_blocks`` (the provider's
    own blocks, signatures intact: Anthropic's ``thinking`` / ``redacted_thinking``),
    so that the message put back into the history sends them back unchanged. In the
    dict they are ``reasoning_content`` and ``thinking_blocks``.
    """

    role: Role
    content: str | list[ContentPart] | None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None
    reasoning_blocks: list[dict[str, Any]] | None = None
    #: Anthropic's prompt-caching breakpoint on the message's last block
    cache_control: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style message dict (with ``reasoning_content``, ``thinking_blocks``
        and ``cache_control`` when set)."""
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
        if self.reasoning is not None:
            d["reasoning_content"] = self.reasoning
        if self.reasoning_blocks:
            d["thinking_blocks"] = [dict(b) for b in self.reasoning_blocks]
        if self.cache_control is not None:
            d["cache_control"] = self.cache_control
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


def _dumped(d: Any, field: str) -> Mapping[str, Any]:
    """An SDK object's dict (``model_dump()``), without its unset (None) keys."""
    try:
        dumped = d.model_dump()
    except Exception as e:
        raise _bad(field, d, f"a message whose model_dump() works ({type(e).__name__})") from None
    if not isinstance(dumped, Mapping):
        raise _bad(field, d, "a message whose model_dump() gives a dict")
    return {k: v for k, v in dumped.items() if v is not None}


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
        content = d.content
        if not (
            content is None
            or type(content) is str
            or (isinstance(content, list) and all(type(p) is ContentPart for p in content))
        ):
            raise _bad(f"{field}.content", content, "a string, a list of ContentPart or None")
        return d
    if not isinstance(d, Mapping):
        if not callable(getattr(d, "model_dump", None)):
            raise _bad(field, d, "a message dict, a Message or an object with model_dump()")
        d = _dumped(d, field)
    role = d.get("role")
    if type(role) is not str:
        raise _bad(f"{field}.role", role, "one of system, user, assistant, tool")
    if role == "developer":  # OpenAI's name for system instructions to reasoning models
        role = "system"
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
    reasoning = d.get("reasoning_content")
    blocks = d.get("thinking_blocks")
    if reasoning is not None or blocks is not None:
        if role != "assistant":
            key = "reasoning_content" if reasoning is not None else "thinking_blocks"
            raise _bad(f"{field}.{key}", d[key], "reasoning only on assistant messages")
        if reasoning is not None and not isinstance(reasoning, str):
            raise _bad(f"{field}.reasoning_content", reasoning, "a string")
        if blocks is not None:
            blocks = check_reasoning_blocks(blocks, f"{field}.thinking_blocks") or None
    cc = d.get("cache_control")
    if cc is not None:
        cc = check_cache_control(cc, f"{field}.cache_control")
    if content is None and not (role == "assistant" and (tool_calls or blocks)):
        raise _bad(f"{field}.content", content, "content (None only with assistant tool_calls)")
    return Message(
        role=cast(Role, role),
        content=content,
        name=name,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
        reasoning=reasoning,
        reasoning_blocks=blocks,
        cache_control=cc,
    )


MessagesIn = str | Sequence[Mapping[str, Any] | Message | SupportsModelDump]


def to_messages(messages: MessagesIn) -> list[Message]:
    """Validate a call's messages: a string is one user message; dicts are OpenAI-style.

    openai SDK objects (``ChatCompletionMessage``, anything with ``model_dump()``)
    and its TypedDict params are taken as their dicts; role ``developer`` is
    ``system``.
    """
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
    """Token counts of one call.

    ``prompt_tokens`` counts the whole prompt, cached parts included.
    ``cached_tokens`` is the part of it read from the provider's prompt cache,
    ``cache_write_tokens`` the part written to it, ``reasoning_tokens`` the part of
    ``completion_tokens`` spent reasoning. Each of those three is None when the
    provider did not report it, which is not the same as 0.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (JSON-ready)."""
        return _struct_dict(self)


class TokenLogprob(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The log probability of one output token and, if asked, its most likely alternatives."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TokenLogprob] = []

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style dict (``token``, ``logprob``, ``bytes``, ``top_logprobs``)."""
        return _struct_dict(self)


class Cost(msgspec.Struct, kw_only=True, frozen=True):
    """What a call cost in USD, by part, from the price table (``llmrelay._pricing``).

    ``input_usd`` is the uncached prompt, ``cache_read_usd`` the prompt read from the
    provider's cache, ``cache_write_usd`` the prompt written to it, ``output_usd``
    the completion (reasoning included).
    """

    input_usd: float
    output_usd: float
    cache_read_usd: float = 0.0
    cache_write_usd: float = 0.0
    total_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (JSON-ready)."""
        return _struct_dict(self)


class ChatRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A validated chat request; build it with :func:`build_request`.

    ``extra`` is passed through to the provider as is (OpenAI/Anthropic: merged into
    the body; Ollama: ``keep_alive``/``think``/``format`` top level, the rest into
    ``options``, e.g. ``num_ctx``). ``metadata`` stays with llmrelay (logs, metrics)
    and is not sent to providers. ``max_completion_tokens`` is set when the caller
    used that name; ``max_tokens`` always holds the limit. The OpenAI parameters
    after ``extra`` are mapped per provider, or refused before sending where a
    provider has no equivalent (see ``docs/decisions.md``).
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
    max_completion_tokens: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    n: int | None = None
    logit_bias: dict[str, int] | None = None
    service_tier: str | None = None
    thinking: dict[str, Any] | None = None
    cache_breakpoints: str | None = None


class Choice(msgspec.Struct, kw_only=True):
    """One alternative answer of a call made with ``n``; ``choices[0]`` is the response."""

    index: int
    text: str
    message: Message
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None = None

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls of this alternative."""
        return self.message.tool_calls or []

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (JSON-ready); ``message`` OpenAI-style."""
        return _struct_dict(self)


class ChatResponse(msgspec.Struct, kw_only=True):
    """A provider's answer. The service fills ``latency_s``, ``cached`` and ``attempts``,
    and ``parsed`` for a call with ``response_format=Model``.

    ``choices`` lists every alternative of a call made with ``n`` (the response
    itself first); ``alternatives`` holds the ones after the first.
    """

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
    logprobs: list[TokenLogprob] | None = None
    alternatives: list[Choice] = []
    #: the reply validated into the call's ``response_format`` model (None without one)
    parsed: Any = None
    #: the model's reasoning (thinking) text, None when there is none
    reasoning: str | None = None
    #: what the call cost, None when a price is unknown (or the answer came from cache)
    cost: Cost | None = None

    @property
    def choices(self) -> list[Choice]:
        """Every alternative, in order: ``choices[0]`` is this response's own answer."""
        first = Choice(
            index=0,
            text=self.text,
            message=self.message,
            finish_reason=self.finish_reason,
            logprobs=self.logprobs,
        )
        return [first, *self.alternatives]

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (JSON-ready): ``message`` and ``tool_calls`` OpenAI-style,
        ``choices`` in place of ``alternatives``."""
        d = _struct_dict(self)
        del d["alternatives"]
        d["choices"] = [c.to_dict() for c in self.choices]
        return d


class ChatChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One piece of a streamed answer: a text delta, tool call deltas, and at the end the
    finish reason and usage.

    ``reasoning`` is a delta of the model's reasoning text; ``reasoning_blocks`` the
    provider's reasoning blocks finished in this chunk (a thinking block and its
    signature), which the streamed answer's message keeps.
    """

    text: str = ""
    tool_calls: list[ToolCallDelta] = []
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    provider: str | None = None
    id: str | None = None
    logprobs: list[TokenLogprob] | None = None
    #: on the final chunk of a call with a ``response_format`` model: the answer, validated
    parsed: Any = None
    reasoning: str | None = None
    reasoning_blocks: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (JSON-ready), every field present."""
        return _struct_dict(self)


class EmbeddingResponse(msgspec.Struct, kw_only=True):
    """Embeddings of the inputs, in input order."""

    embeddings: list[list[float]]
    model: str
    provider: str
    usage: Usage

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (JSON-ready)."""
        return _struct_dict(self)


def build_request(
    messages: MessagesIn,
    model: str | None,
    params: Mapping[str, Any],
    *,
    stream: bool = False,
) -> ChatRequest:
    """Validate a call and build its :class:`ChatRequest`.

    ``params`` takes the keys of :class:`~llmrelay._params.ChatParams`; a None
    value means unset. Anything else raises InvalidRequestError with
    ``field="params.<name>"``; so does a value no provider can receive (a string
    with a lone surrogate, an object JSON cannot hold), named by its path.
    """
    msgs = to_messages(messages)
    if model is not None and (not isinstance(model, str) or not model):
        raise _bad("model", model, "a non-empty model name")
    checked = check_chat_params(params) if params else {}
    req = ChatRequest(messages=msgs, model=model, stream=stream, **checked)
    check_encodable(req)
    return req
