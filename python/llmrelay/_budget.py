"""USD budgets: a limiter dimension in dollars, per deployment and per view.

A call reserves the most it can cost (its prompt estimate plus its output limit,
at the model's price, no cache discount) before it is sent; when it ends the
reservation is settled to the real cost (``ChatResponse.cost``), or given back
if nothing came of it. A call the budget has no room for raises
:class:`~llmrelay.errors.BudgetExceededError` and is not sent. With ``period_s``
the budget restarts every ``period_s`` seconds (fixed windows from its first
use); reservations still open at a restart stay booked until they settle.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from llmrelay._config import BudgetConfig
from llmrelay.errors import BudgetExceededError

__all__ = ["Budget", "Reservation"]


class Reservation:
    """What one call holds of one or more budgets until it settles (idempotent)."""

    __slots__ = ("_budgets", "_done", "amount")

    def __init__(self, budgets: list[Budget], amount: float) -> None:
        self._budgets = budgets
        self.amount = amount
        self._done = False

    def settle(self, actual_usd: float | None) -> None:
        """Book the real cost (None: unknown, the reservation is kept as spent)."""
        if self._done:
            return
        self._done = True
        spent = self.amount if actual_usd is None else actual_usd
        for b in self._budgets:
            b._settle(self.amount, spent)

    def refund(self) -> None:
        """Give the reservation back: the call cost nothing."""
        if self._done:
            return
        self._done = True
        for b in self._budgets:
            b._settle(self.amount, 0.0)


class Budget:
    """A USD limit over a period (thread-safe: a service's calls share it)."""

    __slots__ = (
        "_clock",
        "_lock",
        "_reserved",
        "_spent",
        "_start",
        "limit_usd",
        "name",
        "period_s",
    )

    def __init__(
        self, name: str, config: BudgetConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.limit_usd = float(config.limit_usd)
        self.period_s = config.period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._spent = 0.0
        self._reserved = 0.0
        self._start: float | None = None

    def _roll(self, now: float) -> None:
        """Start the current period (called under the lock)."""
        if self._start is None:
            self._start = now
        elif self.period_s is not None and now - self._start >= self.period_s:
            periods = math.floor((now - self._start) / self.period_s)
            self._start += periods * self.period_s
            self._spent = 0.0

    @property
    def spent_usd(self) -> float:
        """What the current period has spent (settled calls)."""
        with self._lock:
            self._roll(self._clock())
            return self._spent

    @property
    def reserved_usd(self) -> float:
        """What calls in flight hold."""
        with self._lock:
            return self._reserved

    def remaining_usd(self) -> float:
        """What is left of the limit in the current period, reservations taken off."""
        with self._lock:
            self._roll(self._clock())
            return max(0.0, self.limit_usd - self._spent - self._reserved)

    def _try(self, amount: float, model: str | None) -> None:
        """Book ``amount`` or raise BudgetExceededError (under no lock of another budget)."""
        with self._lock:
            now = self._clock()
            self._roll(now)
            if self._spent + self._reserved + amount > self.limit_usd:
                retry = None
                if self.period_s is not None and self._start is not None:
                    retry = max(0.0, self._start + self.period_s - now)
                raise BudgetExceededError(
                    f"budget {self.name}: a call that may cost ${amount:.6f} does not fit"
                    f" (limit ${self.limit_usd:.6f}, spent ${self._spent:.6f},"
                    f" held by calls in flight ${self._reserved:.6f})",
                    budget=self.name,
                    limit_usd=self.limit_usd,
                    spent_usd=self._spent,
                    needed_usd=amount,
                    retry_after=retry,
                    model=model,
                )
            self._reserved += amount

    def _settle(self, reserved: float, spent: float) -> None:
        with self._lock:
            self._roll(self._clock())
            self._reserved = max(0.0, self._reserved - reserved)
            self._spent += spent

    @staticmethod
    def reserve_all(budgets: list[Budget], amount: float, model: str | None) -> Reservation:
        """Reserve ``amount`` in every budget, or in none (BudgetExceededError)."""
        booked: list[Budget] = []
        try:
            for b in budgets:
                b._try(amount, model)
                booked.append(b)
        except BudgetExceededError:
            for b in booked:
                b._settle(amount, 0.0)
            raise
        return Reservation(booked, amount)
