"""The cache stage's key: a canonical encoding of what changes the answer.

The key covers the model, the messages, every sampling parameter, the tools,
the response format and the namespace; it leaves out what does not change the
answer (``stream``, ``user``, ``metadata``). It is hashed in the core together
with a credential *scope* (a fingerprint of the deployment's key, never the
key) so two tenants never share an entry.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llmrelay import _core

__all__ = ["CacheControl", "cache_key", "is_cacheable"]

_encoder = msgspec.json.Encoder(order="sorted")
_SKIP = frozenset({"stream", "user", "metadata", "model"})


class CacheControl(msgspec.Struct, frozen=True, kw_only=True):
    """Per-call cache settings: skip it, refresh it, its TTL, its namespace."""

    skip: bool = False
    refresh: bool = False
    ttl_s: float | None = None
    namespace: str | None = None


def is_cacheable(req: Any, allow_nondeterministic: bool) -> bool:
    """Default policy: only answers that should repeat (temperature 0, or a seed)."""
    if allow_nondeterministic:
        return True
    return req.temperature == 0 or req.seed is not None


def cache_key(req: Any, model: str, namespace: str, scope: str) -> bytes:
    """The 16-byte key of a request for ``model`` in ``namespace`` under ``scope``."""
    fields = {
        f: v for f in req.__struct_fields__ if f not in _SKIP and (v := getattr(req, f)) is not None
    }
    fields["model"] = model
    fields["namespace"] = namespace
    return bytes(_core.cache_key(_encoder.encode(fields), scope))
