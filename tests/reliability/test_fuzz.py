"""Fuzzing every input llmrelay parses: only ``llmrelay.errors`` exceptions, never a hang.

Request shapes (messages and params, garbage included) through the whole pipeline,
config dicts, each adapter's reply parser, its stream decoder (SSE and NDJSON, split at
random points) and the rate-limit header parser. ``make soak`` raises the example counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmrelay import LLMService, LLMServiceConfig, ProviderConfig
from llmrelay._types import ChatChunk, ChatResponse, EmbeddingResponse, build_request
from llmrelay.errors import LLMRelayError
from llmrelay.providers import (
    AnthropicAdapter,
    OllamaAdapter,
    OpenAIAdapter,
    ProviderAdapter,
    accumulate_chunks,
    parse_rate_limit_headers,
)
from soak_helpers import SOAK, report

settings.register_profile(
    "reliability-ci",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "reliability-soak",
    max_examples=3_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILE = settings.get_profile("reliability-soak" if SOAK else "reliability-ci")
STEP_S = 5.0  # no single example may take longer than this (a hang would)

# ---- strategies ----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=8),
)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=10), inner, max_size=4),
    ),
    max_leaves=12,
)
ROLES = ["system", "user", "assistant", "tool", "developer", "robot", ""]
message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.one_of(st.sampled_from(ROLES), json_like),
        "content": st.one_of(
            st.text(max_size=40),
            st.lists(
                st.one_of(
                    st.fixed_dictionaries(
                        {"type": st.sampled_from(["text", "image_url", "x"])},
                        optional={
                            "text": st.one_of(st.text(max_size=10), json_like),
                            "image_url": st.one_of(
                                st.fixed_dictionaries({"url": st.text(max_size=10)}), json_like
                            ),
                        },
                    ),
                    json_like,
                ),
                max_size=3,
            ),
            json_like,
        ),
        "name": json_like,
        "tool_calls": json_like,
        "tool_call_id": json_like,
    },
)
messages = st.one_of(st.text(max_size=40), st.lists(message, max_size=4), json_like)
PARAM_NAMES = [
    "temperature",
    "max_tokens",
    "top_p",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
    "user",
    "metadata",
    "extra",
    "bogus",
]
params = st.dictionaries(st.sampled_from(PARAM_NAMES), json_like, max_size=4)


def _mock_reply(request: httpx.Request) -> httpx.Response:
    """A valid reply in the protocol the request was sent in."""
    path = request.url.path
    if path.endswith("/chat/completions"):
        body: Any = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    else:
        return httpx.Response(404)
    return httpx.Response(
        200, content=msgspec.json.encode(body), headers={"content-type": "application/json"}
    )


@pytest.fixture
def mock_service() -> Iterator[LLMService]:
    cfg = LLMServiceConfig(
        providers=[
            ProviderConfig(
                name="openai",
                base_url="http://127.0.0.1:9/v1",
                api_key="sk-fuzz",
                models=["gpt-4o-mini"],
            )
        ],
        default_model="openai/gpt-4o-mini",
    )
    with LLMService(cfg, transport=lambda _p: httpx.MockTransport(_mock_reply)) as svc:
        yield svc


def test_fuzz_request_shapes_through_the_pipeline(mock_service: LLMService) -> None:
    svc = mock_service
    seen: dict[str, int] = {}

    @PROFILE
    @given(messages=messages, params=params, cache=st.booleans())
    def check(messages: Any, params: dict[str, Any], cache: bool) -> None:
        try:
            svc.chat(messages, timeout=STEP_S, cache=cache, **params)
            seen["ok"] = seen.get("ok", 0) + 1
        except LLMRelayError as e:
            seen[type(e).__name__] = seen.get(type(e).__name__, 0) + 1

    check()
    assert seen.get("ok", 0) > 0 and len(seen) > 1, seen  # both answers and typed refusals
    report("fuzz_pipeline", seen)


@PROFILE
@given(messages=messages, params=params, model=st.one_of(st.none(), st.text(max_size=12)))
def test_fuzz_build_request(messages: Any, params: dict[str, Any], model: Any) -> None:
    with contextlib.suppress(LLMRelayError):
        build_request(messages, model, params)


config_dicts = st.fixed_dictionaries(
    {},
    optional={
        "providers": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.one_of(st.sampled_from(["a", "b", "a/b", ""]), json_like)},
                    optional={
                        "kind": st.one_of(st.sampled_from(["openai", "anthropic", "x"]), json_like),
                        "base_url": st.one_of(
                            st.sampled_from(["http://127.0.0.1:1", "ftp://x", "nope"]), json_like
                        ),
                        "api_key": json_like,
                        "models": json_like,
                        "rate_limit": st.dictionaries(
                            st.sampled_from(["requests_per_minute", "burst", "x"]), json_like
                        ),
                        "max_concurrency": json_like,
                        "weight": json_like,
                        "timeouts": st.dictionaries(
                            st.sampled_from(["read_s", "total_s", "bogus"]), json_like
                        ),
                    },
                ),
                max_size=3,
            ),
            json_like,
        ),
        "default_model": json_like,
        "orchestrator": st.dictionaries(
            st.sampled_from(["max_concurrency", "max_retries", "backoff_initial_s", "y"]),
            json_like,
        ),
        "cache": st.dictionaries(
            st.sampled_from(["enabled", "memory_max_entries", "eviction", "ttl_s"]), json_like
        ),
        "dedup": st.dictionaries(st.sampled_from(["enabled", "window_s"]), json_like),
        "selection": st.dictionaries(
            st.sampled_from(["strategy", "fallbacks", "required_capabilities"]), json_like
        ),
        "circuit_breaker": st.dictionaries(
            st.sampled_from(["failure_rate_threshold", "window_size", "minimum_calls"]), json_like
        ),
        "namespace": json_like,
        "junk": json_like,
    },
)


@PROFILE
@given(data=st.one_of(config_dicts, json_like))
def test_fuzz_config_from_dict(data: Any) -> None:
    with contextlib.suppress(LLMRelayError):
        LLMServiceConfig.from_dict(data)


# ---- provider payloads ---------------------------------------------------------------------

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "ollama": OllamaAdapter,
}


def _adapter(kind: str) -> ProviderAdapter:
    return ADAPTERS[kind](deployment="fuzz", base_url="http://127.0.0.1:9", api_key="sk-fuzz")


def _shaped(kind: str) -> st.SearchStrategy[Any]:
    """Replies shaped like the protocol's, with any field replaced by garbage."""
    if kind == "openai":
        return st.fixed_dictionaries(
            {},
            optional={
                "id": json_like,
                "model": json_like,
                "choices": st.one_of(
                    st.lists(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "message": st.one_of(
                                    st.fixed_dictionaries(
                                        {},
                                        optional={
                                            "content": json_like,
                                            "tool_calls": json_like,
                                            "role": json_like,
                                        },
                                    ),
                                    json_like,
                                ),
                                "delta": json_like,
                                "finish_reason": json_like,
                            },
                        ),
                        max_size=2,
                    ),
                    json_like,
                ),
                "usage": json_like,
                "error": json_like,
            },
        )
    if kind == "anthropic":
        return st.fixed_dictionaries(
            {},
            optional={
                "type": st.one_of(
                    st.sampled_from(
                        [
                            "message",
                            "message_start",
                            "content_block_start",
                            "content_block_delta",
                            "message_delta",
                            "message_stop",
                            "error",
                            "ping",
                        ]
                    ),
                    json_like,
                ),
                "message": json_like,
                "content": st.one_of(
                    st.lists(
                        st.fixed_dictionaries(
                            {"type": st.sampled_from(["text", "tool_use", "thinking"])},
                            optional={"text": json_like, "input": json_like, "name": json_like},
                        ),
                        max_size=2,
                    ),
                    json_like,
                ),
                "index": json_like,
                "delta": json_like,
                "content_block": json_like,
                "usage": json_like,
                "stop_reason": json_like,
                "error": json_like,
            },
        )
    return st.fixed_dictionaries(
        {},
        optional={
            "model": json_like,
            "message": st.one_of(
                st.fixed_dictionaries({}, optional={"content": json_like, "tool_calls": json_like}),
                json_like,
            ),
            "done": json_like,
            "done_reason": json_like,
            "prompt_eval_count": json_like,
            "eval_count": json_like,
            "error": json_like,
        },
    )


def _encode(obj: Any) -> bytes:
    try:
        return msgspec.json.encode(obj)
    except (TypeError, msgspec.EncodeError, OverflowError, ValueError):
        return repr(obj).encode()


def _body(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(_shaped(kind).map(_encode), json_like.map(_encode), st.binary(max_size=64))


CONTENT_TYPES = ["application/json", "text/html", "", "application/json; charset=utf-8"]


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_fuzz_parse_chat_response(kind: str) -> None:
    adapter = _adapter(kind)

    @PROFILE
    @given(body=_body(kind), ctype=st.sampled_from(CONTENT_TYPES))
    def check(body: bytes, ctype: str) -> None:
        resp = httpx.Response(200, content=body, headers={"content-type": ctype})
        try:
            parsed = adapter.parse_chat_response(resp, "m")
        except LLMRelayError:
            pass
        else:
            _check_types(parsed)
        err = adapter.error_from_response(
            httpx.Response(400, content=body, headers={"content-type": ctype}), "m", body
        )
        assert isinstance(err, LLMRelayError)

    check()


def _embed_shaped(kind: str) -> st.SearchStrategy[Any]:
    """Embedding replies shaped like the protocol's, any field replaced by garbage."""
    vector = st.one_of(st.lists(st.floats(allow_nan=False, width=32), max_size=4), json_like)
    if kind == "openai":
        row = st.fixed_dictionaries(
            {}, optional={"embedding": st.one_of(vector, st.text(max_size=12)), "index": json_like}
        )
        return st.fixed_dictionaries(
            {},
            optional={
                "data": st.one_of(st.lists(row, max_size=3), json_like),
                "model": json_like,
                "usage": json_like,
            },
        )
    return st.fixed_dictionaries(
        {},
        optional={
            "embeddings": st.one_of(st.lists(vector, max_size=3), json_like),
            "model": json_like,
            "prompt_eval_count": json_like,
        },
    )


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_fuzz_decode_embed(kind: str) -> None:
    """The embeddings decoder on raw bytes: a typed reply or a typed error, never more."""
    adapter = _adapter(kind)
    body_st = st.one_of(
        _embed_shaped(kind).map(_encode), json_like.map(_encode), st.binary(max_size=64)
    )

    @PROFILE
    @given(body=body_st, ctype=st.sampled_from(CONTENT_TYPES))
    def check(body: bytes, ctype: str) -> None:
        headers = [(b"content-type", ctype.encode())]
        try:
            parsed = adapter.decode_embed(200, headers, body, "m")
        except LLMRelayError:
            pass
        else:
            msgspec.json.decode(msgspec.json.encode(parsed), type=EmbeddingResponse)

    check()


def _stream_bytes(kind: str) -> st.SearchStrategy[list[bytes]]:
    """A stream's bytes: protocol-shaped events, garbage lines and raw bytes, split anywhere."""
    shaped = _shaped(kind).map(_encode)
    if kind == "ollama":
        event = st.one_of(shaped.map(lambda b: b + b"\n"), st.binary(max_size=20))
    else:
        named = st.tuples(
            st.sampled_from([None, "message_start", "content_block_delta", "error", "ping"]),
            st.one_of(shaped, st.just(b"[DONE]"), st.binary(max_size=20)),
        ).map(lambda t: (b"event: " + t[0].encode() + b"\n" if t[0] else b"") + b"data: " + t[1])
        event = st.one_of(named.map(lambda b: b + b"\n\n"), st.binary(max_size=20))
    return st.tuples(st.lists(event, max_size=8), st.lists(st.integers(0, 400), max_size=6)).map(
        _split
    )


def _split(t: tuple[list[bytes], list[int]]) -> list[bytes]:
    data = b"".join(t[0])
    cuts = sorted({c % (len(data) + 1) for c in t[1]} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(cuts) if b > a]


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> Any:
        for c in self.chunks:
            yield c


async def _consume(adapter: ProviderAdapter, chunks: list[bytes], ctype: str) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Chunks(chunks), headers={"content-type": ctype})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        req = build_request("hi", None, {})
        agen = adapter.stream(client, req, "m", stream_idle_s=STEP_S)
        chunks: list[ChatChunk] = []
        try:
            async with asyncio.timeout(STEP_S):
                async for c in agen:
                    chunks.append(c)
        except LLMRelayError:
            return
        finally:
            await agen.aclose()
        # what reaches the caller is well typed, and accumulates like the engine does it
        for c in chunks:
            _check_types(c)
        with contextlib.suppress(LLMRelayError):
            _check_types(accumulate_chunks(chunks))


def _check_types(obj: ChatChunk | ChatResponse) -> None:
    """Round-trip through msgspec's validation: every field has its declared type."""
    msgspec.json.decode(msgspec.json.encode(obj), type=type(obj))


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_fuzz_stream_decoders(kind: str) -> None:
    adapter = _adapter(kind)
    ctype = "application/x-ndjson" if kind == "ollama" else "text/event-stream"

    @PROFILE
    @given(chunks=_stream_bytes(kind))
    # found by the soak profile: ``choices`` an object, not a list (was a bare KeyError)
    @example(chunks=[b'data: {"id":null,"model":null,"usage":null,"choices":{"":null}}\n\n'])
    @example(chunks=[b'data: {"choices":[],"type":"message_start","message":{"content":[]}}\n\n'])
    @example(chunks=[b'{"done":true,"model":null,"eval_count":[null]}\n'])  # was a TypeError
    def check(chunks: list[bytes]) -> None:
        asyncio.run(_consume(adapter, chunks, ctype))

    check()


header_names = st.sampled_from(
    [
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-limit",
        "x-other",
    ]
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    st.sampled_from(["1", "0.5", "-3", "1e308", "inf", "nan", "6m0s", "1h2m3.5s", "20ms"]),
    st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "2025-01-01T00:00:00Z", "Thu, 99 Foo"]),
)


@PROFILE
@given(headers=st.dictionaries(header_names, header_values, max_size=6))
def test_fuzz_rate_limit_headers(headers: dict[str, str]) -> None:
    try:
        info = parse_rate_limit_headers(httpx.Headers(headers))
    except LLMRelayError:
        return
    for name in ("retry_after_s", "requests_reset_s", "tokens_reset_s"):
        v = getattr(info, name, None)
        assert v is None or v == v, (name, v)  # never NaN
