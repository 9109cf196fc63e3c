"""Middleware: ``async def mw(request, call_next) -> ChatResponse`` around every call.

A middleware sees each call after validation, cache hits included, and may change
the request, answer it itself, or wrap what ``call_next`` returns. For a stream,
``call_next`` returns the finished stream as one response once the caller has read
it to the end (see ``llmrelay._pipeline.stream``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from llmrelay._types import ChatRequest, ChatResponse

__all__ = ["Middleware", "NextFn", "chain"]

NextFn = Callable[[ChatRequest], Awaitable[ChatResponse]]
Middleware = Callable[[ChatRequest, NextFn], Awaitable[ChatResponse]]


def chain(middleware: Sequence[Middleware], terminal: NextFn) -> NextFn:
    """``middleware`` wrapped around ``terminal``, outermost first."""
    call = terminal
    for mw in reversed(middleware):
        call = _wrap(mw, call)
    return call


def _wrap(mw: Middleware, call_next: NextFn) -> NextFn:
    async def call(req: ChatRequest) -> ChatResponse:
        return await mw(req, call_next)

    return call
