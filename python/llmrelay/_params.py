"""The call parameters: their types (``ChatParams``, ``EmbedParams``) and their checks.

Each parameter has one check that validates its type and range and returns the
normalised value; a bad one raises :class:`~llmrelay.errors.InvalidRequestError`
with ``field="params.<name>"``. A parameter given at its OpenAI default (``n=1``,
``frequency_penalty=0``, ``logprobs=False``, ``parallel_tool_calls=True``,
``service_tier="auto"``, ``logit_bias={}``) is treated as unset: it means the same
to every provider and shares cache entries with the call that leaves it out.

``check_encodable`` refuses a request part of which cannot be sent (a string with
a lone surrogate, an object JSON cannot hold) at the cost of an O(1) check per
ASCII string and one encode of the rest; only when that fails does
``unencodable`` walk the request to name the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import msgspec

from llmrelay._outputspec import output_spec
from llmrelay.errors import InvalidRequestError

if TYPE_CHECKING:
    from llmrelay._types import ChatRequest

__all__ = [
    "ChatParams",
    "EmbedParams",
    "ReasoningEffort",
    "ServiceTier",
    "bad",
    "check_chat_params",
    "check_embed",
    "check_encodable",
    "short",
    "unencodable",
]

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast"]
_EFFORTS = frozenset(("none", "minimal", "low", "medium", "high", "xhigh", "max"))
_TIERS = frozenset(("auto", "default", "flex", "scale", "priority", "fast"))
_json_encode = msgspec.json.encode
_msgpack_encode = msgspec.msgpack.encode


class ChatParams(TypedDict, total=False):
    """The keyword parameters of a chat call (``achat``, ``chat``, ``astream``, ...).

    None means unset. ``extra`` goes to the provider as is; ``metadata`` stays with
    llmrelay (logs, metrics) and is never sent.
    """

    temperature: float | None
    max_tokens: int | None
    max_completion_tokens: int | None
    top_p: float | None
    stop: str | Sequence[str] | None
    seed: int | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: Literal["auto", "none", "required"] | Mapping[str, Any] | None
    response_format: Mapping[str, Any] | type | None
    user: str | None
    metadata: Mapping[str, str] | None
    extra: Mapping[str, Any] | None
    frequency_penalty: float | None
    presence_penalty: float | None
    logprobs: bool | None
    top_logprobs: int | None
    parallel_tool_calls: bool | None
    reasoning_effort: ReasoningEffort | None
    n: int | None
    logit_bias: Mapping[str, int] | Mapping[int, int] | None
    service_tier: ServiceTier | None
    thinking: Mapping[str, Any] | None
    cache_breakpoints: Literal["auto", "none"] | None


class EmbedParams(TypedDict, total=False):
    """The keyword parameters of an embedding call (``aembed``, ``embed``).

    ``encoding_format`` is how the vectors travel (OpenAI); the answer is always
    float lists. ``extra`` goes to the provider as is (Ollama: ``truncate``,
    ``keep_alive``, ``options``).
    """

    dimensions: int | None
    encoding_format: Literal["float", "base64"] | None
    user: str | None
    extra: Mapping[str, Any] | None


def short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def bad(field: str, value: Any, expected: str) -> InvalidRequestError:
    """The InvalidRequestError of a bad value at ``field``."""
    return InvalidRequestError(f"{field}={short(value)}: expected {expected}", field=field)


# ---------------------------------------------------------------- checks


def _number(field: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise bad(field, v, f"a number in [{lo:g}, {hi:g}]")
    return float(v)


def _int(field: str, v: Any, lo: int | None, hi: int | None = None) -> int:
    if (
        isinstance(v, bool)
        or not isinstance(v, int)
        or (lo is not None and v < lo)
        or (hi is not None and v > hi)
    ):
        if hi is not None:
            raise bad(field, v, f"an integer in [{lo}, {hi}]")
        raise bad(field, v, "an integer" + (f" >= {lo}" if lo is not None else ""))
    return int(v)


def _bool(field: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise bad(field, v, "True or False")
    return v


def _stop(field: str, v: Any) -> list[str] | None:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s for s in v):
        raise bad(field, v, "a string or a list of non-empty strings")
    return list(v) or None


def _tools(field: str, v: Any) -> list[dict[str, Any]] | None:
    if not isinstance(v, (list, tuple)):
        raise bad(field, v, "a list of tool dicts")
    for i, tool in enumerate(v):
        f = f"{field}[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise bad(f, tool, "{'type': 'function', 'function': {...}}")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise bad(f"{f}.function", fn, "a dict with a name")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad(f"{f}.function.name", fn.get("name"), "a non-empty string")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise bad(f"{f}.function.parameters", params, "a JSON schema dict")
    return list(v) or None


def _tool_choice(field: str, v: Any) -> str | dict[str, Any]:
    if v in ("auto", "none", "required"):
        return str(v)
    if isinstance(v, dict) and v.get("type") == "function":
        fn = v.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]:
            return v
    raise bad(field, v, "'auto', 'none', 'required' or {'type': 'function', 'function': {...}}")


def _response_format(field: str, v: Any) -> dict[str, Any]:
    """OpenAI's ``text``/``json_object`` dicts as they are; a model (msgspec Struct type,
    pydantic class, JSON-schema dict, or OpenAI's ``json_schema`` dict) normalised to
    OpenAI's ``json_schema`` shape (see :mod:`llmrelay._structured`)."""
    if isinstance(v, dict) and v.get("type") in ("text", "json_object"):
        return v
    spec = output_spec(v)
    assert spec is not None
    return spec.response_format


def _str(field: str, v: Any) -> str:
    if not isinstance(v, str):
        raise bad(field, v, "a string")
    return v


def _str_map(field: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise bad(field, v, "a dict of strings to strings")
    return v


def _extra(field: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise bad(field, v, "a dict with string keys")
    return v


def _penalty(field: str, v: Any) -> float | None:
    out = _number(field, v, -2.0, 2.0)
    return None if out == 0 else out


def _n(field: str, v: Any) -> int | None:
    out = _int(field, v, 1, 128)
    return None if out == 1 else out


def _logprobs(field: str, v: Any) -> bool | None:
    return True if _bool(field, v) else None


def _parallel(field: str, v: Any) -> bool | None:
    return None if _bool(field, v) else False


def _effort(field: str, v: Any) -> str:
    if v not in _EFFORTS:
        raise bad(field, v, "one of " + ", ".join(sorted(_EFFORTS)))
    return str(v)


def _tier(field: str, v: Any) -> str | None:
    if v not in _TIERS:
        raise bad(field, v, "one of " + ", ".join(sorted(_TIERS)))
    return None if v == "auto" else str(v)


def _thinking(field: str, v: Any) -> dict[str, Any] | None:
    """Anthropic's extended thinking: ``{"type": "enabled", "budget_tokens": N}`` (N >= 1024),
    ``{"type": "adaptive"}`` or ``{"type": "disabled"}`` (unset)."""
    if not isinstance(v, dict) or v.get("type") not in ("enabled", "disabled", "adaptive"):
        raise bad(field, v, "{'type': 'enabled', 'budget_tokens': N}, adaptive or disabled")
    for key in v:
        if key not in ("type", "budget_tokens", "display"):
            raise bad(f"{field}.{key}", v[key], "no such thinking field")
    if v["type"] == "disabled":
        return None
    if v["type"] == "enabled":
        budget = v.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
            raise bad(f"{field}.budget_tokens", budget, "an int >= 1024")
    elif "budget_tokens" in v:
        raise bad(f"{field}.budget_tokens", v["budget_tokens"], "budget_tokens only with enabled")
    return dict(v)


def _breakpoints(field: str, v: Any) -> str | None:
    if v not in ("auto", "none"):
        raise bad(field, v, "'auto' or 'none'")
    return None if v == "none" else "auto"


def _logit_bias(field: str, v: Any) -> dict[str, int] | None:
    if not isinstance(v, dict):
        raise bad(field, v, "a dict of token ids to biases in [-100, 100]")
    out: dict[str, int] = {}
    for key, bias in v.items():
        token = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
        if not isinstance(token, str) or not token.isdigit():
            raise bad(f"{field}[{key!r}]", key, "a token id (an int or a string of digits)")
        if isinstance(bias, bool) or not isinstance(bias, int) or not -100 <= bias <= 100:
            raise bad(f"{field}[{key!r}]", bias, "an integer bias in [-100, 100]")
        out[token] = bias
    return out or None


def _max_tokens(field: str, v: Any) -> int:
    return _int(field, v, 1)


def _seed(field: str, v: Any) -> int:
    return _int(field, v, None)


def _top_logprobs(field: str, v: Any) -> int:
    return _int(field, v, 0, 20)


_CHECKS: dict[str, Any] = {
    "temperature": lambda f, v: _number(f, v, 0.0, 2.0),
    "top_p": lambda f, v: _number(f, v, 0.0, 1.0),
    "max_tokens": _max_tokens,
    "max_completion_tokens": _max_tokens,
    "seed": _seed,
    "stop": _stop,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "response_format": _response_format,
    "user": _str,
    "metadata": _str_map,
    "extra": _extra,
    "frequency_penalty": _penalty,
    "presence_penalty": _penalty,
    "logprobs": _logprobs,
    "top_logprobs": _top_logprobs,
    "parallel_tool_calls": _parallel,
    "reasoning_effort": _effort,
    "n": _n,
    "logit_bias": _logit_bias,
    "service_tier": _tier,
    "thinking": _thinking,
    "cache_breakpoints": _breakpoints,
}


def check_chat_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The checked, normalised parameters of a chat call (unset ones left out)."""
    checked: dict[str, Any] = {}
    for key, value in params.items():
        check = _CHECKS.get(key)
        if check is None:
            raise InvalidRequestError(
                f"params.{key}={short(value)}: unknown parameter "
                f"(known: {', '.join(sorted(_CHECKS))})",
                field=f"params.{key}",
            )
        if value is not None:
            out = check(f"params.{key}", value)
            if out is not None:
                checked[key] = out
    top = checked.get("top_logprobs")
    if top is not None and not checked.get("logprobs"):
        raise bad("params.top_logprobs", top, "logprobs=True with it")
    limit = checked.get("max_completion_tokens")
    if limit is not None:
        other = checked.get("max_tokens")
        if other is not None and other != limit:
            raise InvalidRequestError(
                f"params.max_completion_tokens={limit}: max_tokens={other} says otherwise; "
                "give one of them",
                field="params.max_completion_tokens",
            )
        checked["max_tokens"] = limit
    thinking = checked.get("thinking")
    budget = thinking.get("budget_tokens") if thinking is not None else None
    cap = checked.get("max_tokens")
    if budget is not None and cap is not None and budget >= cap:
        raise bad("params.thinking.budget_tokens", budget, f"less than max_tokens={cap}")
    return checked


# ---------------------------------------------------------------- embeddings

_EMBED_CHECKS: dict[str, Any] = {
    "dimensions": lambda f, v: _int(f, v, 1),
    "encoding_format": lambda f, v: _encoding(f, v),
    "user": _str,
    "extra": _extra,
}


def _encoding(field: str, v: Any) -> str:
    if v not in ("float", "base64"):
        raise bad(field, v, "'float' or 'base64'")
    return str(v)


def check_embed(inputs: Any, params: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The inputs as a list and the checked parameters of an embedding call.

    Unknown parameters raise InvalidRequestError (``params.<name>``); so does a
    string no provider can receive (``inputs[i]``).
    """
    texts = [inputs] if isinstance(inputs, str) else inputs
    if (
        not isinstance(texts, (list, tuple))
        or not texts
        or not all(isinstance(t, str) for t in texts)
    ):
        raise InvalidRequestError(
            f"inputs={short(inputs)}: expected a string or a non-empty list of strings",
            field="inputs",
        )
    checked: dict[str, Any] = {}
    for key, value in params.items():
        check = _EMBED_CHECKS.get(key)
        if check is None:
            raise InvalidRequestError(
                f"params.{key}={short(value)}: unknown embedding parameter "
                f"(known: {', '.join(sorted(_EMBED_CHECKS))}; "
                "put provider-specific ones in extra={...})",
                field=f"params.{key}",
            )
        if value is not None:
            checked[key] = check(f"params.{key}", value)
    texts = list(texts)
    try:
        _json_encode((texts, checked))
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
        found = unencodable(texts, "inputs") or unencodable(checked, "params")
        if found is not None:
            raise found from None
        raise
    return texts, checked


# ---------------------------------------------------------------- what JSON cannot hold


def unencodable(value: Any, path: str) -> InvalidRequestError | None:
    """The error naming the first value under ``path`` that cannot be sent as JSON.

    A string with a lone surrogate (UTF-8 cannot encode it), a dict key that is
    not a string, or an object JSON has no form for. None if everything is fine.
    """
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return InvalidRequestError(
                f"{path}: the string has a lone surrogate {value[e.start]!r} at index "
                f"{e.start}; it cannot be sent as UTF-8 (decode bytes with "
                "errors='replace', or remove it)",
                field=path,
            )
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int, float)):
                return bad(f"{path}[{k!r}]", k, "a string key")
            key_err = unencodable(k, f"{path}[{k!r}]") if isinstance(k, str) else None
            if key_err is not None:
                return key_err
            sub = f"{path}.{k}" if isinstance(k, str) and k.isidentifier() else f"{path}[{k!r}]"
            err = unencodable(v, sub)
            if err is not None:
                return err
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            err = unencodable(v, f"{path}[{i}]")
            if err is not None:
                return err
        return None
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            err = unencodable(getattr(value, name), f"{path}.{name}")
            if err is not None:
                return err
        return None
    try:
        _json_encode(value)
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
        return bad(path, value, "a JSON value (str, number, bool, None, list or dict)")
    return None


# ---------------------------------------------------------------- a whole request


def check_encodable(req: ChatRequest) -> None:
    """Raise InvalidRequestError, naming the path, if part of ``req`` cannot be sent."""
    try:
        _encodable(req)
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
        raise _unencodable(req) from None


def _encodable(req: ChatRequest) -> None:
    """Raise if any part of ``req`` cannot be sent as JSON; cheap when it can.

    An ASCII string (``isascii`` is O(1)) holds no surrogate; any other text is
    encoded once, which also computes the UTF-8 form CPython keeps with the string,
    so the body encode later reuses it. The parameters, small, are encoded whole.
    """
    for m in req.messages:
        content = m.content
        if type(content) is str:
            if not content.isascii():
                _msgpack_encode(content)
        elif content is not None:
            _msgpack_encode(content)
        if m.tool_calls is not None or m.name is not None or m.tool_call_id is not None:
            _json_encode((m.name, m.tool_call_id, m.tool_calls))
    _json_encode(
        (
            req.model,
            req.stop,
            req.tools,
            req.tool_choice,
            req.response_format,
            req.user,
            req.metadata,
            req.extra,
        )
    )


def _unencodable(req: ChatRequest) -> InvalidRequestError:
    """The error naming what made ``req`` impossible to encode."""
    for name in req.__struct_fields__:
        path = name if name in ("messages", "model") else f"params.{name}"
        err = unencodable(getattr(req, name), path)
        if err is not None:
            return err
    return InvalidRequestError("the request cannot be encoded as JSON", field="messages")
