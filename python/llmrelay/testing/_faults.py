"""Faults on demand: which request fails, and how.

``FakeProvider.inject(fault, times=, ratio=, seed=, **args)`` adds a rule. For each request the
rules are asked in the order they were added; the first that fires decides the request's fault
(at most one per request). A rule with ``times`` fires for that many requests and is then
dropped; with ``ratio`` it fires for a seeded-random fraction of requests (deterministic for a
given seed); with both, randomly until it has fired ``times`` times; with neither, always.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Literal, get_args

from llmrelay.errors import ConfigError

__all__ = ["FAULTS", "Fault", "FaultKind", "FaultPlan"]

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "unavailable",
    "overloaded",
    "reset",
    "hang",
    "cut_stream",
    "malformed_json",
    "wrong_content_type",
    "slow",
    "context_length",
    "auth",
]
FAULTS: tuple[str, ...] = get_args(FaultKind)

# each fault's arguments and their defaults
_ARGS: dict[str, dict[str, Any]] = {
    "rate_limit": {"retry_after": 1.0, "message": None},
    "server_error": {"message": None},
    "unavailable": {"message": None},
    "overloaded": {"message": None},
    "reset": {},
    "hang": {},
    "cut_stream": {"after": 1, "abrupt": False},
    "malformed_json": {},
    "wrong_content_type": {},
    "slow": {"delay_s": 1.0},
    "context_length": {"limit": 128_000},
    "auth": {"message": None},
}


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault chosen for one request, with its arguments filled in."""

    kind: FaultKind
    args: dict[str, Any]


def _check_args(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    allowed = _ARGS[kind]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ConfigError(
            f"fault {kind!r} takes no argument {unknown[0]}={args[unknown[0]]!r}"
            f" (it takes: {', '.join(sorted(allowed)) or 'nothing'})"
        )
    full = {**allowed, **args}
    for name in ("retry_after", "delay_s"):
        if name in args:
            value = args[name]
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            if not ok and not (name == "retry_after" and value is None):
                raise ConfigError(f"{name}={value!r}: must be a number >= 0")
    for name in ("after", "limit"):
        if name in args:
            value = args[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}={value!r}: must be an int >= 0")
    if "message" in args and not isinstance(args["message"], str | None):
        raise ConfigError(f"message={args['message']!r}: must be a str")
    if "abrupt" in args and not isinstance(args["abrupt"], bool):
        raise ConfigError(f"abrupt={args['abrupt']!r}: must be a bool")
    return full


class _Rule:
    __slots__ = ("fault", "ratio", "remaining", "rng")

    def __init__(
        self, fault: Fault, remaining: int | None, ratio: float | None, rng: random.Random | None
    ) -> None:
        self.fault = fault
        self.remaining = remaining
        self.ratio = ratio
        self.rng = rng


class FaultPlan:
    """The injected rules; thread-safe (faults may be injected from another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []

    def add(
        self,
        fault: str,
        times: int | None = None,
        ratio: float | None = None,
        seed: int | None = None,
        args: dict[str, Any] | None = None,
    ) -> None:
        if fault not in _ARGS:
            raise ConfigError(f"fault={fault!r}: unknown fault (known: {', '.join(FAULTS)})")
        if times is not None and (
            not isinstance(times, int) or isinstance(times, bool) or times < 1
        ):
            raise ConfigError(f"times={times!r}: must be an int >= 1 or None")
        if ratio is not None and (
            not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0.0 <= ratio <= 1.0
        ):
            raise ConfigError(f"ratio={ratio!r}: must be a number in [0, 1] or None")
        if seed is not None and ratio is None:
            raise ConfigError(f"seed={seed!r}: only meaningful with ratio")
        full = _check_args(fault, dict(args or {}))
        rng = random.Random(seed) if ratio is not None else None
        rule = _Rule(Fault(fault, full), times, ratio, rng)  # type: ignore[arg-type]
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def __bool__(self) -> bool:
        return bool(self._rules)

    def pick(self) -> Fault | None:
        """The fault for the next request, consuming one firing of its rule; None if none."""
        if not self._rules:
            return None
        with self._lock:
            for i, rule in enumerate(self._rules):
                if rule.rng is not None and rule.rng.random() >= (rule.ratio or 0.0):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        del self._rules[i]
                return rule.fault
        return None
