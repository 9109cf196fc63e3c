"""Pytest fixtures (registered through the ``pytest11`` entry point).

``fake_openai``, ``fake_anthropic`` and ``fake_ollama``: a running ``FakeProvider`` per test,
on the test's event loop, stopped (every socket closed) when the test ends. They are async
fixtures: with pytest-asyncio use them from async tests (any mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from llmrelay.testing import FakeProvider

try:
    import pytest_asyncio

    _async_fixture: Callable[..., Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio, plain pytest fixtures
    _async_fixture = pytest.fixture


@_async_fixture
async def fake_openai() -> AsyncIterator[FakeProvider]:
    """A fake OpenAI server for this test (``base_url`` ends in ``/v1``)."""
    from llmrelay.testing import FakeProvider

    async with FakeProvider("openai") as fake:
        yield fake


@_async_fixture
async def fake_anthropic() -> AsyncIterator[FakeProvider]:
    """A fake Anthropic server for this test."""
    from llmrelay.testing import FakeProvider

    async with FakeProvider("anthropic") as fake:
        yield fake


@_async_fixture
async def fake_ollama() -> AsyncIterator[FakeProvider]:
    """A fake Ollama server for this test."""
    from llmrelay.testing import FakeProvider

    async with FakeProvider("ollama") as fake:
        yield fake
