"""The control channel of a fake run as a process: script it from the test's process.

A fake started with ``control=True`` (as ``python -m llmrelay.testing`` does)
answers ``POST /__llmrelay__/control`` with a JSON body ``{"op": ..., "kwargs": {...}}``
by calling the same-named method of its :class:`~llmrelay.testing.FakeProvider`
(a fixed list: scripting, faults, rate limits, the request log, latency settings).
Control requests are not logged as requests. The fake listens on 127.0.0.1 only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay.errors import ConfigError

if TYPE_CHECKING:
    from llmrelay.testing._fake import FakeProvider
    from llmrelay.testing._server import HttpRequest, Responder

__all__ = ["CONTROL_PATH", "handle_control"]

CONTROL_PATH = "/__llmrelay__/control"

#: Methods callable through the channel, with whether their result is returned.
_METHODS = frozenset(
    {"inject", "clear_faults", "script", "reset", "set_rate_limit_headers", "set_rate_limit"}
)
#: Attributes the channel may set.
_SETTABLE = frozenset({"latency_s", "stream_chunk_delay_s", "model"})


class _Op(msgspec.Struct, forbid_unknown_fields=True):
    op: str
    kwargs: dict[str, Any] = {}


def _run(fake: FakeProvider, op: _Op) -> Any:
    if op.op in _METHODS:
        getattr(fake, op.op)(**op.kwargs)
        return None
    if op.op == "set":
        for name, value in op.kwargs.items():
            if name not in _SETTABLE:
                raise ConfigError(f"invalid attribute {name!r}: settable are {sorted(_SETTABLE)}")
            setattr(fake, name, value)
        return None
    if op.op == "requests":
        return fake.requests
    if op.op == "request_count":
        return fake.request_count
    raise ConfigError(f"invalid op={op.op!r}")


async def handle_control(fake: FakeProvider, request: HttpRequest, responder: Responder) -> None:
    """Run one control operation and answer ``{"result": ...}`` (or 400 ``{"error": ...}``)."""
    try:
        op = msgspec.json.decode(request.body, type=_Op)
        body = msgspec.json.encode({"result": _run(fake, op)})
        status = 200
    except (msgspec.DecodeError, msgspec.ValidationError, ConfigError, TypeError) as e:
        body = msgspec.json.encode({"error": f"{type(e).__name__}: {e}"})
        status = 400
    await responder.send(status, body, "application/json")
