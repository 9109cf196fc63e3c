"""Streamed replies as whole events: Server-Sent Events and NDJSON, framed by the core.

The framing itself (line ends, ``data`` joining, comments, a partial event at the end)
lives once, in the core (``rust/http/sse.rs``): the default transport frames a body as
it arrives and hands over batches of ``(event, data)`` pairs; bytes read elsewhere go
through the same framer (``_core.StreamFramer``). The built-in adapters' decoders
derive from :class:`FramedDecoder` and decode each event's data with a typed msgspec
struct in one step. :class:`SSEDecoder` and :class:`NDJSONDecoder` frame bytes for
code that has only bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import msgspec

from llmrelay import _core
from llmrelay._transport import Events
from llmrelay.providers._errors import response_error

if TYPE_CHECKING:
    from llmrelay._types import ChatChunk
    from llmrelay.providers._base import ProviderAdapter

__all__ = ["FramedDecoder", "NDJSONDecoder", "SSEDecoder", "SSEEvent"]


class SSEEvent(msgspec.Struct, frozen=True):
    """One Server-Sent Event: its ``event`` name (default ``message``) and ``data``."""

    event: str
    data: str


class SSEDecoder:
    """Splits an SSE byte stream into events (the core's WHATWG framing: ``\\n``,
    ``\\r\\n`` or ``\\r`` line ends; ``data`` lines joined by newlines; comments and
    ``id``/``retry`` ignored; a partial event at the end is not dispatched)."""

    __slots__ = ("_framer",)

    def __init__(self) -> None:
        self._framer = _core.StreamFramer("sse")

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return the events completed by them."""
        return [SSEEvent(e, d.decode("utf-8", "replace")) for e, d in self._framer.feed(chunk)]

    def close(self) -> list[SSEEvent]:
        """End of stream (an event without its blank line is dropped, per the spec)."""
        return [SSEEvent(e, d.decode("utf-8", "replace")) for e, d in self._framer.finish()]


class NDJSONDecoder:
    """Splits a newline-delimited JSON byte stream into its non-blank lines."""

    __slots__ = ("_framer",)

    def __init__(self) -> None:
        self._framer = _core.StreamFramer("ndjson")

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the complete lines (without line ends)."""
        return [d for _, d in self._framer.feed(chunk)]

    def close(self) -> list[bytes]:
        """End of stream: return a last line left without its newline, if any."""
        return [d for _, d in self._framer.finish()]


class FramedDecoder:
    """Base of the built-in stream decoders: whole events in, chunks out.

    ``framing`` (``"sse"`` or ``"ndjson"``) tells the transport how to frame the body;
    ``events`` turns a batch of ``(event, data)`` pairs into chunks (raising a typed
    error for an error event or a malformed one) and sets ``done`` at the end marker.
    ``feed``/``close`` do the same from raw bytes (the ``StreamDecoder`` protocol).
    """

    framing: ClassVar[str] = "sse"

    __slots__ = ("_adapter", "_framer", "_model", "done")

    def __init__(self, adapter: ProviderAdapter, model: str) -> None:
        self._adapter = adapter
        self._model = model
        self._framer: _core.StreamFramer | None = None
        self.done = False

    def events(self, batch: Events) -> list[ChatChunk]:
        """The chunks of a batch of whole events (none after the end marker)."""
        raise NotImplementedError(f"{type(self).__name__} does not decode events")

    def feed(self, data: bytes) -> list[ChatChunk]:
        """The chunks completed by ``data``."""
        if self._framer is None:
            self._framer = _core.StreamFramer(self.framing)
        try:
            batch = self._framer.feed(data)
        except _core.HttpTransportError:
            raise self.bad("stream event is too long") from None
        return self.events(batch)

    def close(self) -> list[ChatChunk]:
        """The chunks left at the end of the bytes."""
        if self._framer is None:
            return []
        return self.events(self._framer.finish())

    def bad(self, text: str) -> Exception:
        """The ProviderResponseError of an event that breaks the wire protocol."""
        return response_error(text, self._adapter.deployment, self._model)
