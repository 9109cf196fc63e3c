"""Hostile or garbled rate-limit headers on a successful reply: the paid answer is never
lost, and no header can lock a deployment beyond the window of its limits."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from llmrelay import CacheConfig, LLMService, LLMServiceConfig, ProviderConfig

BIG = "9" * 400


def _reply(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def _sse(model: str, text: str) -> bytes:
    events = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
            ],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


def _service(headers: dict[str, str]) -> tuple[LLMService, list[int]]:
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        body = json.loads(request.content)
        if body.get("stream"):
            return httpx.Response(
                200,
                headers={**headers, "content-type": "text/event-stream"},
                content=_sse(body["model"], "streamed answer"),
            )
        return httpx.Response(200, headers=headers, json=_reply(body["model"], "paid answer"))

    config = LLMServiceConfig(
        providers=[ProviderConfig(name="openai", base_url="http://127.0.0.1:9/v1", api_key="k")],
        default_model="openai/gpt-4o-mini",
        cache=CacheConfig(enabled=False),
    )
    return LLMService(config, transport=lambda _p: httpx.MockTransport(handler)), sent


@pytest.mark.parametrize(
    "headers",
    [
        {
            "x-ratelimit-limit-requests": BIG,
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "1s",
        },
        {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": BIG,
            "x-ratelimit-reset-requests": "1s",
        },
        {
            "x-ratelimit-limit-tokens": BIG,
            "x-ratelimit-remaining-tokens": BIG,
            "x-ratelimit-reset-tokens": BIG + "h",
        },
        {
            "anthropic-ratelimit-requests-limit": BIG,
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z",
        },
        {"retry-after": BIG, "retry-after-ms": BIG},
        {
            "x-ratelimit-limit-requests": "nan",
            "x-ratelimit-remaining-requests": "-1",
            "x-ratelimit-reset-requests": "inf",
        },
    ],
)
async def test_garbled_numbers_never_lose_the_reply(headers: dict[str, str]) -> None:
    svc, sent = _service(headers)
    async with svc:
        for i in range(3):
            r = await svc.achat(f"q{i}", timeout=5)
            assert r.text == "paid answer"
        text = "".join([c.text async for c in svc.astream("s", timeout=5)])
        assert text == "streamed answer"
    assert len(sent) == 4


async def test_a_ten_year_reset_does_not_lock_the_deployment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """remaining=0 with a reset of 87600h: ignored (longer than the minute a limit covers),
    with a warning and a count; the next calls go out at once."""
    headers = {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "87600h",
    }
    svc, sent = _service(headers)
    with caplog.at_level(logging.WARNING, logger="llmrelay"):
        async with svc:
            for i in range(5):
                r = await svc.achat(f"q{i}", timeout=2)
                assert r.text == "paid answer"
            snap = svc.metrics.snapshot()
    assert len(sent) == 5
    assert snap.total("rate_headers_ignored") == 5
    assert sum("longer than the 60s window" in m for m in caplog.messages) == 1


async def test_streams_learn_from_rate_limit_headers() -> None:
    """A streamed reply's headers pace the deployment like a plain reply's do."""
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "30s",
    }
    svc, _ = _service(headers)
    async with svc:
        text = "".join([c.text async for c in svc.astream("s", timeout=5)])
        assert text == "streamed answer"
        lim = svc.metrics.snapshot().limiter["openai"]
    assert lim["available.rpm"] < 1.0  # learnt: nothing left until the reset
