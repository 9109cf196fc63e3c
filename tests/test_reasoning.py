"""Reasoning end to end: Anthropic thinking blocks (signed, redacted), OpenAI-compatible
``reasoning_content``, Ollama ``thinking``; plain and streamed; kept in the assistant message
so a follow-up sends them back unchanged (the Anthropic fake refuses one that lost them),
through the cache, a Conversation and dedup; left out where the target cannot take them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from llmrelay import ChatChunk, LLMService, Message
from llmrelay.errors import InvalidRequestError, ProviderError
from llmrelay.providers import accumulate_chunks
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory

THINK = {"type": "enabled", "budget_tokens": 2048}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
CALL = {"name": "lookup", "arguments": {"q": "tides"}, "id": "toolu_1"}
ANTHROPIC_HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
anthropic_event = TypeAdapter(RawMessageStreamEvent)


def _events(text: str) -> list[str]:
    return [
        line[6:] for block in text.split("\n\n") for line in block.split("\n")
        if line.startswith("data: ")
    ]  # fmt: skip


def _last_body(fake: FakeProvider) -> dict[str, Any]:
    body = fake.requests[-1].json
    assert isinstance(body, dict)
    return body


# ---- the fakes speak the wire formats ----------------------------------------------------------


async def test_anthropic_fake_thinking_validates_plain_and_streamed(
    fake_anthropic: FakeProvider,
) -> None:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 4096,
        "thinking": THINK,
        "messages": [{"role": "user", "content": "why is the sky blue"}],
    }
    fake_anthropic.script("Rayleigh.", reasoning="short waves scatter more")
    fake_anthropic.script("Rayleigh.", reasoning="again")
    fake_anthropic.script("Hidden.", reasoning="secret", redacted=True)
    async with httpx.AsyncClient() as client:
        url = f"{fake_anthropic.url}/v1/messages"
        m = AnthropicMessage.model_validate(
            (await client.post(url, json=body, headers=ANTHROPIC_HEADERS)).json()
        )
        r = await client.post(url, json={**body, "stream": True}, headers=ANTHROPIC_HEADERS)
        events = [anthropic_event.validate_json(d) for d in _events(r.text) if "ping" not in d]
        red = AnthropicMessage.model_validate(
            (await client.post(url, json=body, headers=ANTHROPIC_HEADERS)).json()
        )
    assert m.content[0].type == "thinking" and m.content[0].thinking == "short waves scatter more"
    assert m.content[0].signature and m.content[1].type == "text"
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert "".join(d.thinking for d in deltas if d.type == "thinking_delta") == "again"
    sigs = [d.signature for d in deltas if d.type == "signature_delta"]
    assert len(sigs) == 1 and sigs[0]
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "text"]
    assert red.content[0].type == "redacted_thinking" and red.content[0].data


async def test_anthropic_fake_without_thinking_sends_no_thinking_block(
    fake_anthropic: FakeProvider,
) -> None:
    fake_anthropic.script("plain", reasoning="unused")
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{fake_anthropic.url}/v1/messages",
            json={"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]},
            headers=ANTHROPIC_HEADERS,
        )
    assert [b.type for b in AnthropicMessage.model_validate(r.json()).content] == ["text"]


async def test_openai_fake_reasoning_content_validates(fake_openai: FakeProvider) -> None:
    body = {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": "2+2"}]}
    fake_openai.script("4", reasoning="two plus two")
    fake_openai.script("4", reasoning="two plus two")
    async with httpx.AsyncClient() as client:
        url = f"{fake_openai.base_url}/chat/completions"
        c = ChatCompletion.model_validate(
            (await client.post(url, json=body, headers={"authorization": "Bearer t"})).json()
        )
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        r = await client.post(url, json=body, headers={"authorization": "Bearer t"})
    msg = c.choices[0].message
    assert msg.model_extra == {"reasoning_content": "two plus two"}
    assert c.usage is not None and c.usage.completion_tokens_details is not None
    assert c.usage.completion_tokens_details.reasoning_tokens == 3
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in _events(r.text)[:-1]]
    pieces = [
        (ch.choices[0].delta.model_extra or {}).get("reasoning_content", "")
        for ch in chunks if ch.choices
    ]  # fmt: skip
    assert "".join(pieces) == "two plus two"


# ---- Anthropic through the service -------------------------------------------------------------


async def test_anthropic_thinking_round_trip_in_a_tool_loop(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["anthropic"]
    fake.script(tool_calls=[CALL], reasoning="I should look the tides up")
    fake.script("High tide at noon.", reasoning="the tool said noon")
    async with LLMService(make_config()) as svc:
        ask = [{"role": "user", "content": "when is high tide?"}]
        r = await svc.achat(ask, model="claude/claude-haiku-4-5", thinking=THINK, tools=TOOLS)
        assert _last_body(fake)["thinking"] == THINK
        assert r.reasoning == "I should look the tides up"
        d = r.message.to_dict()
        [block] = d["thinking_blocks"]
        assert block["type"] == "thinking" and block["signature"]
        assert d["reasoning_content"] == "I should look the tides up"
        history = [*ask, d, {"role": "tool", "tool_call_id": "toolu_1", "content": "noon"}]
        r2 = await svc.achat(history, model="claude/claude-haiku-4-5", thinking=THINK, tools=TOOLS)
        assert r2.text == "High tide at noon." and r2.reasoning == "the tool said noon"
        sent = _last_body(fake)["messages"][1]["content"]
        assert [b["type"] for b in sent] == ["thinking", "tool_use"]  # thinking first
        assert sent[0] == block  # unchanged, signature intact
        # the real API refuses a tool loop whose assistant turn lost its thinking: so does
        # the fake, so the round trip above is tested, not assumed
        lost = {k: v for k, v in d.items() if k not in ("thinking_blocks",)}
        with pytest.raises(ProviderError, match="must start with a thinking block") as ei:
            await svc.achat(
                [*ask, lost, history[2]], model="claude/claude-haiku-4-5", thinking=THINK,
                tools=TOOLS,
            )  # fmt: skip
        assert ei.value.status_code == 400
        forged = {**d, "thinking_blocks": [{**block, "thinking": "something else"}]}
        with pytest.raises(ProviderError, match="signature"):
            await svc.achat(
                [*ask, forged, history[2]], model="claude/claude-haiku-4-5", thinking=THINK,
                tools=TOOLS,
            )  # fmt: skip


async def test_anthropic_thinking_streamed_and_replayed_from_cache(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["anthropic"]
    fake.script(tool_calls=[CALL], reasoning="let me think about it")
    fake.script("done")
    async with LLMService(make_config()) as svc:
        kw: dict[str, Any] = {"model": "claude/claude-haiku-4-5", "thinking": THINK}
        ask = [{"role": "user", "content": "tides?"}]
        chunks = [c async for c in svc.astream(ask, tools=TOOLS, seed=1, **kw)]
        assert "".join(c.reasoning or "" for c in chunks) == "let me think about it"
        assert sum(bool(c.reasoning) for c in chunks) > 1  # deltas, not one piece
        resp = accumulate_chunks(chunks)
        assert resp.reasoning == "let me think about it"
        [block] = resp.message.reasoning_blocks or []
        assert block["signature"] and block["thinking"] == "let me think about it"
        history = [
            *ask,
            resp.message.to_dict(),
            {"role": "tool", "tool_call_id": "toolu_1", "content": "noon"},
        ]
        r2 = await svc.achat(history, tools=TOOLS, **kw)  # accepted: blocks went back intact
        assert r2.text == "done"
        # a replayed stream carries the reasoning and its blocks
        again = [c async for c in svc.astream(ask, tools=TOOLS, seed=1, **kw)]
        assert fake.request_count == 2
        replayed = accumulate_chunks(again)
        assert replayed.reasoning == "let me think about it"
        assert replayed.message.reasoning_blocks == [block]
        hit = await svc.achat(ask, tools=TOOLS, seed=1, **kw)
        assert hit.cached and hit.message.reasoning_blocks == [block]


async def test_redacted_thinking_goes_back_unchanged(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["anthropic"]
    for _ in range(2):
        fake.script(tool_calls=[CALL], reasoning="classified", redacted=True)
        fake.script("ok")
    async with LLMService(make_config()) as svc:
        kw: dict[str, Any] = {"model": "claude/claude-haiku-4-5", "thinking": THINK}
        ask = [{"role": "user", "content": "q"}]
        for stream in (False, True):
            if stream:
                resp = accumulate_chunks([c async for c in svc.astream(ask, tools=TOOLS, **kw)])
            else:
                resp = await svc.achat(ask, tools=TOOLS, **kw)
            assert resp.reasoning is None
            [block] = resp.message.reasoning_blocks or []
            assert block["type"] == "redacted_thinking" and block["data"]
            tool = {"role": "tool", "tool_call_id": "toolu_1", "content": "x"}
            r = await svc.achat([*ask, resp.message.to_dict(), tool], tools=TOOLS, **kw)
            assert r.text == "ok"
            assert _last_body(fake)["messages"][1]["content"][0] == block


# ---- OpenAI-compatible and Ollama ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_reasoning_content_plain_and_streamed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], stream: bool
) -> None:
    fake = fakes["openai"]
    fake.script("4", reasoning="two and two")
    fake.script("yes")
    async with LLMService(make_config()) as svc:
        ask = [{"role": "user", "content": "2+2?"}]
        if stream:
            chunks = [c async for c in svc.astream(ask, reasoning_effort="low")]
            assert [c.reasoning for c in chunks if c.reasoning] == ["two", " and", " two"]
            resp = accumulate_chunks(chunks)
        else:
            resp = await svc.achat(ask, reasoning_effort="low")
        assert _last_body(fake)["reasoning_effort"] == "low"
        assert resp.reasoning == "two and two" and resp.text == "4"
        assert resp.usage.reasoning_tokens == 3
        await svc.achat([*ask, resp.message.to_dict(), {"role": "user", "content": "sure?"}])
        sent = _last_body(fake)["messages"][1]
        # DeepSeek refuses a follow-up without it: it goes back on its turn
        assert sent == {"role": "assistant", "content": "4", "reasoning_content": "two and two"}


@pytest.mark.parametrize("stream", [False, True])
async def test_ollama_thinking_plain_and_streamed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], stream: bool
) -> None:
    fake = fakes["ollama"]
    fake.script("blue", reasoning="scattering")
    fake.script("ok")
    async with LLMService(make_config()) as svc:
        ask = [{"role": "user", "content": "sky?"}]
        kw: dict[str, Any] = {"model": "local/llama3.2", "thinking": THINK}
        if stream:
            resp = accumulate_chunks([c async for c in svc.astream(ask, **kw)])
        else:
            resp = await svc.achat(ask, **kw)
        assert _last_body(fake)["think"] is True
        assert resp.reasoning == "scattering" and resp.text == "blue"
        await svc.achat([*ask, resp.message.to_dict(), {"role": "user", "content": "?"}], **kw)
        assert _last_body(fake)["messages"][1]["thinking"] == "scattering"


# ---- across providers ------------------------------------------------------------------------


async def test_reasoning_is_left_out_where_the_target_cannot_take_it(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["anthropic"].script(tool_calls=[CALL], reasoning="signed thoughts")
    fakes["openai"].script("x", reasoning="deepseek thoughts")
    async with LLMService(make_config()) as svc:
        ask = [{"role": "user", "content": "q"}]
        tool = {"role": "tool", "tool_call_id": "toolu_1", "content": "r"}
        deep = await svc.achat(ask)
        claude = await svc.achat(ask, model="claude/claude-haiku-4-5", thinking=THINK, tools=TOOLS)
        await svc.achat([*ask, claude.message.to_dict(), tool], model="openai/gpt-4o-mini")
        sent = _last_body(fakes["openai"])["messages"][1]
        assert "thinking_blocks" not in sent and "reasoning_content" not in sent
        assert sent["tool_calls"][0]["id"] == "toolu_1"
        await svc.achat(
            [*ask, deep.message.to_dict(), {"role": "user", "content": "more"}],
            model="claude/claude-haiku-4-5",
        )
        sent = _last_body(fakes["anthropic"])["messages"][1]
        assert sent == {"role": "assistant", "content": [{"type": "text", "text": "x"}]}
        await svc.achat([*ask, claude.message.to_dict(), tool], model="local/llama3.2")
        assert "thinking" not in _last_body(fakes["ollama"])["messages"][1]


async def test_official_openai_gets_no_reasoning_content(fakes: dict[str, FakeProvider]) -> None:
    from llmrelay._types import build_request
    from llmrelay.providers.openai import OpenAIAdapter

    msg = {"role": "assistant", "content": "a", "reasoning_content": "r"}
    req = build_request([{"role": "user", "content": "q"}, msg], None, {})
    official = OpenAIAdapter(deployment="o", base_url="https://api.openai.com/v1")
    compat = OpenAIAdapter(deployment="d", base_url="https://api.deepseek.com/v1")
    assert "reasoning_content" not in official.chat_body(req, "gpt-5", stream=False)["messages"][1]
    assert compat.chat_body(req, "deepseek-chat", stream=False)["messages"][1] == msg


# ---- conversation and dedup -----------------------------------------------------------------


async def test_conversation_keeps_thinking_with_its_turn(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["anthropic"]
    fake.script(tool_calls=[CALL], reasoning="think first")
    fake.script("noon", reasoning="then answer")
    async with LLMService(make_config()) as svc:
        conv = svc.conversation(model="claude/claude-haiku-4-5", thinking=THINK, tools=TOOLS)
        await conv.asend("tides?")
        conv.add_tool_result("toolu_1", "noon")
        r = await conv.asend()
        assert r.text == "noon"  # the fake would have refused a turn without its thinking
        assert [m.reasoning for m in conv.history if m.role == "assistant"] == [
            "think first",
            "then answer",
        ]
        back = type(conv).from_json(svc, conv.to_json())
        assert back.history == conv.history


async def test_conversation_trimming_never_splits_a_thinking_turn(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["anthropic"]
    fake.script(tool_calls=[CALL], reasoning="x" * 400)
    fake.script("done", reasoning="fine")
    async with LLMService(make_config()) as svc:
        conv = svc.conversation(model="claude/claude-haiku-4-5", thinking=THINK, tools=TOOLS)
        conv.max_context_tokens = 300
        await conv.asend("first " * 50)
        conv.add_tool_result("toolu_1", "r")
        await conv.asend()
        sent = _last_body(fake)["messages"]
        for i, m in enumerate(sent):
            blocks = m["content"] if isinstance(m["content"], list) else []
            if any(b.get("type") == "tool_use" for b in blocks):
                assert blocks[0]["type"] == "thinking"
            if any(b.get("type") == "tool_result" for b in blocks):
                assert sent[i - 1]["role"] == "assistant"


async def test_dedup_followers_get_the_reasoning_blocks(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["anthropic"]
    fake.script("a", reasoning="shared thought")
    async with LLMService(make_config()) as svc:
        ask = [{"role": "user", "content": "same"}]
        kw: dict[str, Any] = {"model": "claude/claude-haiku-4-5", "thinking": THINK, "seed": 3}
        a, b = await asyncio.gather(svc.achat(ask, **kw), svc.achat(ask, **kw))
        assert fake.request_count == 1
        assert a.reasoning == b.reasoning == "shared thought"
        assert a.message.reasoning_blocks == b.message.reasoning_blocks
        assert a.message.reasoning_blocks


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thinking", "field"),
    [
        ({"type": "enabled", "budget_tokens": 10}, "params.thinking.budget_tokens"),
        ({"type": "enabled"}, "params.thinking.budget_tokens"),
        ({"type": "on"}, "params.thinking"),
        ({"type": "enabled", "budget_tokens": 2048, "depth": 1}, "params.thinking.depth"),
        ({"type": "adaptive", "budget_tokens": 2048}, "params.thinking.budget_tokens"),
    ],
)
async def test_bad_thinking_is_refused_before_sending(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    thinking: dict[str, Any],
    field: str,
) -> None:
    async with LLMService(make_config()) as svc:
        with pytest.raises(InvalidRequestError) as ei:
            await svc.achat("q", model="claude/claude-haiku-4-5", thinking=thinking)
        assert ei.value.field == field
    assert fakes["anthropic"].request_count == 0


async def test_thinking_conflicts_are_refused_before_sending(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"max_tokens": 1024}, "params.thinking.budget_tokens"),
            ({"temperature": 0.2}, "params.temperature"),
            ({"tools": TOOLS, "tool_choice": "required"}, "params.tool_choice"),
        ]
        for extra, field in cases:
            with pytest.raises(InvalidRequestError) as ei:
                await svc.achat("q", model="claude/claude-haiku-4-5", thinking=THINK, **extra)
            assert ei.value.field == field
        with pytest.raises(InvalidRequestError, match="reasoning_effort") as ei:
            await svc.achat("q", model="openai/gpt-4o-mini", thinking=THINK)
        assert ei.value.field == "params.thinking"
        # disabled is unset: accepted everywhere
        await svc.achat("q", model="openai/gpt-4o-mini", thinking={"type": "disabled"})
    assert fakes["anthropic"].request_count == 0


def test_thinking_blocks_in_a_history_are_checked() -> None:
    good = {"type": "thinking", "thinking": "t", "signature": "s"}
    m = Message.from_dict({"role": "assistant", "content": None, "thinking_blocks": [good]})
    assert m.reasoning_blocks == [good] and m.to_dict()["thinking_blocks"] == [good]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"role": "assistant", "content": "a", "thinking_blocks": "x"}, "message.thinking_blocks"),
        (
            {"role": "assistant", "content": "a", "thinking_blocks": [{"type": "thinking"}]},
            "message.thinking_blocks[0].thinking",
        ),
        (
            {
                "role": "assistant",
                "content": "a",
                "thinking_blocks": [{"type": "redacted_thinking"}],
            },
            "message.thinking_blocks[0].data",
        ),
        ({"role": "user", "content": "a", "reasoning_content": "r"}, "message.reasoning_content"),
        (
            {"role": "assistant", "content": "a", "reasoning_content": 3},
            "message.reasoning_content",
        ),
    ]
    for d, field in bad:
        with pytest.raises(InvalidRequestError) as ei:
            Message.from_dict(d)
        assert ei.value.field == field, d


def test_chunk_reasoning_fields_are_plain() -> None:
    c = ChatChunk(reasoning="r", reasoning_blocks=[{"type": "redacted_thinking", "data": "d"}])
    d = c.to_dict()
    assert d["reasoning"] == "r" and d["reasoning_blocks"] == [
        {"type": "redacted_thinking", "data": "d"}
    ]


async def test_ollama_fake_thinking_validates(fake_ollama: FakeProvider) -> None:
    import ollama

    fake_ollama.script("blue", reasoning="light scatters")
    fake_ollama.script("blue", reasoning="light scatters")
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "sky"}], "think": True}
    async with httpx.AsyncClient() as client:
        url = f"{fake_ollama.url}/api/chat"
        plain = ollama.ChatResponse.model_validate(
            (await client.post(url, json={**body, "stream": False})).json()
        )
        r = await client.post(url, json=body)
    assert plain.message.thinking == "light scatters"
    lines = [ollama.ChatResponse.model_validate_json(x) for x in r.text.splitlines()]
    assert "".join(x.message.thinking or "" for x in lines) == "light scatters"
    assert "".join(x.message.content or "" for x in lines) == "blue"


def test_openai_compatible_reasoning_key_plain_and_streamed() -> None:
    """Newer vLLM names it ``reasoning``; the decoders take both names."""
    import msgspec

    from llmrelay.providers.openai import OpenAIAdapter

    oa = OpenAIAdapter(deployment="v", base_url="http://127.0.0.1:1/v1")
    reply = {
        "choices": [
            {"message": {"role": "assistant", "content": "a", "reasoning": "r1"}, "index": 0}
        ]
    }
    headers = [(b"content-type", b"application/json")]
    r = oa.decode_chat(200, headers, msgspec.json.encode(reply), "m")
    assert r.reasoning == "r1" and r.message.reasoning == "r1"
    dec = oa.stream_decoder("m")
    events = [
        {"choices": [{"index": 0, "delta": {"reasoning": "x"}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "y"}}]},
        {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]},
    ]
    raw = b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events)
    chunks = dec.feed(raw + b"data: [DONE]\n\n")
    assert [c.reasoning for c in chunks] == ["x", "y", None] and dec.done
    assert accumulate_chunks(chunks).reasoning == "xy"
