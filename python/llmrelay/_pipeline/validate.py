"""The validate and select stages: a call's arguments checked and turned into its
:class:`~llmrelay._pipeline.call.Prepared` (the request, its candidates in order, its
estimates, its cache key and mode, its structured-output spec and its trace).

Every bad argument is an InvalidRequestError naming it, raised before anything is
looked up or sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay._budget import Budget
from llmrelay._cachekey import CacheControl, cache_key, is_cacheable
from llmrelay._outputspec import output_spec
from llmrelay._pipeline.call import DEFAULT_OUTPUT_ESTIMATE, Prepared
from llmrelay._selection import Candidate, honouring
from llmrelay._telemetry import INFO, log_enabled
from llmrelay._tokens import request_tokens
from llmrelay._types import ChatRequest, build_request
from llmrelay.errors import (
    InvalidRequestError,
)

if TYPE_CHECKING:
    from llmrelay._engine import Engine

log = logging.getLogger("llmrelay")


def needs_of(req: ChatRequest, stream: bool) -> list[str]:
    needs = []
    if req.tools:
        needs.append("tools")
    # response_format needs no capability: every adapter honours it natively or by
    # JSON mode or instructions (see llmrelay._structured); ``json_mode`` stays a
    # capability a config may require
    if stream:
        needs.append("streaming")
    for m in req.messages:
        if isinstance(m.content, list) and any(
            getattr(p, "type", "") == "image_url" for p in m.content
        ):
            needs.append("vision")
            break
    return needs


def cache_control(cache: Any) -> CacheControl:
    if cache is None or cache is True:
        return _DEFAULT_CC
    if cache is False:
        return _SKIP_CC
    if isinstance(cache, CacheControl):
        return cache
    if isinstance(cache, Mapping):
        try:
            return msgspec.convert(dict(cache), CacheControl)
        except msgspec.ValidationError as e:
            raise InvalidRequestError(f"invalid cache: {e}", field="cache") from None
    raise InvalidRequestError(
        f"invalid cache={cache!r}: expected a bool or CacheControl", field="cache"
    )


_DEFAULT_CC = CacheControl()
_SKIP_CC = CacheControl(skip=True)


def check_priority(priority: Any) -> int:
    """A valid priority (0..=9) or InvalidRequestError naming it."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise InvalidRequestError(
            f"invalid priority={priority!r}: must be an int in 0..9", field="priority"
        )
    return int(priority)


def prepare(
    eng: Engine,
    messages: Any,
    model: str | None,
    priority: Any,
    cache: Any,
    params: dict[str, Any],
    *,
    stream: bool,
    budgets: tuple[Budget, ...] = (),
) -> Prepared:
    """The validate and select stages, and the cache key."""
    eng.check_open()
    prio = check_priority(priority)
    cc = cache_control(cache)
    req = build_request(messages, model, params)
    fmt = params.get("response_format")
    spec = output_spec(fmt) if fmt is not None else None
    asked = req.model or eng.selector.default_model
    name = eng.selector.canonical(asked)  # an alias and its model share cache entries
    est_in = request_tokens(req)
    est_out = req.max_tokens or DEFAULT_OUTPUT_ESTIMATE
    cands = eng.selector.candidates(
        asked, needs=needs_of(req, stream), est_tokens=est_in + (req.max_tokens or 0)
    )
    cands = honouring(cands, req, stream=stream)
    key = None
    mode = cc.mode or eng.config.cache.mode
    if mode == "replay" and cc.refresh:
        raise InvalidRequestError(
            "invalid cache: refresh=True with the service's mode='replay'",
            field="cache.refresh",
        )
    if eng.cache is not None:
        if cc.skip:
            skipped(eng, cands[0], "requested")
        elif not is_cacheable(req, eng.config.cache.cache_nondeterministic, cc.sample):
            skipped(eng, cands[0], "nondeterministic")
        else:
            ns = cc.namespace if cc.namespace is not None else eng.config.namespace
            key = cache_key(req, name, ns, cands[0].deployment.credential_scope, cc.sample)
    tr = None
    if eng.events.listeners or log_enabled(INFO):  # Emitter.live(), inlined
        dedup = key is not None and eng.dedup is not None and not stream
        tr = eng.events.start("chat", name, prio, cands, req, stream=stream, dedup=dedup)
    return Prepared(req, name, prio, cands, key, cc, est_in, est_out, mode, spec, tr, budgets)


def skipped(eng: Engine, cand: Candidate, reason: str) -> None:
    """Count a request the cache did not look up, and say once why it happens."""
    dep = cand.deployment
    eng.metrics.core.incr(dep.kind, cand.model, dep.name, f"cache_skipped.{reason}")
    if reason == "nondeterministic" and not eng.told_nondeterministic:
        eng.told_nondeterministic = True
        log.info(
            "llmrelay: the cache is on but this request is not cached: only requests with"
            " temperature=0 or a seed are (their answers should repeat). Pass"
            " temperature=0, seed=... or a sample index (cache=CacheControl(sample=i)), or set"
            " CacheConfig(cache_nondeterministic=True);"
            " metrics count such requests as cache_skipped.nondeterministic"
        )
