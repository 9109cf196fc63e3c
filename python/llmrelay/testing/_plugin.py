"""Pytest fixtures (registered through the ``pytest11`` entry point).

``fake_openai``, ``fake_anthropic`` and ``fake_ollama``: a running ``FakeProvider`` per test,
stopped (every socket closed) when the test ends. In an async test the fake serves from the
test's own event loop; in a sync test, whose loop never runs while the test body does, it
serves from a background thread with its own loop (``run_in_thread``), so both just work.

Unconsumed scripted replies: mark a test ``@pytest.mark.llmrelay_fakes(assert_all_consumed=
True)``, or set the ini option ``llmrelay_assert_all_consumed = true`` for every test, and a
test that passed but left a scripted reply of one of these fixtures unused fails at teardown
with the list of what is left (``FakeProvider.assert_all_consumed``). A test that failed
anyway is not reported twice.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from llmrelay.testing import FakeProvider, Protocol

try:
    import pytest_asyncio

    _async_fixture: Callable[..., Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio, plain pytest fixtures
    _async_fixture = pytest.fixture

_INI = "llmrelay_assert_all_consumed"
_MARK = "llmrelay_fakes"
_CALL_FAILED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _INI,
        "fail a passing test that left scripted replies of fake_openai / fake_anthropic /"
        " fake_ollama unconsumed",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARK}(assert_all_consumed=True): at teardown, fail if a fake_* fixture of this"
        " test has scripted replies left",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


def _is_async_test(request: pytest.FixtureRequest) -> bool:
    fn = getattr(request, "function", None)
    inner = getattr(getattr(fn, "hypothesis", None), "inner_test", None)  # @given wraps it
    return inspect.iscoroutinefunction(inner or fn)


def _check_consumed(request: pytest.FixtureRequest, fake: FakeProvider) -> None:
    marker = request.node.get_closest_marker(_MARK)
    wanted = bool(request.config.getini(_INI))
    if marker is not None:
        wanted = bool(marker.kwargs.get("assert_all_consumed", wanted))
    if wanted and not request.node.stash.get(_CALL_FAILED, False):
        fake.assert_all_consumed()


def _serve(request: pytest.FixtureRequest, protocol: Protocol) -> Iterator[FakeProvider]:
    from llmrelay.testing import FakeProvider

    if _is_async_test(request):
        fake: FakeProvider = request.getfixturevalue(f"_llmrelay_fake_{protocol}_on_loop")
        yield fake
        _check_consumed(request, fake)
        return
    with FakeProvider(protocol).run_in_thread() as fake:
        yield fake
        _check_consumed(request, fake)


@pytest.fixture
def fake_openai(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    """A fake OpenAI server for this test (``base_url`` ends in ``/v1``)."""
    yield from _serve(request, "openai")


@pytest.fixture
def fake_anthropic(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    """A fake Anthropic server for this test."""
    yield from _serve(request, "anthropic")


@pytest.fixture
def fake_ollama(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    """A fake Ollama server for this test."""
    yield from _serve(request, "ollama")


async def _on_loop(protocol: Protocol) -> AsyncIterator[FakeProvider]:
    from llmrelay.testing import FakeProvider

    async with FakeProvider(protocol) as fake:
        yield fake


@_async_fixture
async def _llmrelay_fake_openai_on_loop() -> AsyncIterator[FakeProvider]:
    async for fake in _on_loop("openai"):
        yield fake


@_async_fixture
async def _llmrelay_fake_anthropic_on_loop() -> AsyncIterator[FakeProvider]:
    async for fake in _on_loop("anthropic"):
        yield fake


@_async_fixture
async def _llmrelay_fake_ollama_on_loop() -> AsyncIterator[FakeProvider]:
    async for fake in _on_loop("ollama"):
        yield fake
