"""The structured call: a reply validated into ``parsed``, repaired once, else a typed error.

A plain call runs the whole pipeline once (:meth:`Engine.chat_once`); when its
reply does not validate, the repair attempt sends the history, the reply and the
validation error back through the same pipeline (uncached: its answer is stored
under the original call's key once it validates), within what is left of the
call's total timeout. A second reply that does not validate raises
:class:`~llmrelay.errors.StructuredOutputError`. A stream is not repaired (its
chunks have reached the caller): the last chunk carries ``parsed``, or the stream
ends with that error.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec

from llmrelay._pipeline import cache
from llmrelay._structured import OutputSpec, StreamTail, repair_messages, unwrap
from llmrelay._types import ChatChunk, ChatRequest, ChatResponse
from llmrelay.errors import StructuredOutputError

if TYPE_CHECKING:
    from llmrelay._engine import Engine
    from llmrelay._pipeline.call import Prepared

__all__ = ["structured_chat", "structured_stream", "with_parsed"]


def with_parsed(spec: OutputSpec, req: ChatRequest, resp: ChatResponse) -> ChatResponse:
    """``resp`` (a forced tool's call as text) with ``parsed`` when it validates."""
    resp, _ = _validated(spec, req, resp)
    return resp


def _validated(
    spec: OutputSpec, req: ChatRequest, resp: ChatResponse
) -> tuple[ChatResponse, str | None]:
    resp = unwrap(spec, resp, bool(req.tools))
    value, error = spec.try_parse(resp.text)
    if error is not None:
        return resp, error
    return msgspec.structs.replace(resp, parsed=value), None


async def structured_chat(
    eng: Engine, p: Prepared, timeout: float | None, memory_checked: bool
) -> ChatResponse:
    """A structured call: once, and once more with the validation error if it must."""
    spec = p.structured
    assert spec is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = await eng.chat_once(p, timeout, memory_checked=memory_checked)
    # parsed again for every caller: a joined or cached reply gets its own instance
    first, error = _validated(spec, p.req, first)
    if error is None:
        return first
    series = cache.series(p)
    eng.metrics.core.incr(*series, "structured_repairs")
    budget = eng.config.timeouts.total_s if timeout is None else timeout
    left = budget - (loop.time() - started)
    if p.mode == "replay" or left <= 0:
        eng.metrics.core.incr(*series, "structured_failures")
        why = "replay mode sends nothing" if p.mode == "replay" else "no time left"
        raise _failure(spec, first, error, f"no repair attempt ({why})")
    req = msgspec.structs.replace(
        p.req, messages=repair_messages(p.req.messages, first.text, error)
    )
    repair = dataclasses.replace(p, req=req, key=None)
    second = await eng.chat_once(repair, left, memory_checked=True)
    second, error = _validated(spec, req, second)
    out = _combined(first, second)
    if error is None:
        cache.store(eng, p, out)  # the next identical call is answered by the valid reply
        return out
    eng.metrics.core.incr(*series, "structured_failures")
    raise _failure(spec, out, error, "after one repair attempt")


def _combined(first: ChatResponse, second: ChatResponse) -> ChatResponse:
    """The repaired reply, counting both calls' tokens, attempts and time."""
    a, b = first.usage, second.usage
    usage = msgspec.structs.replace(
        b,
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
    )
    return msgspec.structs.replace(
        second,
        usage=usage,
        attempts=first.attempts + second.attempts,
        latency_s=first.latency_s + second.latency_s,
        cached=False,
    )


def _failure(
    spec: OutputSpec, resp: ChatResponse | None, error: str, when: str, raw: str | None = None
) -> StructuredOutputError:
    text = raw if raw is not None else (resp.text if resp is not None else "")
    model = resp.model if resp is not None else None
    return StructuredOutputError(
        f"the reply does not validate as {spec.name} {when}: {error}",
        raw=text,
        validation_error=error,
        response=resp,
        model=model,
    )


async def structured_stream(
    chunks: AsyncIterator[ChatChunk], spec: OutputSpec, req: ChatRequest
) -> AsyncIterator[ChatChunk]:
    """``chunks`` with the forced tool's JSON as text and ``parsed`` on the final chunk;
    StructuredOutputError after the last chunk when the text does not validate."""
    tail = StreamTail(spec, bool(req.tools))
    async for chunk in chunks:
        for out in tail.feed(chunk):
            yield out
    for out in tail.finish():
        yield out
    if tail.error is not None:
        raise _failure(spec, None, tail.error, "(a stream is not repaired)", raw=tail.text)
