"""Bad input is an InvalidRequestError naming its field, raised before anything is sent:
lone surrogates, objects JSON cannot hold, bad batches, bad cache controls, unknown
embedding parameters, model names that name no deployment."""

from __future__ import annotations

from typing import Any

import pytest

from llmrelay import CacheControl, LLMService, LLMServiceConfig, ProviderConfig
from llmrelay._types import build_request
from llmrelay.errors import InvalidRequestError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory

BAD = "caf\udce9"  # what bytes.decode("utf-8", "surrogateescape") leaves of a latin-1 byte
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def nothing_sent(fakes: dict[str, FakeProvider]) -> bool:
    return all(f.request_count == 0 for f in fakes.values())


# ---------------------------------------------------------------- what cannot be sent


@pytest.mark.parametrize(
    ("messages", "model", "params", "field"),
    [
        (BAD, None, {}, "messages[0].content"),
        (
            [{"role": "user", "content": "ok"}, {"role": "user", "content": BAD}],
            None,
            {},
            "messages[1].content",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": BAD}]}],
            None,
            {},
            "messages[0].content[0].text",
        ),
        ("hi", f"gpt-{BAD}", {}, "model"),
        ("hi", None, {"stop": ["ok", BAD]}, "params.stop[1]"),
        ("hi", None, {"user": BAD}, "params.user"),
        ("hi", None, {"extra": {"note": BAD}}, "params.extra.note"),
        ("hi", None, {"extra": {BAD: 1}}, f"params.extra[{BAD!r}]"),
        ("hi", None, {"metadata": {"k": BAD}}, "params.metadata.k"),
        (
            "hi",
            None,
            {"tools": [{**TOOL, "function": {"name": "f", "description": BAD}}]},
            "params.tools[0].function.description",
        ),
        # objects JSON has no form for
        ("hi", None, {"extra": {"when": object()}}, "params.extra.when"),
        ("hi", None, {"extra": {"deep": [1, {"x": 1j}]}}, "params.extra.deep[1].x"),
        (
            "hi",
            None,
            {"tools": [{**TOOL, "function": {"name": "f", "parameters": {"default": object()}}}]},
            "params.tools[0].function.parameters.default",
        ),
        ("hi", None, {"extra": {"k": {(1, 2): "tuple key"}}}, "params.extra.k[(1, 2)]"),
    ],
)
def test_unencodable_values_name_their_path(
    messages: Any, model: str | None, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        build_request(messages, model, params)
    assert info.value.field == field
    assert not isinstance(info.value.__cause__, (UnicodeEncodeError, TypeError))


def test_tool_call_arguments_and_names_are_checked_too() -> None:
    history = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"q": BAD}}}],
        },
        {"role": "tool", "content": "done", "tool_call_id": "c1"},
    ]
    with pytest.raises(InvalidRequestError) as info:
        build_request(history, None, {})
    assert info.value.field == "messages[1].tool_calls[0].arguments.q"


def test_fine_unicode_passes() -> None:
    req = build_request("naïve café 😀 日本", None, {"stop": ["→"], "extra": {"k": "ü"}})
    assert req.messages[0].content == "naïve café 😀 日本"


async def test_nothing_is_sent_for_a_surrogate(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        for model in ("openai/gpt-4o-mini", "claude/claude-haiku-4-5", "local/llama3.2"):
            with pytest.raises(InvalidRequestError) as info:
                await svc.achat(BAD, model)
            assert info.value.field == "messages[0].content"
            with pytest.raises(InvalidRequestError):
                [c async for c in svc.astream("hi", model, stop=BAD)]
        with pytest.raises(InvalidRequestError) as info:
            svc.chat("hi", temperature=0, extra={"x": object()})
        assert info.value.field == "params.extra.x"
        with pytest.raises(InvalidRequestError) as info:
            await svc.aembed(["fine", BAD], "openai/text-embedding-3-small")
        assert info.value.field == "inputs[1]"
        with pytest.raises(InvalidRequestError) as info:
            svc.embed("x", "openai/text-embedding-3-small", user=BAD)
        assert info.value.field == "params.user"
    assert nothing_sent(fakes)


# ---------------------------------------------------------------- batches


async def test_bad_batches(make_config: ConfigFactory, fakes: dict[str, FakeProvider]) -> None:
    async with LLMService(make_config()) as svc:
        for requests, field in (
            (None, "requests"),
            (42, "requests"),
            ("hey", "requests"),
            (b"hey", "requests"),
            ({"messages": "hi"}, "requests"),
        ):
            with pytest.raises(InvalidRequestError) as info:
                await svc.abatch(requests)
            assert info.value.field == field, requests
        for concurrency in ("2", 0, -1, 1.5, True):
            with pytest.raises(InvalidRequestError) as info:
                await svc.abatch(["a"], concurrency=concurrency)  # type: ignore[arg-type]
            assert info.value.field == "concurrency"
        with pytest.raises(InvalidRequestError):
            svc.batch("hey")
        assert nothing_sent(fakes)
        # a tuple or a generator is a list of requests
        out = await svc.abatch(p for p in ("batch x", "batch y"))  # type: ignore[arg-type]
        texts = [getattr(r, "text", r) for r in out]
        assert "batch x" in texts[0] and "batch y" in texts[1]
        assert fakes["openai"].request_count == 2


# ---------------------------------------------------------------- cache controls


def test_cache_control_is_checked_when_built() -> None:
    for kw, field in (
        ({"ttl_s": -1}, "cache.ttl_s"),
        ({"ttl_s": 0}, "cache.ttl_s"),
        ({"ttl_s": float("inf")}, "cache.ttl_s"),
        ({"ttl_s": "60"}, "cache.ttl_s"),
        ({"skip": "yes"}, "cache.skip"),
        ({"namespace": ""}, "cache.namespace"),
        ({"namespace": BAD}, "cache.namespace"),
    ):
        with pytest.raises(InvalidRequestError) as info:
            CacheControl(**kw)
        assert info.value.field == field
    assert CacheControl(ttl_s=5).ttl_s == 5


async def test_bad_cache_dicts_fail_before_the_provider_is_paid(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        for cache in ({"ttl_s": -1}, {"skp": True}, {"ttl_s": 0}, {"namespace": 3}):
            with pytest.raises(InvalidRequestError) as info:
                await svc.achat("hi", temperature=0, cache=cache)
            assert info.value.field is not None and info.value.field.startswith("cache"), cache
            with pytest.raises(InvalidRequestError):
                svc.chat("hi", temperature=0, cache=cache)
        assert nothing_sent(fakes)
        r = await svc.achat("hi", temperature=0, cache={"ttl_s": 30, "namespace": "a"})
        assert not r.cached and fakes["openai"].request_count == 1


# ---------------------------------------------------------------- embeddings


async def test_unknown_embedding_parameters_are_refused(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        with pytest.raises(InvalidRequestError) as info:
            await svc.aembed("x", "openai/text-embedding-3-small", bogus=1)  # type: ignore[call-arg]
        assert info.value.field == "params.bogus"
        for kw, field in (
            ({"dimensions": 0}, "params.dimensions"),
            ({"dimensions": "8"}, "params.dimensions"),
            ({"encoding_format": "int8"}, "params.encoding_format"),
            ({"user": 5}, "params.user"),
            ({"extra": {1: 2}}, "params.extra"),
        ):
            with pytest.raises(InvalidRequestError) as info:
                svc.embed("x", "openai/text-embedding-3-small", **kw)
            assert info.value.field == field
        with pytest.raises(InvalidRequestError) as info:
            await svc.aembed([], "openai/text-embedding-3-small")
        assert info.value.field == "inputs"
        assert nothing_sent(fakes)
        await svc.aembed("x", "openai/text-embedding-3-small", dimensions=4, user="u")
        sent = fakes["openai"].requests[-1].json
        assert sent["dimensions"] == 4 and sent["user"] == "u" and "bogus" not in sent
        await svc.aembed("x", "local/nomic-embed-text", dimensions=4, extra={"truncate": True})
        sent = fakes["ollama"].requests[-1].json
        assert sent["dimensions"] == 4 and sent["truncate"] is True and "user" not in sent


# ---------------------------------------------------------------- model names


async def test_a_slashed_name_of_no_deployment_is_refused() -> None:
    with FakeProvider("openai").run_in_thread() as fake:
        one = LLMServiceConfig(
            providers=[
                ProviderConfig(
                    name="openai", base_url=fake.base_url, api_key="k", models=["gpt-4o-mini"]
                )
            ],
            default_model="openai/gpt-4o-mini",
        )
        async with LLMService(one) as svc:
            for model in ("a/b/c", "nope/none", "/x"):
                with pytest.raises(InvalidRequestError) as info:
                    await svc.achat("hi", model)
                assert info.value.field == "model"
                assert repr(model) in str(info.value) and "'openai'" in str(info.value)
            assert fake.request_count == 0
            # a deployment's name in front still works, as does a bare name
            r = await svc.achat("hi", "openai/meta-llama/Llama-3-8b")
            assert fake.requests[-1].json["model"] == "meta-llama/Llama-3-8b" and r.text
            await svc.achat("hi", "gpt-4o")
            assert fake.requests[-1].json["model"] == "gpt-4o"
        listed = LLMServiceConfig(
            providers=[
                ProviderConfig(
                    name="vllm",
                    kind="openai",
                    base_url=fake.base_url,
                    api_key="k",
                    models=["meta-llama/Llama-3-8b"],
                )
            ],
        )
        async with LLMService(listed) as svc:
            await svc.achat("hi", "meta-llama/Llama-3-8b")  # listed: fine without a prefix
            assert fake.requests[-1].json["model"] == "meta-llama/Llama-3-8b"


def test_message_objects_of_the_wrong_shape_are_refused() -> None:
    from llmrelay import Message

    for content in (5, ["text"], {"type": "text"}):
        with pytest.raises(InvalidRequestError) as info:
            build_request([Message(role="user", content=content)], None, {})  # type: ignore[arg-type]
        assert info.value.field == "messages[0].content"


async def test_a_view_with_a_bad_default_fails_when_made(make_config: ConfigFactory) -> None:
    async with LLMService(make_config()) as svc:
        with pytest.raises(InvalidRequestError) as info:
            svc.with_options(temprature=0)  # type: ignore[call-arg]
        assert info.value.field == "params.temprature"
        with pytest.raises(InvalidRequestError) as info:
            svc.with_options(n=0)
        assert info.value.field == "params.n"


async def test_a_views_chat_defaults_stay_out_of_embeddings(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        view = svc.with_options(temperature=0, max_tokens=5)
        await view.aembed("x", "openai/text-embedding-3-small")
        sent = fakes["openai"].requests[-1].json
        assert "temperature" not in sent and "max_tokens" not in sent
