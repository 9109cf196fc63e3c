"""Helpers shared by the service tests (imported by conftest and test modules)."""

from __future__ import annotations

from collections.abc import Callable

from llmrelay import LLMServiceConfig

ConfigFactory = Callable[..., LLMServiceConfig]


class RecordingSleep:
    """An injected ``sleep`` that records every delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
