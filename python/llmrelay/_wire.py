"""The byte-level shape of one HTTP exchange, shared by adapters and transports.

An adapter turns a call into a :class:`WireRequest` (method, URL, header pairs,
body bytes) and reads a :class:`WireReply` (status, header pairs, body bytes).
Header names in a reply are lower-case bytes (the core's client gives them so,
the httpx shim lower-cases them), so a lookup is a plain comparison.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

__all__ = ["HeaderPairs", "WireReply", "WireRequest", "header", "header_map"]

#: Raw header pairs, in order, names and values as bytes.
HeaderPairs: TypeAlias = list[tuple[bytes, bytes]]


class WireRequest(NamedTuple):
    """One HTTP request as bytes: what an adapter hands to a transport."""

    method: str
    url: str
    headers: HeaderPairs
    body: bytes


class WireReply(NamedTuple):
    """One whole HTTP reply as bytes: what a transport hands back."""

    status: int
    headers: HeaderPairs
    body: bytes


def header(headers: HeaderPairs, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), decoded as latin-1."""
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


def header_map(headers: HeaderPairs) -> dict[str, str]:
    """The pairs as a dict of lower-case names (the first value of a repeated name wins)."""
    out: dict[str, str] = {}
    for k, v in headers:
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out
