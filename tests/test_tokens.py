"""The one token estimator (llmrelay._tokens): what is sent is what is counted."""

from __future__ import annotations

from llmrelay._tokens import IMAGE_CHARS, message_tokens, request_tokens, texts_tokens
from llmrelay._types import Message, ToolCall, build_request


def test_a_message_counts_its_text_and_four_tokens_of_framing() -> None:
    assert message_tokens(Message(role="user", content="")) == 4
    assert message_tokens(Message(role="user", content="x" * 400)) == 104


def test_tool_calls_and_reasoning_are_counted_because_they_are_sent() -> None:
    plain = Message(role="assistant", content="ok")
    calls = Message(
        role="assistant",
        content="ok",
        tool_calls=[ToolCall(id="c1", name="lookup", arguments={"q": "y" * 400})],
    )
    thought = Message(role="assistant", content="ok", reasoning="z" * 400)
    assert message_tokens(calls) > message_tokens(plain) + 100
    assert message_tokens(thought) == message_tokens(plain) + 100


def test_an_image_counts_as_a_fixed_size_not_its_url() -> None:
    big = "data:image/png;base64," + "A" * 100_000
    req = build_request(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": big}},
                ],
            }
        ],
        "m",
        {},
    )
    assert request_tokens(req) == (len("what is this") + IMAGE_CHARS + 16) // 4 + 1


def test_a_request_counts_its_messages_and_its_tools() -> None:
    msgs = [{"role": "user", "content": "x" * 40}]
    bare = request_tokens(build_request(msgs, "m", {}))
    assert bare == (40 + 16) // 4 + 1
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert request_tokens(build_request(msgs, "m", {"tools": [tool]})) > bare + 10


def test_texts() -> None:
    assert texts_tokens([]) == 1
    assert texts_tokens(["abcd", "efgh"]) == 3
