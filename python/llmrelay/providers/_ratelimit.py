"""Rate-limit headers of provider replies, parsed into one :class:`RateLimitInfo`.

Handles ``retry-after`` (seconds or an HTTP date), ``retry-after-ms``, OpenAI's
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (resets as Go durations
such as ``6m0s`` or ``20ms``) and Anthropic's
``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``
(resets as RFC 3339 times, turned into seconds from ``now``). A garbage value is
ignored (None); parsing never raises.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Final, cast

import msgspec

__all__ = ["RateLimitInfo", "parse_go_duration", "parse_rate_limit_headers"]


class RateLimitInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a reply said about rate limits; every field is None when not sent."""

    retry_after_s: float | None = None
    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset_s: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_s: float | None = None
    input_tokens_limit: int | None = None
    input_tokens_remaining: int | None = None
    input_tokens_reset_s: float | None = None
    output_tokens_limit: int | None = None
    output_tokens_remaining: int | None = None
    output_tokens_reset_s: float | None = None


_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_MAX_S = 1e9  # about 31 years: anything larger is garbage


def _seconds(value: float) -> float | None:
    if math.isnan(value) or value < 0 or value > _MAX_S:
        return None
    return value


def _float(text: str) -> float | None:
    try:
        return _seconds(float(text))
    except ValueError:
        return None


_MAX_COUNT_DIGITS = 15  # 10**15 requests or tokens a minute: anything longer is garbage


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_COUNT_DIGITS:
        return None
    return int(text)


def parse_go_duration(text: str) -> float | None:
    """Seconds of a Go duration (``1h2m3.5s``, ``20ms``) or a bare number of seconds."""
    text = text.strip()
    if not text:
        return None
    if text[0].isdigit() and text.replace(".", "", 1).isdigit():
        return _float(text)
    pos = 0
    total = 0.0
    for m in _GO_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        return None
    return _seconds(total)


def _rfc3339_delta(text: str, now: float) -> float | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    try:
        return _seconds(max(0.0, when.timestamp() - now))
    except (OverflowError, OSError, ValueError):
        return None


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        value = _float(ms.strip())
        if value is not None:
            return value / 1000.0
    text = headers.get("retry-after")
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if text[0].isdigit():
        return _float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    try:
        return _seconds(max(0.0, when.timestamp() - now))
    except (OverflowError, OSError, ValueError):
        return None


_NONE: Final = RateLimitInfo()


def _from_pairs(pairs: Sequence[object]) -> dict[str, str] | None:
    """Raw ``(bytes, bytes)`` header pairs as a str mapping, or None when no pair names a
    rate limit (the usual reply: one scan of the joined names, nothing decoded) or the
    pairs are not pairs of bytes."""
    typed = cast("Sequence[tuple[bytes, bytes]]", pairs)
    try:
        names = b" ".join([k for k, _ in typed]).lower()
    except (TypeError, ValueError):  # not pairs, or a name that is not bytes
        return None
    if b"ratelimit" not in names and b"retry-after" not in names:
        return None
    out: dict[str, str] = {}
    for k, v in typed:
        if isinstance(v, bytes):
            out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


def parse_rate_limit_headers(
    headers: Mapping[str, str] | Sequence[tuple[bytes, bytes]], now: float | None = None
) -> RateLimitInfo:
    """Parse the rate-limit headers of a reply: a case-insensitive mapping (e.g.
    httpx.Headers) or raw ``(bytes, bytes)`` pairs with lower-case names (the core's).

    ``now`` is the wall-clock time in seconds used for absolute times (HTTP dates,
    RFC 3339 resets); it defaults to ``time.time()``.
    """
    if isinstance(headers, list | tuple):
        pairs = _from_pairs(headers)
        if pairs is None:
            return _NONE
        headers = pairs
    if not isinstance(headers, Mapping):
        return RateLimitInfo()
    if not all(isinstance(k, str) for k in headers):
        return RateLimitInfo()
    # one pass over the names: most replies carry no rate-limit header at all, and a
    # case-insensitive mapping (httpx.Headers) scans its list on every lookup
    names = " ".join(headers).lower()
    if "ratelimit" not in names and "retry-after" not in names:
        return RateLimitInfo()
    headers = {k.lower(): v for k, v in headers.items() if isinstance(v, str)}
    clock = time.time() if now is None else now
    out: dict[str, float | int | None] = {"retry_after_s": _retry_after(headers, clock)}
    for kind in ("requests", "tokens"):
        out[f"{kind}_limit"] = _int(headers.get(f"x-ratelimit-limit-{kind}"))
        out[f"{kind}_remaining"] = _int(headers.get(f"x-ratelimit-remaining-{kind}"))
        go_reset = headers.get(f"x-ratelimit-reset-{kind}")
        out[f"{kind}_reset_s"] = parse_go_duration(go_reset) if go_reset is not None else None
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        key = kind.replace("-", "_")
        prefix = f"anthropic-ratelimit-{kind}"
        limit = _int(headers.get(f"{prefix}-limit"))
        remaining = _int(headers.get(f"{prefix}-remaining"))
        reset_text = headers.get(f"{prefix}-reset")
        reset = _rfc3339_delta(reset_text, clock) if reset_text is not None else None
        if limit is not None:
            out[f"{key}_limit"] = limit
        if remaining is not None:
            out[f"{key}_remaining"] = remaining
        if reset is not None:
            out[f"{key}_reset_s"] = reset
    return RateLimitInfo(**{k: v for k, v in out.items() if v is not None})  # type: ignore[arg-type]
