"""A small JSON Schema checker: the keywords structured-output schemas use.

Validates a decoded JSON value against a schema given as a dict (``response_format``
as a JSON-schema dict). It covers what OpenAI's strict mode, Anthropic's tool input
schemas and the schemas msgspec and pydantic generate use: ``type`` (one or a
list), ``properties``, ``required``, ``additionalProperties``, ``items``,
``prefixItems``, ``enum``, ``const``, ``anyOf``, ``oneOf``, ``allOf``, ``not``,
local ``$ref`` (``#/$defs/...``, ``#/definitions/...``), ``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``, ``minLength``,
``maxLength``, ``pattern``, ``minItems``, ``maxItems``, ``uniqueItems``,
``minProperties`` and ``maxProperties``. Other keywords (``format``, ``title``,
``description``, ``default``...) are annotations here and are not checked.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["schema_error"]

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
    ),
}


def schema_error(value: Any, schema: Any) -> str | None:
    """What is wrong with ``value`` against ``schema`` (``at $.path: ...``), None if valid."""
    return _check(value, schema, "$", schema, 0)


def _check(value: Any, schema: Any, path: str, root: Any, depth: int) -> str | None:
    if schema is True or schema == {}:
        return None
    if schema is False:
        return f"at {path}: no value is allowed here"
    if not isinstance(schema, dict):
        return None
    if depth > 64:
        return f"at {path}: the schema nests too deeply (a $ref cycle?)"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve(ref, root)
        if target is None:
            return f"at {path}: cannot resolve $ref {ref!r}"
        err = _check(value, target, path, root, depth + 1)
        if err is not None:
            return err
    for check in (_type_enum, _combinators, _number, _string, _array, _object):
        err = check(value, schema, path, root, depth)
        if err is not None:
            return err
    return None


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return None
    node = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _type_enum(value: Any, schema: dict[str, Any], path: str, root: Any, depth: int) -> str | None:
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
            return f"at {path}: expected {' or '.join(map(str, kinds))}, got {_name(value)}"
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return f"at {path}: expected one of {schema['enum']!r}, got {_short(value)}"
    if "const" in schema and not _same(value, schema["const"]):
        return f"at {path}: expected {schema['const']!r}, got {_short(value)}"
    return None


def _combinators(
    value: Any, schema: dict[str, Any], path: str, root: Any, depth: int
) -> str | None:
    for sub in schema.get("allOf") or ():
        err = _check(value, sub, path, root, depth + 1)
        if err is not None:
            return err
    any_of = schema.get("anyOf")
    if any_of:
        errors = [_check(value, sub, path, root, depth + 1) for sub in any_of]
        if all(e is not None for e in errors):
            return f"at {path}: matches none of anyOf ({'; '.join(map(str, errors))})"
    one_of = schema.get("oneOf")
    if one_of:
        matched = sum(_check(value, sub, path, root, depth + 1) is None for sub in one_of)
        if matched != 1:
            return f"at {path}: matches {matched} of oneOf's schemas, not exactly one"
    if "not" in schema and _check(value, schema["not"], path, root, depth + 1) is None:
        return f"at {path}: matches the schema of 'not'"
    return None


def _number(value: Any, schema: dict[str, Any], path: str, root: Any, depth: int) -> str | None:
    if not _TYPES["number"](value):
        return None
    for key, sign in (
        ("minimum", -1),
        ("maximum", 1),
        ("exclusiveMinimum", 0),
        ("exclusiveMaximum", 2),
    ):
        bound = schema.get(key)
        if not isinstance(bound, int | float) or isinstance(bound, bool):
            continue
        broken = (
            value < bound
            if sign == -1
            else value > bound
            if sign == 1
            else value <= bound
            if sign == 0
            else value >= bound
        )
        if broken:
            return f"at {path}: {value!r} breaks {key}={bound!r}"
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        q = value / step
        if not math.isclose(q, round(q), rel_tol=0, abs_tol=1e-9):
            return f"at {path}: {value!r} is not a multiple of {step!r}"
    return None


def _string(value: Any, schema: dict[str, Any], path: str, root: Any, depth: int) -> str | None:
    if not isinstance(value, str):
        return None
    lo, hi = schema.get("minLength"), schema.get("maxLength")
    if isinstance(lo, int) and len(value) < lo:
        return f"at {path}: shorter than minLength={lo}"
    if isinstance(hi, int) and len(value) > hi:
        return f"at {path}: longer than maxLength={hi}"
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            found = re.search(pattern, value) is not None
        except re.error:
            return None  # a pattern Python cannot read is not the reply's fault
        if not found:
            return f"at {path}: {_short(value)} does not match pattern {pattern!r}"
    return None


def _array(value: Any, schema: dict[str, Any], path: str, root: Any, depth: int) -> str | None:
    if not isinstance(value, list):
        return None
    lo, hi = schema.get("minItems"), schema.get("maxItems")
    if isinstance(lo, int) and len(value) < lo:
        return f"at {path}: fewer than minItems={lo} items"
    if isinstance(hi, int) and len(value) > hi:
        return f"at {path}: more than maxItems={hi} items"
    prefix = schema.get("prefixItems") or []
    for i, (item, sub) in enumerate(zip(value, prefix, strict=False)):
        err = _check(item, sub, f"{path}[{i}]", root, depth + 1)
        if err is not None:
            return err
    items = schema.get("items")
    if items is not None:
        for i in range(len(prefix), len(value)):
            err = _check(value[i], items, f"{path}[{i}]", root, depth + 1)
            if err is not None:
                return err
    if schema.get("uniqueItems") is True:
        seen: list[Any] = []
        for i, item in enumerate(value):
            if any(_same(item, s) for s in seen):
                return f"at {path}[{i}]: a repeated item (uniqueItems)"
            seen.append(item)
    return None


def _object(value: Any, schema: dict[str, Any], path: str, root: Any, depth: int) -> str | None:
    if not isinstance(value, dict):
        return None
    for name in schema.get("required") or ():
        if name not in value:
            return f"at {path}: missing required property {name!r}"
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub_path = f"{path}.{key}" if str(key).isidentifier() else f"{path}[{key!r}]"
        if key in props:
            err = _check(item, props[key], sub_path, root, depth + 1)
        elif extra is False:
            err = f"at {path}: unexpected property {key!r}"
        else:
            err = _check(item, extra, sub_path, root, depth + 1)
        if err is not None:
            return err
    lo, hi = schema.get("minProperties"), schema.get("maxProperties")
    if isinstance(lo, int) and len(value) < lo:
        return f"at {path}: fewer than minProperties={lo} properties"
    if isinstance(hi, int) and len(value) > hi:
        return f"at {path}: more than maxProperties={hi} properties"
    return None


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
