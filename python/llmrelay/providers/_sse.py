"""Incremental decoders for streamed replies: Server-Sent Events and NDJSON.

Both take the reply's bytes in whatever buffers the transport hands over and
return whole events, so a stream costs one await per network buffer, not one
per line.
"""

from __future__ import annotations

import msgspec

__all__ = ["NDJSONDecoder", "SSEDecoder", "SSEEvent"]


class SSEEvent(msgspec.Struct, frozen=True):
    """One Server-Sent Event: its ``event`` name (default ``message``) and ``data``."""

    event: str
    data: str


class SSEDecoder:
    """Splits an SSE byte stream into events (WHATWG rules: ``\\n``, ``\\r\\n`` or ``\\r``
    line ends; ``data`` lines joined by newlines; comments and ``id``/``retry`` ignored)."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return the events completed by them."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # keep a trailing \r: it may be the first half of \r\n
            tail = b"\r" if buf.endswith(b"\r") else b""
            body = buf[:-1] if tail else buf
            buf = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        events: list[SSEEvent] = []
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"), events)
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: return a final event left without its blank line, if any."""
        events: list[SSEEvent] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r").decode("utf-8", "replace"), events)
            self._buf = b""
        self._line("", events)
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._event = None
            self._data = []
            return
        if line[0] == ":":
            return
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


class NDJSONDecoder:
    """Splits a newline-delimited JSON byte stream into its non-empty lines."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the complete lines (without line ends)."""
        buf = self._buf + chunk if self._buf else chunk
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        return [line for line in (raw.strip() for raw in lines) if line]

    def close(self) -> list[bytes]:
        """End of stream: return a last line left without its newline, if any."""
        rest = self._buf.strip()
        self._buf = b""
        return [rest] if rest else []
