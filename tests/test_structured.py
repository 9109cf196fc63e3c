"""Structured output (``response_format=Model``) end to end against the fake providers."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from llmrelay import CacheControl, ChatChunk, LLMService, ModelSelectionStrategy
from llmrelay.errors import InvalidRequestError, StructuredOutputError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory

try:
    import pydantic
except ImportError:  # pydantic is optional: its tests skip, the rest run
    pydantic = None

needs_pydantic = pytest.mark.skipif(pydantic is None, reason="pydantic is not installed")


class Person(msgspec.Struct):
    name: str
    age: int


if pydantic is not None:

    class PersonModel(pydantic.BaseModel):
        name: str
        age: int


SCHEMA: dict[str, Any] = {
    "title": "Person",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}
GOOD = '{"name": "Ada", "age": 36}'
BAD = '{"name": "Ada", "age": "thirty-six"}'
MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "claude/claude-haiku-4-5",
    "ollama": "local/llama3.2",
}


def last_body(fake: FakeProvider) -> dict[str, Any]:
    body = fake.requests[-1].json
    assert isinstance(body, dict)
    return body


# ---- per provider: the native mechanism -------------------------------------------------------


async def test_openai_native_json_schema_strict(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script(GOOD)
    async with LLMService(make_config()) as svc:
        r = await svc.achat("who?", response_format=Person)  # type: ignore[arg-type]
    assert r.parsed == Person(name="Ada", age=36) and r.text == GOOD
    fmt = last_body(fakes["openai"])["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Person" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert "$ref" not in schema  # the root is inlined (strict mode wants an object there)


async def test_anthropic_forced_tool(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """Regression: a response_format call on Anthropic was refused with
    ``no candidate supports ['json_mode']``."""
    fakes["anthropic"].script(
        tool_calls=[{"name": "Person", "arguments": {"name": "Ada", "age": 3}}]
    )
    async with LLMService(make_config()) as svc:
        r = await svc.achat(
            "who?",
            MODELS["anthropic"],
            response_format=Person,  # type: ignore[arg-type]
        )
    assert r.parsed == Person(name="Ada", age=3)
    assert msgspec.json.decode(r.text) == {"name": "Ada", "age": 3}
    assert r.tool_calls == [] and r.finish_reason == "stop"
    body = last_body(fakes["anthropic"])
    assert body["tool_choice"] == {"type": "tool", "name": "Person"}
    assert body["tools"][0]["input_schema"]["properties"]["age"] == {"type": "integer"}


async def test_ollama_native_format(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["ollama"].script(GOOD)
    async with LLMService(make_config()) as svc:
        r = await svc.achat("who?", "local/llama3.2", response_format=SCHEMA)  # type: ignore[arg-type]
    assert r.parsed == {"name": "Ada", "age": 36}
    fmt = last_body(fakes["ollama"])["format"]
    assert fmt["type"] == "object" and fmt["required"] == ["name", "age"]


# ---- fallbacks: JSON mode, then the instruction -----------------------------------------------


@needs_pydantic
async def test_json_mode_fallback_for_a_model_without_json_schema(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """gpt-3.5-turbo has JSON mode but no structured outputs: json_object plus the schema
    as an instruction."""
    fakes["openai"].script(GOOD)
    cfg = make_config(provider_kw={"openai": {"models": ["gpt-3.5-turbo"]}})
    async with LLMService(cfg) as svc:
        r = await svc.achat(
            "who?",
            "openai/gpt-3.5-turbo",
            response_format=PersonModel,  # type: ignore[arg-type]
        )
    assert isinstance(r.parsed, PersonModel) and r.parsed.age == 36
    body = last_body(fakes["openai"])
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system"
    assert "JSON schema" in body["messages"][0]["content"]
    assert '"age"' in body["messages"][0]["content"]


async def test_prompt_fallback_parses_fenced_json(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """A model with neither (here: an OpenAI-compatible kind registered without them)
    gets the instruction alone; a reply in a code fence still parses."""
    from llmrelay.providers import ModelInfo, get_provider, register_provider

    reg = get_provider("openai_compatible")
    plain = msgspec.structs.replace(
        reg,
        kind="plain_test",
        models={"m": ModelInfo(json_schema=False, json_mode=False)},
        adapter_factory=_plain_adapter,
    )
    register_provider(plain, replace=True)
    fakes["openai"].script("Here you go:\n```json\n" + GOOD + "\n```")
    cfg = make_config(
        provider_kw={"openai": {"kind": "plain_test", "models": ["m"]}},
        default_model="openai/m",
    )
    async with LLMService(cfg) as svc:
        r = await svc.achat("who?", response_format=Person)  # type: ignore[arg-type]
    assert r.parsed == Person(name="Ada", age=36)
    body = last_body(fakes["openai"])
    assert "response_format" not in body
    assert "JSON schema" in body["messages"][0]["content"]


def _plain_adapter(**kw: Any) -> Any:
    from llmrelay.providers import OpenAIAdapter

    class PlainAdapter(OpenAIAdapter):
        kind = "plain_test"

    return PlainAdapter(**kw)


# ---- repair -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
async def test_invalid_then_repaired(
    provider: str, make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes[provider]
    if provider == "anthropic":
        fake.script(tool_calls=[{"name": "Person", "arguments": {"name": "Ada"}}])
        fake.script(tool_calls=[{"name": "Person", "arguments": {"name": "Ada", "age": 36}}])
    else:
        fake.script(BAD)
        fake.script(GOOD)
    async with LLMService(make_config()) as svc:
        r = await svc.achat("who?", MODELS[provider], response_format=Person)  # type: ignore[arg-type]
        snap = svc.metrics.snapshot()
    assert r.parsed == Person(name="Ada", age=36)
    assert r.attempts == 2 and fake.request_count == 2
    repair = last_body(fake)["messages"]
    assert repair[-1]["role"] == "user" and "does not validate" in str(repair[-1]["content"])
    assert "age" in str(repair[-1]["content"])  # the validation error is sent back
    assert repair[-2]["role"] == "assistant"
    assert sum(v for k, v in _counters(snap).items() if k.endswith("structured_repairs")) == 1


def _counters(snap: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for series in snap.to_dict()["series"] if hasattr(snap, "to_dict") else []:
        for name, value in series.get("counters", {}).items():
            out[f"{series.get('deployment')}.{name}"] = value
    return out


async def test_fails_twice_raises_typed_error(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script(BAD, times=2)
    async with LLMService(make_config()) as svc:
        with pytest.raises(StructuredOutputError) as info:
            await svc.achat("who?", response_format=Person)  # type: ignore[arg-type]
    err = info.value
    assert err.raw == BAD and "age" in err.validation_error
    assert isinstance(err, ValueError) and fakes["openai"].request_count == 2


async def test_schema_dict_validation_error_is_precise(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script('{"name": "Ada", "age": -1}', times=2)
    async with LLMService(make_config()) as svc:
        with pytest.raises(StructuredOutputError) as info:
            await svc.achat("who?", response_format=SCHEMA)  # type: ignore[arg-type]
    assert "$.age" in info.value.validation_error and "minimum" in info.value.validation_error


def test_sync_twin_parses_and_repairs(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script("not json at all")
    fakes["openai"].script(GOOD, times=2)
    with LLMService(make_config()) as svc:
        r = svc.chat("who?", response_format=Person)  # type: ignore[arg-type]
        assert r.parsed == Person(name="Ada", age=36) and r.attempts == 2
        chunks = list(svc.stream("who?", response_format=Person))  # type: ignore[arg-type]
    assert chunks[-1].parsed == Person(name="Ada", age=36)
    assert fakes["openai"].request_count == 3


# ---- cache ------------------------------------------------------------------------------------


@needs_pydantic
async def test_cached_reply_keeps_parsed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script(GOOD, times=2)
    async with LLMService(make_config()) as svc:
        a = await svc.achat("who?", temperature=0, response_format=Person)  # type: ignore[arg-type]
        b = await svc.achat("who?", temperature=0, response_format=Person)  # type: ignore[arg-type]
        # pydantic's schema differs from msgspec's (titles): its own entry
        c = await svc.achat("who?", temperature=0, response_format=PersonModel)  # type: ignore[arg-type]
        d = svc.chat("who?", temperature=0, response_format=PersonModel)  # type: ignore[arg-type]
    assert not a.cached and b.cached and b.parsed == Person(name="Ada", age=36)
    assert b.parsed is not a.parsed  # each caller gets its own instance
    assert not c.cached and d.cached and isinstance(d.parsed, PersonModel)
    assert fakes["openai"].request_count == 2
    assert b.to_dict()["parsed"] == {"name": "Ada", "age": 36}
    assert d.to_dict()["parsed"] == {"name": "Ada", "age": 36}


async def test_repaired_reply_is_cached_under_the_original_call(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script(BAD)
    fakes["openai"].script(GOOD)
    async with LLMService(make_config()) as svc:
        await svc.achat("who?", temperature=0, response_format=Person)  # type: ignore[arg-type]
        again = await svc.achat("who?", temperature=0, response_format=Person)  # type: ignore[arg-type]
    assert again.cached and again.parsed == Person(name="Ada", age=36)
    assert fakes["openai"].request_count == 2  # the invalid first reply was never stored


# ---- streams ----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
async def test_stream_parsed_on_final_chunk(
    provider: str, make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes[provider]
    if provider == "anthropic":
        fake.script(tool_calls=[{"name": "Person", "arguments": {"name": "Ada", "age": 36}}])
    else:
        fake.script(GOOD)
    model = MODELS.get(provider, "local/llama3.2")
    async with LLMService(make_config()) as svc:
        chunks: list[ChatChunk] = [
            c
            async for c in svc.astream("who?", model, response_format=Person)  # type: ignore[arg-type]
        ]
    text = "".join(c.text for c in chunks)
    assert msgspec.json.decode(text) == {"name": "Ada", "age": 36}
    assert len([c for c in chunks if c.text]) >= 1 and all(not c.tool_calls for c in chunks)
    assert chunks[-1].parsed == Person(name="Ada", age=36)
    assert all(c.parsed is None for c in chunks[:-1])
    assert chunks[-1].usage is not None


async def test_stream_that_does_not_validate_ends_with_the_error(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script(BAD)
    async with LLMService(make_config()) as svc:
        seen: list[ChatChunk] = []
        with pytest.raises(StructuredOutputError) as info:
            async for c in svc.astream("who?", response_format=Person):  # type: ignore[arg-type]
                seen.append(c)
    assert "".join(c.text for c in seen) == BAD and info.value.raw == BAD
    assert fakes["openai"].request_count == 1  # a stream is not repaired


async def test_stream_replayed_from_cache_keeps_parsed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script(GOOD)
    async with LLMService(make_config()) as svc:
        await svc.achat("who?", temperature=0, response_format=Person)  # type: ignore[arg-type]
        chunks = [
            c
            async for c in svc.astream(
                "who?",
                temperature=0,
                response_format=Person,  # type: ignore[arg-type]
            )
        ]
    assert chunks[-1].parsed == Person(name="Ada", age=36)
    assert fakes["openai"].request_count == 1


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "field"),
    [
        (int, "params.response_format"),
        ({"type": "yaml"}, "params.response_format"),
        ({"foo": 1}, "params.response_format"),
        ({"type": "json_schema", "json_schema": {"schema": 3}}, "params.response_format"),
        ("Person", "params.response_format"),
    ],
)
async def test_bad_response_format_is_refused_before_sending(
    fmt: Any, field: str, make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        with pytest.raises(InvalidRequestError) as info:
            await svc.achat("who?", response_format=fmt)
    assert info.value.field is not None and info.value.field.startswith(field)
    assert fakes["openai"].request_count == 0


async def test_fallback_across_providers_keeps_the_schema(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """The primary fails; the Anthropic fallback answers with the forced tool."""
    fakes["openai"].inject("server_error", times=10)
    fakes["anthropic"].script(tool_calls=[{"name": "Person", "arguments": {"name": "B", "age": 1}}])
    cfg = make_config(
        selection=ModelSelectionStrategy(
            fallbacks={"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]}
        ),
    )
    async with LLMService(cfg) as svc:
        r = await svc.achat("who?", response_format=Person, cache=CacheControl(skip=True))  # type: ignore[arg-type]
    assert r.parsed == Person(name="B", age=1) and r.provider == "claude"


async def test_anthropic_with_own_tools_gets_the_instruction(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """A call with tools of its own cannot force the schema's tool: the schema goes into
    the system prompt and the text reply is parsed."""
    fakes["anthropic"].script(GOOD)
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    async with LLMService(make_config()) as svc:
        r = await svc.achat(
            "who?",
            MODELS["anthropic"],
            tools=[tool],
            response_format=Person,  # type: ignore[arg-type]
        )
    assert r.parsed == Person(name="Ada", age=36)
    body = last_body(fakes["anthropic"])
    assert [t["name"] for t in body["tools"]] == ["lookup"] and "tool_choice" not in body
    assert "JSON schema" in body["system"]


async def test_view_default_response_format_and_batch(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script(GOOD, times=3)
    async with LLMService(make_config()) as svc:
        view = svc.with_options(response_format=Person)  # type: ignore[arg-type]
        r = await view.achat("who?")
        results = await view.abatch(["a", "b"])
    assert r.parsed == Person(name="Ada", age=36)
    assert [getattr(x, "parsed", None) for x in results] == [Person(name="Ada", age=36)] * 2


@needs_pydantic
async def test_pydantic_stream(make_config: ConfigFactory, fakes: dict[str, FakeProvider]) -> None:
    fakes["openai"].script(GOOD)
    async with LLMService(make_config()) as svc:
        chunks = [
            c
            async for c in svc.astream("who?", response_format=PersonModel)  # type: ignore[arg-type]
        ]
    assert isinstance(chunks[-1].parsed, PersonModel) and chunks[-1].parsed.name == "Ada"
    assert chunks[-1].to_dict()["parsed"] == {"name": "Ada", "age": 36}


async def test_anthropic_json_mode_is_served_by_the_instruction(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """Regression: ``{"type": "json_object"}`` on Anthropic was refused too (no candidate
    supports json_mode); it is asked for in the system prompt, and not parsed."""
    fakes["anthropic"].script('{"a": 1}')
    async with LLMService(make_config()) as svc:
        r = await svc.achat("x", MODELS["anthropic"], response_format={"type": "json_object"})
    assert r.text == '{"a": 1}' and r.parsed is None
    assert "JSON" in last_body(fakes["anthropic"])["system"]
