"""The cache stage's key: a canonical encoding of what changes the answer.

The key covers the model, the messages, every sampling parameter (the OpenAI
ones too: penalties, ``n``, ``logprobs``, ``logit_bias``, ``reasoning_effort``,
``parallel_tool_calls``), the tools, the response format and the namespace; it
leaves out what does not change the answer (``stream``, ``user``, ``metadata``,
``service_tier``, and the name the output limit was given under). It is hashed in the core together
with a credential *scope* (a fingerprint of the deployment's key, never the
key) so two tenants never share an entry.

A ``sample`` index (:class:`CacheControl`) enters the key too, so repeated sampling of
one prompt caches each sample under its own entry; a request with a sample is cacheable
whatever its temperature (see docs/decisions.md, "Cache modes and samples").
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from llmrelay import _core
from llmrelay._params import bad, unencodable
from llmrelay._types import ChatRequest, ChatResponse

__all__ = ["CACHE_MODES", "CacheControl", "CacheMode", "cache_key", "is_cacheable", "is_complete"]

CacheMode = Literal["read_write", "read_only", "write_only", "replay"]
#: ``read_write`` looks up and stores; ``read_only`` looks up, never stores;
#: ``write_only`` never looks up, stores; ``replay`` looks up and never calls a
#: provider: a miss raises :class:`~llmrelay.errors.CacheMissError`.
CACHE_MODES: tuple[str, ...] = ("read_write", "read_only", "write_only", "replay")

_encoder = msgspec.json.Encoder(order="sorted")


class CacheControl(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-call cache settings: skip it, refresh it, its TTL, its namespace, its mode,
    the sample index, and whether an incomplete reply may be stored.

    ``mode`` None takes ``CacheConfig.mode``. ``sample`` (an int >= 0) enters the key,
    so sample 0, 1, 2... of one prompt are cached apart (and each is cacheable at any
    temperature). ``cache_incomplete`` None takes ``CacheConfig.cache_incomplete``:
    whether an empty reply or one cut by ``finish_reason == "length"`` is stored.

    Checked when built (in code or from a dict), so a bad setting fails before
    anything is sent: ``ttl_s`` is a finite number of seconds > 0, ``namespace`` a
    non-empty string, unknown keys are refused, ``refresh`` contradicts the modes
    that must read (``read_only``, ``replay``) and ``skip`` contradicts ``replay``.
    """

    skip: bool = False
    refresh: bool = False
    ttl_s: float | None = None
    namespace: str | None = None
    mode: CacheMode | None = None
    sample: int | None = None
    cache_incomplete: bool | None = None

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
        mode = self.mode
        if mode is not None and mode not in CACHE_MODES:
            raise bad("cache.mode", mode, " or ".join(repr(m) for m in CACHE_MODES))
        sample = self.sample
        if sample is not None and (
            isinstance(sample, bool) or not isinstance(sample, int) or sample < 0
        ):
            raise bad("cache.sample", sample, "an int >= 0")
        if self.cache_incomplete is not None and not isinstance(self.cache_incomplete, bool):
            raise bad("cache.cache_incomplete", self.cache_incomplete, "True, False or None")
        if self.refresh and mode in ("read_only", "replay"):
            raise bad("cache.refresh", True, f"False with mode={mode!r} (that mode must read)")
        if self.skip and mode == "replay":
            raise bad(
                "cache.skip", True, "False with mode='replay' (replay answers only from cache)"
            )


def is_cacheable(req: ChatRequest, allow_nondeterministic: bool, sample: int | None = None) -> bool:
    """Default policy: only answers that should repeat (temperature 0, or a seed), or
    one numbered sample of many (``sample`` set: the caller names which answer it means)."""
    if allow_nondeterministic or sample is not None:
        return True
    return req.temperature == 0 or req.seed is not None


def is_complete(resp: ChatResponse) -> bool:
    """Whether a reply is worth storing by default: not empty, not cut by the output limit."""
    if resp.finish_reason == "length":
        return False
    return bool(resp.text) or bool(resp.tool_calls)


def cache_key(
    req: ChatRequest, model: str, namespace: str, scope: str, sample: int | None = None
) -> bytes:
    """The 16-byte key of a request for ``model`` in ``namespace`` under ``scope``.

    The request struct encodes its fields in a fixed order and omits defaults;
    dicts inside it (tools, response format, extra) are encoded with sorted keys.
    ``sample`` (when set) is part of the key; without it the key is what it always was.
    """
    if (
        req.stream
        or req.user is not None
        or req.metadata is not None
        or req.model is not None
        or req.max_completion_tokens is not None
        or req.service_tier is not None
        or req.cache_breakpoints is not None
    ):
        # max_completion_tokens: max_tokens holds the same limit; service_tier and
        # cache_breakpoints change the price and the latency, not the answer
        req = msgspec.structs.replace(
            req,
            stream=False,
            user=None,
            metadata=None,
            model=None,
            max_completion_tokens=None,
            service_tier=None,
            cache_breakpoints=None,
        )
    parts = (model, namespace, req) if sample is None else (model, namespace, req, sample)
    return bytes(_core.cache_key(_encoder.encode(parts), scope))
