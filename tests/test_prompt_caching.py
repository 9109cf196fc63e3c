"""Prompt caching: Anthropic ``cache_control`` passed through (system, messages, tools), the
opt-in automatic breakpoints, and usage that tells cache reads and writes apart, None when a
provider does not report them, as complete streamed as plain."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from anthropic.types import Message as AnthropicMessage

from llmrelay import LLMService, Usage
from llmrelay._types import build_request
from llmrelay.errors import InvalidRequestError
from llmrelay.providers import accumulate_chunks
from llmrelay.providers.anthropic import AnthropicAdapter
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
LONG = "You are a careful assistant. " * 40
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object"}},
    "cache_control": EPHEMERAL,
}


def _body(fake: FakeProvider) -> dict[str, Any]:
    body = fake.requests[-1].json
    assert isinstance(body, dict)
    return body


def _adapter() -> AnthropicAdapter:
    return AnthropicAdapter(deployment="c", base_url="http://127.0.0.1:1")


def _marks(body: dict[str, Any]) -> list[str]:
    """Where a body's breakpoints are: tools[i], system[i], messages[i][j]."""
    out = [f"tools[{i}]" for i, t in enumerate(body.get("tools") or ()) if "cache_control" in t]
    system = body.get("system")
    if isinstance(system, list):
        out += [f"system[{i}]" for i, b in enumerate(system) if "cache_control" in b]
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list):
            out += [
                f"messages[{i}][{j}]" for j, b in enumerate(m["content"]) if "cache_control" in b
            ]
    return out


def test_cache_control_passes_through_to_anthropic_only() -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]},
        {"role": "user", "content": "first question", "cache_control": HOUR},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "next"},
    ]  # fmt: skip
    req = build_request(messages, None, {"tools": [TOOL]})
    body = _adapter().chat_body(req, "claude-haiku-4-5", stream=False)
    assert body["system"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "first question", "cache_control": HOUR}
    ]  # fmt: skip
    assert body["tools"][0]["cache_control"] == EPHEMERAL
    assert _marks(body) == ["tools[0]", "system[0]", "messages[0][0]"]
    # the same history to OpenAI: no cache_control anywhere
    from llmrelay.providers.openai import OpenAIAdapter

    oa = OpenAIAdapter(deployment="o", base_url="http://127.0.0.1:1/v1")
    encoded = msgspec.json.encode(oa.chat_body(req, "gpt-4o-mini", stream=False))
    assert b"cache_control" not in encoded
    # and a plain system prompt stays one string
    plain = build_request(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], None, {}
    )
    assert _adapter().chat_body(plain, "m", stream=False)["system"] == "s"


def test_automatic_breakpoints() -> None:
    messages = [
        {"role": "system", "content": LONG},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    tool = {k: v for k, v in TOOL.items() if k != "cache_control"}
    req = build_request(messages, None, {"tools": [tool, tool], "cache_breakpoints": "auto"})
    body = _adapter().chat_body(req, "m", stream=False)
    # the last tool, the last system block, the turn before the newest
    assert _marks(body) == ["tools[1]", "system[0]", "messages[1][0]"]
    assert body["messages"][2]["content"] == "q2"  # the newest turn is not marked
    # never more than Anthropic's 4, counting the caller's own
    many = [{**m, "cache_control": EPHEMERAL} if m["role"] == "user" else m for m in messages]
    req = build_request(many, None, {"tools": [TOOL], "cache_breakpoints": "auto"})
    body = _adapter().chat_body(req, "m", stream=False)
    assert len(_marks(body)) == 4
    # off by default, and "none" is the default
    for params in ({}, {"cache_breakpoints": "none"}):
        body = _adapter().chat_body(build_request(messages, None, params), "m", stream=False)
        assert _marks(body) == []


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"type": "persistent"}, "messages[0].cache_control"),
        ({"type": "ephemeral", "ttl": "2d"}, "messages[0].cache_control.ttl"),
        ({"type": "ephemeral", "scope": "x"}, "messages[0].cache_control.scope"),
    ],
)
def test_bad_cache_control_is_refused(value: Any, field: str) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        build_request([{"role": "user", "content": "q", "cache_control": value}], None, {})
    assert ei.value.field == field
    part = [{"type": "text", "text": "q", "cache_control": value}]
    with pytest.raises(InvalidRequestError) as ei:
        build_request([{"role": "user", "content": part}], None, {})
    assert ei.value.field == field.replace("messages[0]", "messages[0].content[0]")
    with pytest.raises(InvalidRequestError) as ei:
        build_request("q", None, {"cache_breakpoints": "always"})
    assert ei.value.field == "params.cache_breakpoints"


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_cache_write_then_read(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], stream: bool
) -> None:
    system = {
        "role": "system",
        "content": [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}],
    }
    async with LLMService(make_config()) as svc:

        async def call(text: str) -> Usage:
            msgs = [system, {"role": "user", "content": text}]
            kw: dict[str, Any] = {"model": "claude/claude-haiku-4-5"}
            if stream:
                return accumulate_chunks([c async for c in svc.astream(msgs, **kw)]).usage
            return (await svc.achat(msgs, **kw)).usage

        first = await call("one")
        second = await call("two")
        uncached = (await svc.achat("no breakpoint", model="claude/claude-haiku-4-5")).usage
    assert first.cache_write_tokens and first.cache_write_tokens > 100
    assert first.cached_tokens == 0
    assert second.cached_tokens == first.cache_write_tokens and second.cache_write_tokens == 0
    # prompt_tokens counts the whole prompt, cached or not
    assert first.prompt_tokens == second.prompt_tokens > first.cache_write_tokens
    assert first.total_tokens == first.prompt_tokens + first.completion_tokens
    # Anthropic reports 0 when nothing was cached: 0, not None
    assert uncached.cached_tokens == 0 and uncached.cache_write_tokens == 0
    # the fake's JSON is the real API's shape
    r = fakes["anthropic"].requests[-1]
    assert r.json is not None and "messages" in r.json


async def test_streamed_usage_is_as_complete_as_plain(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    for name in ("anthropic", "openai"):
        fakes[name].script("same answer", reasoning="r r r", cached_tokens=7, cache_write_tokens=5)
        fakes[name].script("same answer", reasoning="r r r", cached_tokens=7, cache_write_tokens=5)
    async with LLMService(make_config()) as svc:
        for model in ("claude/claude-haiku-4-5", "openai/gpt-4o-mini"):
            kw: dict[str, Any] = {"model": model}
            if model.startswith("claude"):
                kw["thinking"] = {"type": "enabled", "budget_tokens": 1024}
            plain = (await svc.achat("q", **kw)).usage
            streamed = accumulate_chunks([c async for c in svc.astream("q", **kw)]).usage
            assert streamed == plain, model
            assert plain.cached_tokens == 7
    assert plain.reasoning_tokens == 2  # OpenAI reports it; Anthropic does not
    assert plain.cache_write_tokens is None  # OpenAI has no cache writes to report


async def test_anthropic_reasoning_tokens_are_not_reported(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["anthropic"].script("a", reasoning="t t")
    async with LLMService(make_config()) as svc:
        r = await svc.achat(
            "q",
            model="claude/claude-haiku-4-5",
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    assert r.usage.reasoning_tokens is None


def test_unreported_counts_are_none_not_zero() -> None:
    from llmrelay.providers.openai import OpenAIAdapter

    oa = OpenAIAdapter(deployment="o", base_url="http://127.0.0.1:1/v1")
    bare = {
        "choices": [{"message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    headers = [(b"content-type", b"application/json")]
    u = oa.decode_chat(200, headers, msgspec.json.encode(bare), "m").usage
    assert (u.cached_tokens, u.cache_write_tokens, u.reasoning_tokens) == (None, None, None)
    bare["usage"]["prompt_tokens_details"] = {"cached_tokens": 0}  # type: ignore[index]
    assert oa.decode_chat(200, headers, msgspec.json.encode(bare), "m").usage.cached_tokens == 0
    msg = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "x"}],
        "usage": {"input_tokens": 2, "output_tokens": 1},
    }
    AnthropicMessage.model_validate(msg)
    u = _adapter().decode_chat(200, headers, msgspec.json.encode(msg), "m").usage
    assert u.prompt_tokens == 2 and u.cached_tokens is None and u.cache_write_tokens is None
    assert Usage().to_dict()["cached_tokens"] is None


async def test_ollama_reports_no_cache_counts(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        u = (await svc.achat("q", model="local/llama3.2")).usage
        s = accumulate_chunks([c async for c in svc.astream("q", model="local/llama3.2")]).usage
    assert u == s and u.cached_tokens is None and u.reasoning_tokens is None and u.prompt_tokens


def test_breakpoints_do_not_split_the_cache_key() -> None:
    from llmrelay._cachekey import cache_key

    plain = build_request("q", None, {"temperature": 0})
    auto = build_request("q", None, {"temperature": 0, "cache_breakpoints": "auto"})
    thinking = build_request(
        "q", None, {"temperature": 0, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    )
    assert cache_key(plain, "m", "", "s") == cache_key(auto, "m", "", "s")
    assert cache_key(plain, "m", "", "s") != cache_key(thinking, "m", "", "s")


def test_system_blocks_take_text_only_and_keep_the_old_join() -> None:
    img = {"type": "image_url", "image_url": "https://example.com/a.png"}
    marked = {"type": "text", "text": "rules", "cache_control": EPHEMERAL}
    req = build_request(
        [{"role": "system", "content": [marked, img]}, {"role": "user", "content": "u"}], None, {}
    )
    body = _adapter().chat_body(req, "m", stream=False)
    assert body["system"] == [{"type": "text", "text": "rules", "cache_control": EPHEMERAL}]
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    req = build_request(
        [
            {"role": "system", "content": parts},
            {"role": "system", "content": "c"},
            {"role": "user", "content": "u"},
        ],
        None,
        {},
    )
    assert _adapter().chat_body(req, "m", stream=False)["system"] == "ab\n\nc"
