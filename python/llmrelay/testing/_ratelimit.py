"""Rate-limit state a fake reports in its headers, and an optional enforced limit.

``RateLimitInfo`` is protocol-neutral (limits, remaining, seconds to reset); each protocol
module renders it in its provider's header format. ``WindowLimit`` enforces requests and
tokens per minute over fixed one-minute windows of the fake's clock, refusing with 429 when a
request would exceed either, and reports its state as a ``RateLimitInfo``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from llmrelay.errors import ConfigError

__all__ = ["RateLimitInfo", "WindowLimit", "go_duration"]


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What the rate-limit headers say; None fields are left out."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "limit_requests",
            "remaining_requests",
            "reset_requests_s",
            "limit_tokens",
            "remaining_tokens",
            "reset_tokens_s",
        ):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or value < 0
            ):
                raise ConfigError(f"{name}={value!r}: must be a number >= 0 or None")


def go_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers (Go durations): ``6ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1.0:
        return f"{round(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{round(secs, 3):g}s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


class WindowLimit:
    """Requests and tokens per minute over fixed windows of ``clock()`` seconds."""

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        clock: Callable[[], float],
    ) -> None:
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(f"{name}={value!r}: must be an int >= 1 or None")
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._requests = 0
        self._tokens = 0

    def _roll(self, now: float) -> None:
        if now - self._window_start >= 60.0:
            self._window_start += 60.0 * ((now - self._window_start) // 60.0)
            self._requests = 0
            self._tokens = 0

    def admit(self, tokens: int) -> float | None:
        """Count a request of ``tokens`` prompt tokens; None if admitted, else seconds to wait."""
        with self._lock:
            now = self._clock()
            self._roll(now)
            over_requests = self.rpm is not None and self._requests + 1 > self.rpm
            over_tokens = self.tpm is not None and self._tokens + tokens > self.tpm
            if over_requests or over_tokens:
                return max(0.0, self._window_start + 60.0 - now)
            self._requests += 1
            self._tokens += tokens
            return None

    def add_tokens(self, tokens: int) -> None:
        """Count tokens produced after admission (the completion)."""
        with self._lock:
            self._tokens += tokens

    def info(self) -> RateLimitInfo:
        with self._lock:
            now = self._clock()
            self._roll(now)
            reset = max(0.0, self._window_start + 60.0 - now)
            return RateLimitInfo(
                limit_requests=self.rpm,
                remaining_requests=None if self.rpm is None else max(0, self.rpm - self._requests),
                reset_requests_s=None if self.rpm is None else reset,
                limit_tokens=self.tpm,
                remaining_tokens=None if self.tpm is None else max(0, self.tpm - self._tokens),
                reset_tokens_s=None if self.tpm is None else reset,
            )
