"""FakeProvider scripts matched on the request, and the check that every script was used."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llmrelay.errors import ConfigError
from llmrelay.testing import FakeProvider


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


async def ask(client: httpx.AsyncClient, fake: FakeProvider, model: str = "m", **body: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    r = await client.post(
        fake.base_url + "/chat/completions", json=body, headers={"authorization": "Bearer t"}
    )
    return str(r.json()["choices"][0]["message"]["content"])


async def test_match_on_model_before_the_unconditional_queue(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_openai.script("general")
    fake_openai.script("for the big model", match={"model": "big"})
    assert await ask(client, fake_openai, "big") == "for the big model"
    assert await ask(client, fake_openai, "big") == "general"  # the next unconditional one
    assert await ask(client, fake_openai, "small") == "echo: hi"
    fake_openai.assert_all_consumed()


async def test_an_unmatched_request_gets_the_echo_and_leaves_the_script(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_openai.script("never", match={"path": "/v1/responses"})
    fake_openai.script("tools", match=lambda body: "tools" in body, times=2)
    assert await ask(client, fake_openai) == "echo: hi"
    assert await ask(client, fake_openai, tools=[]) == "tools"
    with pytest.raises(AssertionError) as ei:
        fake_openai.assert_all_consumed()
    text = str(ei.value)
    assert "2 scripted replies not consumed" in text
    assert "'never', match(path='/v1/responses')" in text
    assert "'tools', match(body=" in text
    assert fake_openai.pending_scripts[0].startswith("chat reply 'never'")


async def test_all_conditions_of_a_mapping_must_hold(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    def wants_json(body: dict[str, Any]) -> bool:
        return body.get("response_format") == {"type": "json_object"}

    fake_openai.script('{"ok": true}', match={"model": "m", "body": wants_json})
    assert await ask(client, fake_openai, "other", response_format={"type": "json_object"}) == (
        "echo: hi"
    )
    assert await ask(client, fake_openai, "m") == "echo: hi"
    assert await ask(client, fake_openai, "m", response_format={"type": "json_object"}) == (
        '{"ok": true}'
    )
    fake_openai.assert_all_consumed()


async def test_embeddings_match_and_are_checked(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_openai.script(embeddings=[[1.0, 0.0]], match={"model": "emb-a"})
    fake_openai.script(embedding_dims=3)
    with pytest.raises(AssertionError, match="2 scripted replies"):
        fake_openai.assert_all_consumed()

    async def embed(model: str) -> list[float]:
        r = await client.post(
            fake_openai.base_url + "/embeddings",
            json={"model": model, "input": ["x"]},
            headers={"authorization": "Bearer t"},
        )
        return list(r.json()["data"][0]["embedding"])

    assert len(await embed("emb-b")) == 3
    with pytest.raises(AssertionError, match=r"1 scripted reply not consumed:\n  - embedding"):
        fake_openai.assert_all_consumed()
    assert await embed("emb-a") == [1.0, 0.0]
    fake_openai.assert_all_consumed()


async def test_a_predicate_may_read_the_fake(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_openai.script("second", match=lambda body: len(fake_openai.requests) >= 2)
    assert await ask(client, fake_openai) == "echo: hi"
    assert await ask(client, fake_openai) == "second"


def test_bad_match_is_refused() -> None:
    fake = FakeProvider("openai")
    for bad, msg in [
        ("gpt-4o", "must be a callable"),
        ({}, "must be a callable"),
        ({"modle": "x"}, "unknown keys"),
        ({"model": 3}, "match\\['model'\\]=3"),
        ({"body": "yes"}, "match\\['body'\\]"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            fake.script("x", match=bad)  # type: ignore[arg-type]
    assert fake.pending_scripts == []
    fake.assert_all_consumed()
