"""Rate-limit headers: OpenAI Go durations, Anthropic RFC 3339 resets, retry-after forms."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrelay.providers import RateLimitInfo, parse_rate_limit_headers
from llmrelay.providers._ratelimit import parse_go_duration

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("1.5", 1.5),
        ("7", 7.0),
        ("250us", 0.00025),
        ("3µs", 3e-6),
        ("10ns", 1e-8),
        ("", None),
        ("abc", None),
        ("1x", None),
        ("s", None),
        ("1s2", None),
        ("-1s", None),
        ("99999999999h", None),
    ],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    got = parse_go_duration(text)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


def test_openai_headers() -> None:
    info = parse_rate_limit_headers(
        httpx.Headers(
            {
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-remaining-requests": "59",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-limit-tokens": "150000",
                "x-ratelimit-remaining-tokens": "149984",
                "x-ratelimit-reset-tokens": "6m0s",
                "retry-after-ms": "1500",
                "retry-after": "9",
            }
        ),
        now=NOW,
    )
    assert info == RateLimitInfo(
        retry_after_s=1.5,
        requests_limit=60,
        requests_remaining=59,
        requests_reset_s=1.0,
        tokens_limit=150000,
        tokens_remaining=149984,
        tokens_reset_s=360.0,
    )


def test_anthropic_headers_resets_from_now() -> None:
    info = parse_rate_limit_headers(
        {
            "Anthropic-RateLimit-Requests-Limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:30Z",
            "anthropic-ratelimit-tokens-limit": "100000",
            "anthropic-ratelimit-tokens-remaining": "90000",
            "anthropic-ratelimit-tokens-reset": "2023-11-14T22:14:20+00:00",
            "anthropic-ratelimit-input-tokens-limit": "80000",
            "anthropic-ratelimit-input-tokens-remaining": "70000",
            "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:21.5Z",
            "anthropic-ratelimit-output-tokens-limit": "16000",
            "anthropic-ratelimit-output-tokens-remaining": "15000",
            "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:00Z",  # in the past
            "retry-after": "3",
        },
        now=NOW,
    )
    assert info.requests_limit == 50 and info.requests_remaining == 49
    assert info.requests_reset_s == pytest.approx(10.0)
    assert info.tokens_reset_s == pytest.approx(60.0) and info.tokens_remaining == 90000
    assert info.input_tokens_limit == 80000 and info.input_tokens_remaining == 70000
    assert info.input_tokens_reset_s == pytest.approx(1.5)
    assert info.output_tokens_limit == 16000 and info.output_tokens_remaining == 15000
    assert info.output_tokens_reset_s == 0.0
    assert info.retry_after_s == 3.0


def test_retry_after_http_date_and_garbage() -> None:
    date = "Tue, 14 Nov 2023 22:13:50 GMT"
    assert parse_rate_limit_headers({"retry-after": date}, now=NOW).retry_after_s == 30.0
    assert (
        parse_rate_limit_headers(
            {"retry-after": "Tue, 14 Nov 2023 22:00:00 GMT"}, now=NOW
        ).retry_after_s
        == 0.0
    )
    for junk in ("soon", "", "-5", "nan", "inf", "1e400", "Mon, 99 Foo"):
        assert parse_rate_limit_headers({"retry-after": junk}, now=NOW).retry_after_s is None
    assert (
        parse_rate_limit_headers({"retry-after-ms": "x", "retry-after": "2"}, now=NOW).retry_after_s
        == 2.0
    )
    bad = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "-1",
            "x-ratelimit-remaining-tokens": "1.5",
            "x-ratelimit-reset-tokens": "forever",
            "anthropic-ratelimit-tokens-reset": "yesterday",
            "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:30",  # no zone
        },
        now=NOW,
    )
    assert bad == RateLimitInfo()


def test_default_now_and_non_mapping() -> None:
    assert parse_rate_limit_headers({"retry-after": "1"}).retry_after_s == 1.0
    assert parse_rate_limit_headers(None) == RateLimitInfo()  # type: ignore[arg-type]
    assert parse_rate_limit_headers({1: "x"}) == RateLimitInfo()  # type: ignore[dict-item]


_names = st.sampled_from(
    [
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-input-tokens-reset",
    ]
)
_values = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\A[0-9.]{0,6}(h|m|s|ms|us|ns)?([0-9.]{0,4}(m|s))?\Z"),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_names, _values, max_size=6), st.floats(allow_nan=True))
def test_parser_never_raises(headers: dict[str, str], now: float) -> None:
    info = parse_rate_limit_headers(headers, now=now)
    for value in (
        info.retry_after_s,
        info.requests_reset_s,
        info.tokens_reset_s,
        info.input_tokens_reset_s,
    ):
        assert value is None or value >= 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_go_duration_never_raises(text: str) -> None:
    got = parse_go_duration(text)
    assert got is None or got >= 0
