"""Conversation: history, system prompt, trimming that keeps tool calls with their results."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelay import LLMService, LLMServiceConfig, Message, OrchestratorConfig, ProviderConfig
from llmrelay._conversation import Conversation
from llmrelay._types import ToolCall
from llmrelay.errors import InvalidRequestError, LLMRelayError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory


def _svc() -> LLMService:
    return LLMService(
        LLMServiceConfig(providers=[ProviderConfig(name="e", kind="echo")], default_model="e/echo")
    )


async def test_send_keeps_history_and_system() -> None:
    async with _svc() as svc:
        conv = svc.conversation(system="be brief", model="e/echo")
        r1 = await conv.asend("first")
        r2 = await conv.asend("second")
        assert r1.text == "echo: first" and r2.text == "echo: second"
        assert [m.role for m in conv.history] == ["user", "assistant", "user", "assistant"]
        sent = conv.messages()
        assert sent[0].role == "system" and sent[0].content == "be brief"


def test_sync_send_and_failed_send_leaves_history_clean() -> None:
    with _svc() as svc:
        conv = svc.conversation(model="e/echo")
        conv.send("hello")
        assert len(conv) == 2
        with pytest.raises(InvalidRequestError):
            conv.send("x", temperature=9)
        assert len(conv) == 2
        with pytest.raises(InvalidRequestError, match="empty"):
            conv.send("")


def test_trimming_keeps_system_and_tool_groups() -> None:
    with _svc() as svc:
        conv = Conversation(svc, system="sys", model="e/echo", max_context_tokens=60)
        for i in range(10):
            conv.add(Message(role="user", content=f"question number {i} " + "x" * 40))
            conv.add(Message(role="assistant", content=f"answer {i}"))
        call = ToolCall(id="t1", name="lookup", arguments={"q": "tides"})
        conv.add(Message(role="assistant", content=None, tool_calls=[call]))
        conv.add(Message(role="tool", content="high at noon", tool_call_id="t1"))
        sent = conv.messages()
        assert sent[0].role == "system"
        assert len(sent) < 1 + len(conv.history)
        roles = [m.role for m in sent]
        # a tool result is never sent without the assistant call before it
        for i, m in enumerate(sent):
            if m.role == "tool":
                assert sent[i - 1].role == "assistant" and sent[i - 1].tool_calls
        assert roles[-2:] == ["assistant", "tool"]


def test_save_and_load(tmp_path: Path) -> None:
    with _svc() as svc:
        conv = svc.conversation(system="s", model="e/echo", priority=1, temperature=0)
        conv.send("remember me")
        f = tmp_path / "conv.json"
        conv.save(f)
        back = Conversation.load(svc, f)
        assert back.history == conv.history
        assert back.system == "s" and back.priority == 1 and back.params == {"temperature": 0}
        with pytest.raises(InvalidRequestError, match="conversation JSON"):
            Conversation.from_json(svc, "{not json")


# ---- tool results without a fake user turn, streaming ---------------------------------------

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def _sent_roles(fake: FakeProvider) -> list[str]:
    return [m["role"] for m in fake.requests[-1].json["messages"]]


async def test_continue_after_tool_results_without_a_user_turn(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.script(
        tool_calls=[
            {"name": "lookup", "arguments": {"q": "tides"}, "id": "c1"},
            {"name": "lookup", "arguments": {"q": "moon"}, "id": "c2"},
        ]
    )
    fake.script("High tide at noon, full moon.")
    async with LLMService(make_config()) as svc:
        conv = svc.conversation(system="sys", tools=TOOLS)
        r = await conv.asend("when is high tide?")
        assert [c.id for c in r.tool_calls] == ["c1", "c2"]
        assert [c.id for c in conv.pending_tool_calls] == ["c1", "c2"]
        # not every call answered: refused before anything is sent
        conv.add_tool_result("c1", "noon")
        with pytest.raises(InvalidRequestError, match="c2") as ei:
            await conv.asend()
        assert ei.value.field == "tool_call_id"
        assert fake.request_count == 1
        conv.add_tool_result("c2", {"phase": "full"})  # JSON-able content is encoded
        assert conv.pending_tool_calls == []
        r2 = await conv.asend()
        assert r2.text == "High tide at noon, full moon."
        assert _sent_roles(fake) == ["system", "user", "assistant", "tool", "tool"]
        assert fake.requests[-1].json["messages"][-1]["content"] == '{"phase":"full"}'
        assert [m.role for m in conv.history] == ["user", "assistant", "tool", "tool", "assistant"]
        # nothing to answer now: no text after an assistant turn is refused
        with pytest.raises(InvalidRequestError, match="nothing to answer") as ei:
            await conv.asend()
        assert ei.value.field == "text"
        assert fake.request_count == 2


def test_add_tool_result_checks_the_call_id() -> None:
    with _svc() as svc:
        conv = svc.conversation(model="e/echo")
        with pytest.raises(InvalidRequestError, match="no tool call") as ei:
            conv.add_tool_result("c9", "x")
        assert ei.value.field == "tool_call_id"
        call = ToolCall(id="c1", name="lookup", arguments={})
        conv.add(Message(role="assistant", content=None, tool_calls=[call]))
        with pytest.raises(InvalidRequestError, match="c1") as ei:
            conv.add_tool_result("c9", "x")
        assert ei.value.field == "tool_call_id"
        with pytest.raises(InvalidRequestError) as ei:
            conv.add_tool_result("c1", object())
        assert ei.value.field == "content"
        conv.add_tool_result("c1", "done")
        with pytest.raises(InvalidRequestError):  # answered already
            conv.add_tool_result("c1", "again")
        assert [m.role for m in conv.history] == ["assistant", "tool"]
        with pytest.raises(InvalidRequestError, match="nothing to answer"):
            svc.conversation(model="e/echo").send()


def test_sync_send_without_text_after_tool_result(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script(tool_calls=[{"name": "lookup", "arguments": {}, "id": "t1"}])
    with LLMService(make_config()) as svc:
        conv = svc.conversation(tools=TOOLS)
        conv.send("go")
        conv.add_tool_result("t1", "42")
        r = conv.send()
        assert r.text == "echo: 42"  # the fake echoes the last user or tool turn
        assert _sent_roles(fakes["openai"]) == ["user", "assistant", "tool"]


async def test_astream_updates_history_only_when_the_stream_ends(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.script("Let me look.", tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}])
    async with LLMService(make_config()) as svc:
        conv = svc.conversation(tools=TOOLS)
        chunks = []
        async for chunk in conv.astream("look it up"):
            chunks.append(chunk)
            assert len(conv.history) == 0  # nothing half-done while streaming
        assert "".join(c.text for c in chunks) == "Let me look."
        assert [m.role for m in conv.history] == ["user", "assistant"]
        last = conv.history[-1]
        assert last.content == "Let me look."
        assert last.tool_calls is not None and last.tool_calls[0].arguments == {"q": "x"}
        (call,) = conv.pending_tool_calls
        conv.add_tool_result(call.id, "found")
        text = "".join([c.text async for c in conv.astream()])  # after a tool result, no text
        assert text == "echo: found"
        assert [m.role for m in conv.history] == ["user", "assistant", "tool", "assistant"]


async def test_a_failed_or_abandoned_stream_leaves_history_as_before(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    async with LLMService(make_config(orchestrator=OrchestratorConfig(max_retries=0))) as svc:
        conv = svc.conversation()
        await conv.asend("first")
        before = list(conv.history)
        fake.inject("cut_stream", times=1, after=2)
        with pytest.raises(LLMRelayError):
            async for _ in conv.astream("this one breaks off"):
                pass
        assert conv.history == before
        stream = conv.astream("one two three four five six")
        async for _ in stream:
            break  # abandoned after the first chunk
        await stream.aclose()  # type: ignore[attr-defined]
        assert conv.history == before
        with pytest.raises(InvalidRequestError, match="empty"):
            conv.astream("")  # bad input fails at the call, before anything is sent
        text = "".join([c.text async for c in conv.astream("again")])
        assert text == "echo: again"
        assert len(conv.history) == len(before) + 2


def test_sync_stream_and_abandon(make_config: ConfigFactory) -> None:
    with LLMService(make_config()) as svc:
        conv = svc.conversation()
        text = "".join(c.text for c in conv.stream("sync words here"))
        assert text == "echo: sync words here"
        assert [m.role for m in conv.history] == ["user", "assistant"]
        it = conv.stream("never finished")
        next(it)
        it.close()  # type: ignore[attr-defined]
        assert len(conv.history) == 2


def test_trimming_never_separates_tool_calls_from_their_results() -> None:
    with _svc() as svc:
        conv = Conversation(svc, model="e/echo", max_context_tokens=80)
        for i in range(6):
            conv.add(f"question {i} " + "y" * 30)
            calls = [ToolCall(id=f"c{i}{j}", name="lookup", arguments={"n": j}) for j in range(2)]
            conv.add(Message(role="assistant", content=None, tool_calls=calls))
            for j in range(2):
                conv.add_tool_result(f"c{i}{j}", "r" * 20)
            conv.add(Message(role="assistant", content=f"answer {i}"))
        for budget in range(10, 200, 7):
            conv.max_context_tokens = budget
            sent = conv.messages()
            assert sent[-1] == conv.history[-1]
            for k, m in enumerate(sent):
                if m.tool_calls:
                    ids = [c.id for c in m.tool_calls]
                    assert [r.tool_call_id for r in sent[k + 1 : k + 1 + len(ids)]] == ids
                if m.role == "tool":
                    assert k > 0 and (sent[k - 1].tool_calls or sent[k - 1].role == "tool")


def test_the_stream_accumulator_is_public() -> None:
    import llmrelay
    from llmrelay.providers import ChunkAccumulator, accumulate_chunks

    assert llmrelay.accumulate_chunks is accumulate_chunks
    assert llmrelay.ChunkAccumulator is ChunkAccumulator
    chunks = [
        llmrelay.ChatChunk(text="Hi "),
        llmrelay.ChatChunk(tool_calls=[llmrelay.ToolCallDelta(index=0, id="c1", name="lookup")]),
        llmrelay.ChatChunk(tool_calls=[llmrelay.ToolCallDelta(index=0, arguments_delta='{"q"')]),
        llmrelay.ChatChunk(tool_calls=[llmrelay.ToolCallDelta(index=0, arguments_delta=":1}")]),
        llmrelay.ChatChunk(finish_reason="tool_calls"),
    ]
    acc = llmrelay.ChunkAccumulator()
    for c in chunks:
        acc.add(c)
    r = acc.response()
    assert r.text == "Hi " and r.finish_reason == "tool_calls"
    assert r.tool_calls[0].id == "c1" and r.tool_calls[0].arguments == {"q": 1}
    assert accumulate_chunks(chunks).tool_calls == r.tool_calls
