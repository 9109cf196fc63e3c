"""The cache stage's key: a canonical encoding of what changes the answer.

The key covers the model, the messages, every sampling parameter (the OpenAI
ones too: penalties, ``n``, ``logprobs``, ``logit_bias``, ``reasoning_effort``,
``parallel_tool_calls``), the tools, the response format and the namespace; it
leaves out what does not change the answer (``stream``, ``user``, ``metadata``,
``service_tier``, and the name the output limit was given under). It is hashed in the core together
with a credential *scope* (a fingerprint of the deployment's key, never the
key) so two tenants never share an entry.
"""

from __future__ import annotations

import math

import msgspec

from llmrelay import _core
from llmrelay._params import bad, unencodable
from llmrelay._types import ChatRequest

__all__ = ["CacheControl", "cache_key", "is_cacheable"]

_encoder = msgspec.json.Encoder(order="sorted")


class CacheControl(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-call cache settings: skip it, refresh it, its TTL, its namespace.

    Checked when built (in code or from a dict), so a bad setting fails before
    anything is sent: ``ttl_s`` is a finite number of seconds > 0, ``namespace`` a
    non-empty string, unknown keys are refused.
    """

    skip: bool = False
    refresh: bool = False
    ttl_s: float | None = None
    namespace: str | None = None

    def __post_init__(self) -> None:
        for name in ("skip", "refresh"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise bad(f"cache.{name}", value, "True or False")
        ttl = self.ttl_s
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf
        ):
            raise bad("cache.ttl_s", ttl, "a number of seconds > 0")
        ns = self.namespace
        if ns is not None and (not isinstance(ns, str) or not ns or unencodable(ns, "")):
            raise bad("cache.namespace", ns, "a non-empty string")


def is_cacheable(req: ChatRequest, allow_nondeterministic: bool) -> bool:
    """Default policy: only answers that should repeat (temperature 0, or a seed)."""
    if allow_nondeterministic:
        return True
    return req.temperature == 0 or req.seed is not None


def cache_key(req: ChatRequest, model: str, namespace: str, scope: str) -> bytes:
    """The 16-byte key of a request for ``model`` in ``namespace`` under ``scope``.

    The request struct encodes its fields in a fixed order and omits defaults;
    dicts inside it (tools, response format, extra) are encoded with sorted keys.
    """
    if (
        req.stream
        or req.user is not None
        or req.metadata is not None
        or req.model is not None
        or req.max_completion_tokens is not None
        or req.service_tier is not None
    ):
        # max_completion_tokens: max_tokens holds the same limit; service_tier changes
        # the price and the latency, not the answer
        req = msgspec.structs.replace(
            req,
            stream=False,
            user=None,
            metadata=None,
            model=None,
            max_completion_tokens=None,
            service_tier=None,
        )
    return bytes(_core.cache_key(_encoder.encode((model, namespace, req)), scope))
