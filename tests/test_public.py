"""The public surface: exports are sorted and complete, errors form the documented tree."""

from __future__ import annotations

import pytest

import llmrelay
from llmrelay import _core, errors


def test_all_is_sorted_and_complete() -> None:
    assert list(llmrelay.__all__) == sorted(llmrelay.__all__)
    for name in llmrelay.__all__:
        assert hasattr(llmrelay, name), name


def test_errors_all_sorted_and_exported() -> None:
    assert list(errors.__all__) == sorted(errors.__all__)
    for name in errors.__all__:
        assert hasattr(errors, name)


def test_error_tree_matches_stdlib() -> None:
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.InvalidRequestError, ValueError)
    assert issubclass(errors.ProviderTimeoutError, TimeoutError)
    for cls in (
        errors.RateLimitError,
        errors.AuthenticationError,
        errors.ProviderTimeoutError,
        errors.ProviderUnavailableError,
        errors.ContextLengthError,
        errors.ContentFilterError,
    ):
        assert issubclass(cls, errors.ProviderError)
    for cls in (errors.CircuitOpenError, errors.QueueFullError, errors.AllProvidersFailedError):
        assert issubclass(cls, errors.LLMRelayError)


def test_provider_error_carries_context() -> None:
    e = errors.RateLimitError(
        "slow down", retry_after=1.5, provider="openai", model="gpt", status_code=429
    )
    assert e.retry_after == 1.5 and e.status_code == 429 and e.retryable
    assert "provider=openai" in str(e) and "status=429" in str(e)


def test_all_failed_lists_attempts() -> None:
    inner = errors.ProviderUnavailableError("down", provider="a", status_code=503)
    e = errors.AllProvidersFailedError(
        "all failed", attempts=[errors.Attempt(provider="a", model="m", error=inner)]
    )
    assert e.last_error is inner
    assert "a/m: ProviderUnavailableError" in str(e)


def test_manual_clock_rejects_bad_input() -> None:
    c = _core.ManualClock(1.0)
    c.advance(0.5)
    assert c.now() == pytest.approx(1.5)
    with pytest.raises(errors.ConfigError, match="seconds=-1"):
        c.advance(-1.0)
    with pytest.raises(errors.ConfigError, match="start_s=NaN"):
        _core.ManualClock(float("nan"))


def test_core_argument_errors_name_their_field() -> None:
    with pytest.raises(errors.InvalidRequestError) as info:
        _core.PriorityScheduler().acquire(12)
    assert info.value.field == "priority"
    with pytest.raises(errors.InvalidRequestError) as info:
        _core.CircuitBreaker("d").record("maybe")
    assert info.value.field == "outcome"
