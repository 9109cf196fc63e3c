"""Streams fail over before their first token, never after (issue 14, item 2)."""

from __future__ import annotations

from typing import Any

import pytest

from llmrelay import CacheConfig, LLMService, ModelSelectionStrategy, RequestTimeouts
from llmrelay.errors import ConfigError, ProviderUnavailableError
from service_helpers import ConfigFactory

FALLBACK = {"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]}


def _config(make_config: ConfigFactory, first_token_s: float) -> Any:
    return make_config(
        cache=CacheConfig(enabled=False),
        selection=ModelSelectionStrategy(fallbacks=FALLBACK),
        provider_kw={
            "openai": {"timeouts": RequestTimeouts(first_token_s=first_token_s)},
            "claude": {"timeouts": RequestTimeouts(read_s=10.0)},
        },
    )


async def test_stream_without_a_first_token_in_time_falls_back(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    """The primary sends its role event at once, then nothing for 3 s: no content within
    first_token_s, nothing handed to the caller, so the call falls back."""
    fakes["openai"].stream_chunk_delay_s = 3.0
    async with LLMService(_config(make_config, 0.5)) as svc:
        chunks = [c async for c in svc.astream("fail me over", timeout=10)]
        snap = svc.metrics.snapshot()
    text = "".join(c.text for c in chunks)
    assert "fail me over" in text
    assert {c.provider for c in chunks if c.text} == {"claude"}
    (primary,) = snap.for_deployment("openai")
    # retried like a plain call (up to max_retries=3; a jittered backoff longer than the
    # share of the time left moves on sooner), then the fallback
    tries = primary.counter("failures.ProviderTimeoutError")
    assert 1 <= tries <= 4
    assert fakes["openai"].request_count == tries
    (fallback,) = snap.for_deployment("claude")
    assert fallback.counter("successes") == 1
    assert fallback.histograms["ttft"]["count"] == 1


async def test_stream_that_dies_after_its_first_chunk_never_switches(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    fakes["openai"].inject("cut_stream", after=2)  # role + first words, then cut
    fakes["openai"].stream_chunk_delay_s = 0.01
    got: list[str] = []
    async with LLMService(_config(make_config, 5.0)) as svc:
        with pytest.raises(ProviderUnavailableError):
            async for c in svc.astream("a stream that is cut in the middle", timeout=10):
                got.append(c.text)
        assert fakes["anthropic"].request_count == 0  # never switched after text went out
    assert "".join(got)  # the caller did get the first part


def test_first_token_default_suits_reasoning_models() -> None:
    assert RequestTimeouts().first_token_s >= 60.0
    with pytest.raises(ConfigError, match="first_token_s"):
        RequestTimeouts(first_token_s=0)
