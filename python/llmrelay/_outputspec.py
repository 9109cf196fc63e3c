"""Structured output's schema side: ``response_format=Model`` to an :class:`OutputSpec`.

``Model`` is a msgspec ``Struct`` type, a pydantic model class (duck-typed by
``model_json_schema``/``model_validate_json``, so pydantic is never imported
here) or a JSON-schema dict; OpenAI's own ``{"type": "json_schema", ...}`` dict
counts as its schema. :func:`output_spec` turns it into an :class:`OutputSpec`:
the schema every adapter sends in its provider's native way (OpenAI
``json_schema``, strict when the schema allows it; Anthropic a forced tool;
Ollama ``format``), or, where a provider lacks that, as JSON mode plus
:func:`instruction`, or the instruction alone. The request carries only the
normalised ``response_format`` dict, so the cache key and the wire body never
see a Python class.

:meth:`OutputSpec.parse` validates a reply's text into the model (msgspec
decodes in one step; pydantic validates its JSON; a schema dict goes through
:mod:`llmrelay._jsonschema`). This module knows nothing of the request and
reply types, so request validation (:mod:`llmrelay._params`) can use it;
what works on replies (unwrapping, the repair turn, the stream's tail) is in
:mod:`llmrelay._structured`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from llmrelay._jsonschema import schema_error
from llmrelay.errors import InvalidRequestError

__all__ = [
    "OutputSpec",
    "instruction",
    "is_object_schema",
    "output_spec",
    "parsed_builtins",
    "schema_of",
    "with_instruction",
]

_OPENAI_TYPES = ("text", "json_object", "json_schema")
_SCHEMA_KEYS = frozenset(
    ("type", "properties", "$ref", "anyOf", "oneOf", "allOf", "enum", "items", "const", "$defs")
)
_JSON_TYPES = frozenset(("object", "array", "string", "number", "integer", "boolean", "null"))
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]")
_encode = msgspec.json.encode
_decode = msgspec.json.decode
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)
# the structured specs of types already seen (a Model's schema is built once)
_BY_TYPE: dict[type, OutputSpec] = {}


class _Invalid(Exception):
    """A reply that does not validate; the message says why."""


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What a structured call asks for: the schema sent and how to validate the reply."""

    #: the schema's name (OpenAI's ``json_schema.name``, Anthropic's tool name)
    name: str
    #: the JSON schema, its root inlined (no top-level ``$ref``)
    schema: dict[str, Any]
    #: whether OpenAI's strict mode can take the schema as it is
    strict: bool
    #: ``"msgspec"``, ``"pydantic"`` or ``"schema"``
    kind: str
    #: the Struct type, the pydantic class, or the schema dict
    target: Any

    @property
    def response_format(self) -> dict[str, Any]:
        """The normalised ``response_format`` the request carries (OpenAI's shape)."""
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.schema, "strict": self.strict},
        }

    def parse(self, text: str) -> Any:
        """``text`` validated into the model; ValueError (its message: why) if it is not."""
        body = _json_part(text)
        if self.kind == "msgspec":
            try:
                return _decode(body, type=self.target)
            except msgspec.ValidationError as e:
                raise _Invalid(str(e)) from None
            except msgspec.DecodeError as e:
                raise _Invalid(f"not valid JSON ({e})") from None
        if self.kind == "pydantic":
            try:
                return self.target.model_validate_json(body)
            except ValueError as e:  # pydantic's ValidationError is a ValueError
                raise _Invalid(_pydantic_message(e)) from None
        try:
            value = _decode(body)
        except msgspec.DecodeError as e:
            raise _Invalid(f"not valid JSON ({e})") from None
        err = schema_error(value, self.target)
        if err is not None:
            raise _Invalid(err)
        return value

    def try_parse(self, text: str) -> tuple[Any, str | None]:
        """(the parsed value, None), or (None, why it does not validate)."""
        try:
            return self.parse(text), None
        except _Invalid as e:
            return None, str(e)


def output_spec(value: Any) -> OutputSpec | None:
    """The spec of a ``response_format`` value; None for OpenAI's ``text`` and
    ``json_object`` dicts (passed on as they are). InvalidRequestError
    (``params.response_format``) for anything else."""
    if isinstance(value, type):
        spec = _BY_TYPE.get(value)
        if spec is None:
            spec = _BY_TYPE[value] = _type_spec(value)
        return spec
    if not isinstance(value, Mapping):
        raise _bad(value)
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return None
    if kind == "json_schema":
        inner = value.get("json_schema")
        if not isinstance(inner, Mapping):
            raise InvalidRequestError(
                f"params.response_format.json_schema={inner!r}: expected a dict with name "
                "and schema",
                field="params.response_format.json_schema",
            )
        schema = inner.get("schema", {})
        if not isinstance(schema, Mapping):
            raise InvalidRequestError(
                f"params.response_format.json_schema.schema={schema!r}: expected a JSON schema "
                "dict",
                field="params.response_format.json_schema.schema",
            )
        name = _name(str(inner.get("name") or schema.get("title") or "output"))
        strict = inner.get("strict")
        return _schema_spec(dict(schema), name, strict if isinstance(strict, bool) else None)
    if not _SCHEMA_KEYS.intersection(value) or not _json_types(kind):
        raise _bad(value)
    return _schema_spec(dict(value), _name(str(value.get("title") or "output")), None)


def _json_types(kind: Any) -> bool:
    """Whether a schema's ``type`` is absent or names JSON types only."""
    kinds = kind if isinstance(kind, list) else [kind]
    return kind is None or all(k in _JSON_TYPES for k in kinds)


def _bad(value: Any) -> InvalidRequestError:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return InvalidRequestError(
        f"params.response_format={text}: expected a msgspec Struct type, a pydantic model "
        "class, a JSON-schema dict, or {'type': 'text' | 'json_object' | 'json_schema', ...}",
        field="params.response_format",
    )


def _type_spec(cls: type) -> OutputSpec:
    if issubclass(cls, msgspec.Struct):
        schema = _inline_root(msgspec.json.schema(cls))
        return OutputSpec(_name(cls.__name__), schema, _strictable(schema), "msgspec", cls)
    make = getattr(cls, "model_json_schema", None)
    if callable(make) and callable(getattr(cls, "model_validate_json", None)):
        schema = _inline_root(make())
        return OutputSpec(_name(cls.__name__), schema, _strictable(schema), "pydantic", cls)
    raise _bad(cls)


def _schema_spec(schema: dict[str, Any], name: str, strict: bool | None) -> OutputSpec:
    """The spec of a schema dict: the reply is validated against the caller's schema as
    given; the one sent is a copy that :func:`_strictable` may narrow."""
    try:
        given = _decode(_encode(schema))
    except (TypeError, ValueError, msgspec.EncodeError):
        raise InvalidRequestError(
            "params.response_format: the JSON schema holds a value JSON cannot encode",
            field="params.response_format",
        ) from None
    sent = _inline_root(_decode(_encode(given)))
    ok = _strictable(sent)
    return OutputSpec(name, sent, ok if strict is None else strict, "schema", given)


def _name(raw: str) -> str:
    """A schema / tool name providers accept: ``[a-zA-Z0-9_-]{1,64}``."""
    return _NAME_BAD.sub("_", raw)[:64] or "output"


def _inline_root(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a top-level ``$ref`` into ``$defs`` replaced by its target
    (msgspec's shape); the target stays in ``$defs`` only if something refers to it."""
    ref = schema.get("$ref")
    defs = schema.get("$defs")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/") or not isinstance(defs, dict):
        return schema
    key = ref[len("#/$defs/") :]
    target = defs.get(key)
    if not isinstance(target, dict):
        return schema
    rest = {k: v for k, v in defs.items() if k != key}
    out = {k: v for k, v in schema.items() if k not in ("$ref", "$defs")}
    out.update(target)
    if ref.encode() in _encode(rest) or ref.encode() in _encode(target):
        rest[key] = target  # recursive: the root is referred to from inside
    if rest:
        out["$defs"] = rest
    return out


def _strictable(schema: Any) -> bool:
    """Whether OpenAI's strict mode takes ``schema``: every object lists all its
    properties as required and allows no others. Objects with ``properties`` that
    say nothing about ``additionalProperties`` get ``false`` (in place; the reply is validated
    against the same schema, so this only narrows what the model may write)."""
    ok = True

    def walk(node: Any) -> None:
        nonlocal ok
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if "properties" not in node:
            if node.get("type") == "object":
                ok = False  # a free-form object: strict mode has no such thing
        else:
            props = node.get("properties") or {}
            node.setdefault("additionalProperties", False)
            if node["additionalProperties"] is not False:
                ok = False
            if set(node.get("required") or ()) != set(props):
                ok = False
        for value in node.values():
            walk(value)

    walk(schema)
    # strict mode wants an object with its properties at the root
    return ok and isinstance(schema, dict) and "properties" in schema


def is_object_schema(schema: Any) -> bool:
    """Whether ``schema``'s root is an object (a tool's input must be one)."""
    return isinstance(schema, dict) and (
        schema.get("type") == "object" or ("properties" in schema and "type" not in schema)
    )


def schema_of(response_format: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of a normalised ``json_schema`` response_format, else None."""
    if response_format.get("type") != "json_schema":
        return None
    inner = response_format.get("json_schema")
    if not isinstance(inner, Mapping):
        return None
    schema = inner.get("schema", {})
    return dict(schema) if isinstance(schema, Mapping) else None


def instruction(schema: Mapping[str, Any] | None) -> str:
    """The instruction that asks for JSON where no native mechanism does."""
    if schema is None:
        return "Respond with a single valid JSON object and nothing else."
    return (
        "Respond with a single valid JSON value, and nothing else (no prose, no code fences), "
        f"that follows this JSON schema: {_encode(schema).decode()}"
    )


def with_instruction(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """OpenAI-style ``messages`` with ``text`` added to the leading system message (or
    as a new one first)."""
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        content = first.get("content")
        if isinstance(content, str):
            return [{**first, "content": f"{content}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def parsed_builtins(value: Any) -> Any:
    """``parsed`` as JSON-ready builtins (a pydantic model through ``model_dump``)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    return msgspec.to_builtins(value)


def _json_part(text: str) -> str:
    """The JSON of a reply: the text itself, else the inside of a code fence, else the
    span from the first ``{`` or ``[`` to the last matching bracket (prompted models
    sometimes add a sentence)."""
    stripped = text.strip()
    if not stripped or (stripped[0] in "{[" and stripped[-1] in "}]"):
        return stripped
    fenced = _FENCE.match(stripped)
    if fenced:
        return fenced.group(1).strip()
    starts = [i for i in (stripped.find("{"), stripped.find("[")) if i >= 0]
    if not starts:
        return stripped
    start = min(starts)
    end = stripped.rfind("}" if stripped[start] == "{" else "]")
    return stripped[start : end + 1] if end > start else stripped


def _pydantic_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = [
                f"at {'.'.join(['$', *(str(p) for p in e.get('loc', ()))])}: {e.get('msg')}"
                for e in errors()
            ]
            if parts:
                return "; ".join(parts)
        except (TypeError, ValueError):
            pass
    return str(exc)
