"""Middleware sees every call, streamed ones included, with one contract."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from llmrelay import CacheConfig, ChatRequest, ChatResponse, LLMService, Message, Usage
from llmrelay.errors import InvalidRequestError, LLMRelayError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory


async def test_middleware_sees_plain_and_streamed_calls(make_config: ConfigFactory) -> None:
    seen: list[tuple[str, bool, str]] = []

    async def mw(req: ChatRequest, call_next: Any) -> ChatResponse:
        resp: ChatResponse = await call_next(req)
        seen.append((req.messages[-1].text, req.stream, resp.text))
        return resp

    async with LLMService(make_config(cache=CacheConfig(enabled=False)), middleware=[mw]) as svc:
        await svc.achat("plain one")
        chunks = [c.text async for c in svc.astream("streamed one")]
    assert [s[0] for s in seen] == ["plain one", "streamed one"]
    # for a stream, call_next gave the finished stream as one response
    assert seen[1][2] == "".join(chunks) and "streamed one" in seen[1][2]


async def test_stream_middleware_can_change_the_request(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async def rewrite(req: ChatRequest, call_next: Any) -> ChatResponse:
        msgs = [*req.messages[:-1], msgspec.structs.replace(req.messages[-1], content="rewritten")]
        resp: ChatResponse = await call_next(msgspec.structs.replace(req, messages=msgs))
        return resp

    async with LLMService(make_config(), middleware=[rewrite]) as svc:
        text = "".join([c.text async for c in svc.astream("original", temperature=0)])
    assert "rewritten" in text
    assert fakes["openai"].requests[-1].json["messages"][-1]["content"] == "rewritten"


async def test_stream_middleware_can_answer_or_refuse(make_config: ConfigFactory) -> None:
    async def guard(req: ChatRequest, call_next: Any) -> ChatResponse:
        if "forbidden" in req.messages[-1].text:
            raise InvalidRequestError("refused by policy", field="messages")
        if "canned" in req.messages[-1].text:
            return ChatResponse(
                id="x",
                model="m",
                provider="mw",
                text="canned answer",
                message=Message(role="assistant", content="canned answer"),
                tool_calls=[],
                finish_reason="stop",
                usage=Usage(prompt_tokens=0, completion_tokens=2, total_tokens=2),
            )
        resp: ChatResponse = await call_next(req)
        return resp

    async with LLMService(make_config(), middleware=[guard]) as svc:
        with pytest.raises(InvalidRequestError, match="policy"):
            _ = [c async for c in svc.astream("forbidden words")]
        text = "".join([c.text async for c in svc.astream("canned please")])
        assert text == "canned answer"
        assert "fine" in "".join([c.text async for c in svc.astream("fine")])


async def test_stream_middleware_sees_the_streams_error_and_abandonment(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    outcomes: list[str] = []

    async def watch(req: ChatRequest, call_next: Any) -> ChatResponse:
        try:
            resp: ChatResponse = await call_next(req)
        except LLMRelayError as e:
            outcomes.append(type(e).__name__)
            raise
        except BaseException as e:
            outcomes.append(type(e).__name__)
            raise
        outcomes.append("ok")
        return resp

    fakes["openai"].inject("auth", times=1)
    async with LLMService(make_config(cache=CacheConfig(enabled=False)), middleware=[watch]) as svc:
        with pytest.raises(LLMRelayError):
            _ = [c async for c in svc.astream("fails")]
        agen = svc.astream("a long answer that the caller abandons early")
        async for _ in agen:
            break
        await agen.aclose()  # type: ignore[attr-defined]
    assert outcomes == ["AuthenticationError", "CancelledError"]
