"""Conversation: history, system prompt, trimming that keeps tool calls with their results."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelay import LLMService, LLMServiceConfig, Message, ProviderConfig
from llmrelay._conversation import Conversation
from llmrelay._types import ToolCall
from llmrelay.errors import InvalidRequestError


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
