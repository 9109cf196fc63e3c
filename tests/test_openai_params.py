"""The OpenAI chat parameters: validated, mapped per provider, refused before sending where a
provider has no equivalent, part of the cache key; ``n`` gives ``ChatResponse.choices``."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from llmrelay import LLMService, ModelSelectionStrategy
from llmrelay._cachekey import cache_key
from llmrelay._types import ChatChunk, TokenLogprob, build_request
from llmrelay.errors import InvalidRequestError
from llmrelay.providers import AnthropicAdapter, OllamaAdapter, OpenAIAdapter, accumulate_chunks
from llmrelay.testing import FakeProvider
from provider_mocks import API_KEY, Server, json_reply, sse, stream_reply
from service_helpers import ConfigFactory, RecordingSleep

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
ALL = {
    "frequency_penalty": 0.5,
    "presence_penalty": -1,
    "logprobs": True,
    "top_logprobs": 3,
    "parallel_tool_calls": False,
    "max_completion_tokens": 50,
    "reasoning_effort": "low",
    "n": 2,
    "logit_bias": {50256: -100, "42": 5},
    "service_tier": "flex",
}


def openai() -> OpenAIAdapter:
    return OpenAIAdapter(deployment="oa", base_url="https://api.test/v1", api_key=API_KEY)


def claude() -> AnthropicAdapter:
    return AnthropicAdapter(deployment="claude", base_url="https://api.test", api_key=API_KEY)


def ollama() -> OllamaAdapter:
    return OllamaAdapter(deployment="local", base_url="http://127.0.0.1:1")


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"frequency_penalty": 2.5}, "params.frequency_penalty"),
        ({"frequency_penalty": "high"}, "params.frequency_penalty"),
        ({"presence_penalty": -3}, "params.presence_penalty"),
        ({"presence_penalty": True}, "params.presence_penalty"),
        ({"logprobs": 1}, "params.logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "params.top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "params.top_logprobs"),
        ({"top_logprobs": 2}, "params.top_logprobs"),  # needs logprobs=True
        ({"logprobs": False, "top_logprobs": 2}, "params.top_logprobs"),
        ({"parallel_tool_calls": "yes"}, "params.parallel_tool_calls"),
        ({"max_completion_tokens": 0}, "params.max_completion_tokens"),
        ({"max_completion_tokens": "100"}, "params.max_completion_tokens"),
        ({"max_completion_tokens": 10, "max_tokens": 20}, "params.max_completion_tokens"),
        ({"reasoning_effort": "hihg"}, "params.reasoning_effort"),
        ({"reasoning_effort": 3}, "params.reasoning_effort"),
        ({"n": 0}, "params.n"),
        ({"n": 129}, "params.n"),
        ({"n": 2.0}, "params.n"),
        ({"logit_bias": [1, 2]}, "params.logit_bias"),
        ({"logit_bias": {"the": 5}}, "params.logit_bias['the']"),
        ({"logit_bias": {1: 101}}, "params.logit_bias[1]"),
        ({"logit_bias": {1: 0.5}}, "params.logit_bias[1]"),
        ({"service_tier": "gold"}, "params.service_tier"),
    ],
)
def test_bad_openai_params_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        build_request("hi", None, params)
    assert info.value.field == field
    assert field.partition("[")[0] in str(info.value)


def test_params_normalised_and_defaults_mean_unset() -> None:
    req = build_request("hi", None, ALL)
    assert req.frequency_penalty == 0.5 and req.presence_penalty == -1.0
    assert req.logprobs is True and req.top_logprobs == 3 and req.parallel_tool_calls is False
    assert req.max_completion_tokens == 50 and req.max_tokens == 50  # one limit, two names
    assert req.reasoning_effort == "low" and req.n == 2 and req.service_tier == "flex"
    assert req.logit_bias == {"50256": -100, "42": 5}
    defaults = build_request(
        "hi",
        None,
        {
            "n": 1,
            "frequency_penalty": 0,
            "presence_penalty": 0.0,
            "logprobs": False,
            "parallel_tool_calls": True,
            "logit_bias": {},
            "service_tier": "auto",
        },
    )
    assert defaults == build_request("hi", None, {})
    same = build_request("hi", None, {"max_tokens": 7, "max_completion_tokens": 7})
    assert same.max_tokens == 7


# ---------------------------------------------------------------- per provider


def test_openai_passes_every_parameter_through() -> None:
    body = openai().chat_body(
        build_request("hi", None, {**ALL, "tools": TOOLS}), "gpt-4o", stream=False
    )
    for key, value in ALL.items():
        expected = {"50256": -100, "42": 5} if key == "logit_bias" else value
        assert body[key] == expected, key
    assert "max_tokens" not in body  # the name the caller used is the one sent
    plain = openai().chat_body(build_request("hi", None, {"max_tokens": 9}), "gpt-4o", stream=False)
    assert plain["max_tokens"] == 9 and "max_completion_tokens" not in plain
    # parallel_tool_calls without tools is a 400 at OpenAI: not sent
    no_tools = openai().chat_body(
        build_request("hi", None, {"parallel_tool_calls": False}), "gpt-4o", stream=False
    )
    assert "parallel_tool_calls" not in no_tools


def test_anthropic_maps_what_has_an_equivalent() -> None:
    req = build_request(
        "hi",
        None,
        {
            "max_completion_tokens": 64,
            "tools": TOOLS,
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "reasoning_effort": "high",
            "service_tier": "default",
        },
    )
    body = claude().chat_body(req, "claude-haiku-4-5", stream=False)
    assert body["max_tokens"] == 64
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["output_config"] == {"effort": "high"}
    assert body["service_tier"] == "standard_only"
    auto = claude().chat_body(
        build_request("hi", None, {"tools": TOOLS, "parallel_tool_calls": False}), "m", stream=False
    )
    assert auto["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    for key in ("frequency_penalty", "presence_penalty", "logprobs", "n", "logit_bias"):
        assert key not in body


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"frequency_penalty": 0.5}, "params.frequency_penalty"),
        ({"presence_penalty": 0.5}, "params.presence_penalty"),
        ({"logprobs": True}, "params.logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "params.logprobs"),
        ({"logit_bias": {1: 5}}, "params.logit_bias"),
        ({"n": 2}, "params.n"),
        ({"reasoning_effort": "minimal"}, "params.reasoning_effort"),
        ({"reasoning_effort": "none"}, "params.reasoning_effort"),
        ({"service_tier": "flex"}, "params.service_tier"),
        ({"service_tier": "priority"}, "params.service_tier"),
    ],
)
def test_anthropic_refuses_what_has_no_equivalent(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        claude().chat_body(build_request("hi", None, params), "claude-haiku-4-5", stream=False)
    assert info.value.field == field
    assert "anthropic" in str(info.value) and "'claude'" in str(info.value)


def test_ollama_maps_what_has_an_equivalent() -> None:
    req = build_request(
        "hi",
        None,
        {
            "frequency_penalty": 0.5,
            "presence_penalty": 1.5,
            "logprobs": True,
            "top_logprobs": 4,
            "max_completion_tokens": 32,
            "reasoning_effort": "medium",
        },
    )
    body = ollama().chat_body(req, "llama3.2", stream=False)
    assert body["options"] == {"frequency_penalty": 0.5, "presence_penalty": 1.5, "num_predict": 32}
    assert body["logprobs"] is True and body["top_logprobs"] == 4 and body["think"] == "medium"
    off = ollama().chat_body(
        build_request("hi", None, {"reasoning_effort": "none"}), "m", stream=False
    )
    assert off["think"] is False
    # extra still wins: the caller's own think setting is sent as given
    own = ollama().chat_body(
        build_request("hi", None, {"reasoning_effort": "low", "extra": {"think": True}}),
        "m",
        stream=False,
    )
    assert own["think"] is True


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n": 3}, "params.n"),
        ({"logit_bias": {1: 5}}, "params.logit_bias"),
        ({"service_tier": "default"}, "params.service_tier"),
        ({"parallel_tool_calls": False, "tools": TOOLS}, "params.parallel_tool_calls"),
        ({"reasoning_effort": "xhigh"}, "params.reasoning_effort"),
    ],
)
def test_ollama_refuses_what_has_no_equivalent(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ollama().chat_body(build_request("hi", None, params), "llama3.2", stream=False)
    assert info.value.field == field
    assert "ollama" in str(info.value) and "'local'" in str(info.value)


def test_n_is_refused_on_a_stream_everywhere() -> None:
    for a in (openai(), claude(), ollama()):
        with pytest.raises(InvalidRequestError, match="stream carries one answer") as info:
            a.chat_body(build_request("hi", None, {"n": 2}), "m", stream=True)
        assert info.value.field == "params.n"


# ---------------------------------------------------------------- replies


def _choice(i: int, text: str, finish: str = "stop") -> dict[str, Any]:
    return {
        "index": i,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish,
        "logprobs": {
            "content": [
                {
                    "token": text,
                    "logprob": -0.25 * (i + 1),
                    "bytes": list(text.encode()),
                    "top_logprobs": [{"token": text, "logprob": -0.25, "bytes": None}],
                }
            ],
            "refusal": None,
        },
    }


async def test_openai_reply_with_n_choices_and_logprobs() -> None:
    reply = {
        "id": "chatcmpl-n",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [_choice(0, "Yes"), _choice(1, "No", "length"), _choice(2, "Maybe")],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }
    server = Server(json_reply(reply))
    async with server.client() as client:
        req = build_request("?", None, {"n": 3, "logprobs": True, "top_logprobs": 1})
        r = await openai().chat(client, req, "gpt-4o")
    assert server.body["n"] == 3 and server.body["top_logprobs"] == 1
    assert [c.text for c in r.choices] == ["Yes", "No", "Maybe"]
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.choices[0].message is r.message and r.choices[0].text == r.text == "Yes"
    assert r.choices[1].finish_reason == "length" and r.finish_reason == "stop"
    assert r.choices[1].message.to_dict() == {"role": "assistant", "content": "No"}
    assert r.logprobs == [
        TokenLogprob(
            token="Yes",
            logprob=-0.25,
            bytes=[89, 101, 115],
            top_logprobs=[TokenLogprob(token="Yes", logprob=-0.25)],
        )
    ]
    assert r.choices[2].logprobs is not None and r.choices[2].logprobs[0].logprob == -0.75
    assert len(r.alternatives) == 2


async def test_streamed_logprobs_are_gathered() -> None:
    def event(text: str, lp: float) -> dict[str, Any]:
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": text},
                    "logprobs": {"content": [{"token": text, "logprob": lp, "top_logprobs": []}]},
                    "finish_reason": None,
                }
            ],
        }

    server = Server(stream_reply([sse(event("Hel", -0.1), event("lo", -0.2), "[DONE]")])[0])
    async with server.client() as client:
        req = build_request("hi", None, {"logprobs": True})
        chunks = [c async for c in openai().stream(client, req, "gpt-4o")]
    r = accumulate_chunks(chunks)
    assert r.text == "Hello"
    assert r.logprobs is not None and [lp.token for lp in r.logprobs] == ["Hel", "lo"]


async def test_ollama_reply_logprobs() -> None:
    reply = {
        "model": "llama3.2",
        "message": {"role": "assistant", "content": "Hi"},
        "done": True,
        "done_reason": "stop",
        "logprobs": [
            {"token": "Hi", "logprob": -0.5, "top_logprobs": [{"token": "Hey", "logprob": -1.5}]}
        ],
    }
    server = Server(json_reply(reply))
    async with server.client() as client:
        req = build_request("hi", None, {"logprobs": True, "top_logprobs": 1})
        r = await ollama().chat(client, req, "llama3.2")
    assert r.logprobs == [
        TokenLogprob(
            token="Hi", logprob=-0.5, top_logprobs=[TokenLogprob(token="Hey", logprob=-1.5)]
        )
    ]
    bad = Server(json_reply({**reply, "logprobs": [{"token": 1}]}))
    async with bad.client() as client:
        with pytest.raises(Exception) as info:
            await ollama().chat(client, req, "llama3.2")
    assert type(info.value).__name__ == "ProviderResponseError"


def test_chunk_logprobs_survive_json() -> None:
    chunk = ChatChunk(text="a", logprobs=[TokenLogprob(token="a", logprob=-1.0)])
    assert msgspec.json.decode(msgspec.json.encode(chunk), type=ChatChunk) == chunk


# ---------------------------------------------------------------- the service


async def test_n_through_the_service(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        r = await svc.achat("pick one", n=3, temperature=0)
        assert len(r.choices) == 3 and r.choices[0].text == r.text
        assert all("pick one" in c.text for c in r.choices)
        assert fakes["openai"].requests[-1].json["n"] == 3
        again = await svc.achat("pick one", n=3, temperature=0)
        assert again.cached and len(again.choices) == 3  # alternatives are cached too
        single = await svc.achat("pick one", temperature=0)
        assert not single.cached and len(single.choices) == 1  # n is in the key


async def test_refused_before_anything_is_sent(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        with pytest.raises(InvalidRequestError) as info:
            await svc.achat("hi", "claude/claude-haiku-4-5", frequency_penalty=0.3)
        assert info.value.field == "params.frequency_penalty"
        with pytest.raises(InvalidRequestError) as info:
            await svc.achat("hi", "local/llama3.2", n=2)
        assert info.value.field == "params.n"
        with pytest.raises(InvalidRequestError) as info:
            [c async for c in svc.astream("hi", n=2)]
        assert info.value.field == "params.n"
        with pytest.raises(InvalidRequestError):
            svc.chat("hi", "claude/claude-haiku-4-5", logit_bias={1: 2})
    assert all(f.request_count == 0 for f in fakes.values())


async def test_a_fallback_that_cannot_honour_a_parameter_is_skipped(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], recording_sleep: RecordingSleep
) -> None:
    fallbacks = {"openai/gpt-4o-mini": ["claude/claude-haiku-4-5", "local/llama3.2"]}
    cfg = make_config(selection=ModelSelectionStrategy(fallbacks=fallbacks))
    async with LLMService(cfg, sleep=recording_sleep) as svc:
        eng = svc._engine
        prepared = eng.prepare("hi", None, 2, None, {"presence_penalty": 1.0}, stream=False)
        assert [c.label for c in prepared.cands] == ["openai/gpt-4o-mini", "local/llama3.2"]
        plain = eng.prepare("hi", None, 2, None, {}, stream=False)
        assert len(plain.cands) == 3
        fakes["openai"].inject("unavailable", times=10)
        r = await svc.achat("hi", presence_penalty=1.0)
        assert r.provider == "local"
        assert fakes["ollama"].requests[-1].json["options"]["presence_penalty"] == 1.0
        assert fakes["anthropic"].request_count == 0


def _key(params: dict[str, Any]) -> bytes:
    return cache_key(build_request("hi", None, params), "openai/gpt-4o", "ns", "scope")


def test_the_parameters_are_in_the_cache_key() -> None:
    base = _key({"temperature": 0})
    keys = {base}
    for name, value in ALL.items():
        if name == "service_tier":
            continue
        extra = {"logprobs": True} if name == "top_logprobs" else {}
        keys.add(_key({"temperature": 0, **extra, name: value}))
    assert len(keys) == len(ALL)  # each parameter (but service_tier) gives its own entry
    # what does not change the answer does not change the key
    assert _key({"temperature": 0, "service_tier": "flex"}) == base
    assert _key({"temperature": 0, "max_completion_tokens": 5}) == _key(
        {"temperature": 0, "max_tokens": 5}
    )
    assert _key({"temperature": 0, "n": 1, "frequency_penalty": 0}) == base


async def test_base64_embeddings_are_decoded(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        floats = await svc.aembed(["a", "b"], "openai/text-embedding-3-small", dimensions=8)
        packed = await svc.aembed(
            ["a", "b"], "openai/text-embedding-3-small", dimensions=8, encoding_format="base64"
        )
        assert fakes["openai"].requests[-1].json["encoding_format"] == "base64"
        assert len(packed.embeddings[0]) == 8
        for x, y in zip(floats.embeddings, packed.embeddings, strict=True):
            assert x == pytest.approx(y, rel=1e-6)


async def test_a_broken_base64_embedding_is_a_typed_error() -> None:
    reply = {"object": "list", "data": [{"index": 0, "embedding": "AAA"}], "model": "m"}
    server = Server(json_reply(reply))
    async with server.client() as client:
        with pytest.raises(Exception) as info:
            await openai().embed(client, ["a"], "m", encoding_format="base64")
    assert type(info.value).__name__ == "ProviderResponseError"


async def test_a_calls_output_limit_replaces_the_views_under_either_name(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        view = svc.with_options(max_tokens=100)
        await view.achat("hi", max_completion_tokens=50)
        sent = fakes["openai"].requests[-1].json
        assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
        other = svc.with_options(max_completion_tokens=100).with_options(max_tokens=20)
        await other.achat("hi")
        assert fakes["openai"].requests[-1].json["max_tokens"] == 20
        with pytest.raises(InvalidRequestError):
            await svc.achat("hi", max_tokens=1, max_completion_tokens=2)
