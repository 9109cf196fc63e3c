"""The one token estimator: what a request, a message or a list of texts is booked for
before the provider reports its usage.

About four characters a token, plus four tokens of framing per message; an image part
counts as 1,000 characters (providers charge roughly 85 to 1,500 tokens an image, and
its URL or base64 body says nothing of that). Everything of a message that is sent is
counted: its text, its tool calls, its reasoning (blocks are sent back with their
turn). The estimate books rate limits and budgets and trims a conversation's history;
the real usage reconciles it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from llmrelay._types import ChatRequest, Message

__all__ = ["message_tokens", "request_tokens", "texts_tokens"]

#: characters counted for an image part
IMAGE_CHARS = 1000
#: characters of framing counted per message (four tokens)
MESSAGE_CHARS = 16

_encode = msgspec.json.encode


def _chars(m: Message) -> int:
    c = m.content
    n = 0
    if isinstance(c, str):
        n = len(c)
    elif c:
        for part in c:
            n += len(getattr(part, "text", None) or "")
            if getattr(part, "type", "") == "image_url":
                n += IMAGE_CHARS
    if m.tool_calls:
        n += len(_encode(m.tool_calls))
    if m.reasoning_blocks:  # sent back with their turn, so they take room in the window
        n += len(_encode(m.reasoning_blocks))
    elif m.reasoning:
        n += len(m.reasoning)
    return n + MESSAGE_CHARS


def message_tokens(m: Message) -> int:
    """The tokens one message takes in a request."""
    return _chars(m) // 4


def request_tokens(req: ChatRequest) -> int:
    """The input tokens of a chat request: its messages and its tools' schemas."""
    chars = 0
    for m in req.messages:
        chars += _chars(m)
    if req.tools:
        chars += len(_encode(req.tools))
    return chars // 4 + 1


def texts_tokens(texts: Sequence[str]) -> int:
    """The input tokens of an embeddings call's texts."""
    return sum(len(t) for t in texts) // 4 + 1
