"""What a fake provider records of each request it receives (in process or spawned)."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["RecordedRequest"]


class RecordedRequest(msgspec.Struct, frozen=True):
    """A request a fake received; ``json`` is None when the body was empty or not JSON.

    ``headers`` has lower-cased names; ``time`` is the fake's clock at arrival.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any | None
    time: float
    body: bytes = b""
