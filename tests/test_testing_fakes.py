"""llmrelay.testing: lifecycle, scripts, the request log, rate limits, faults, the HTTP layer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pytest

from llmrelay import _core
from llmrelay.errors import ConfigError
from llmrelay.testing import FAULTS, FakeProvider, RecordedRequest

PROTOCOLS = ["openai", "anthropic", "ollama"]
HEADERS = {
    "openai": {"authorization": "Bearer test"},
    "anthropic": {"x-api-key": "test", "anthropic-version": "2023-06-01"},
    "ollama": {},
}
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}
END_MARKERS = {"openai": "data: [DONE]", "anthropic": "message_stop", "ollama": '"done":true'}


def chat_body(protocol: str, text: str = "hi", stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}]}
    body["stream"] = stream
    if protocol == "anthropic":
        body["max_tokens"] = 64
    return body


async def chat(
    client: httpx.AsyncClient, fake: FakeProvider, text: str = "hi", stream: bool = False
) -> httpx.Response:
    return await client.post(
        fake.url + PATHS[fake.protocol],
        json=chat_body(fake.protocol, text, stream),
        headers=HEADERS[fake.protocol],
    )


def reply_text(protocol: str, body: dict[str, Any]) -> str:
    if protocol == "openai":
        return str(body["choices"][0]["message"]["content"])
    if protocol == "anthropic":
        return str(body["content"][0]["text"])
    return str(body["message"]["content"])


def error_message(protocol: str, body: Any) -> str:
    """Checks the provider's error shape and returns its message."""
    if protocol == "openai":
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        return str(body["error"]["message"])
    if protocol == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        assert body["request_id"].startswith("req_")
        return str(body["error"]["message"])
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return str(body["error"])


@pytest.fixture(params=PROTOCOLS)
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeProvider]:
    async with FakeProvider(request.param) as f:
        yield f


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


# ---- construction and lifecycle -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"protocol": "gemini"}, "protocol='gemini'"),
        ({"port": 70000}, "port=70000"),
        ({"latency_s": -1.0}, "latency_s=-1.0"),
        ({"latency_s": float("nan")}, "latency_s=nan"),
        ({"stream_chunk_delay_s": -0.5}, "stream_chunk_delay_s=-0.5"),
        ({"embedding_dims": 0}, "embedding_dims=0"),
        ({"model": ""}, "model=''"),
    ],
)
def test_bad_config_names_the_parameter(kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"protocol": "openai", **kwargs}
    with pytest.raises(ConfigError, match=match):
        FakeProvider(**kwargs)


async def test_urls_follow_sdk_conventions() -> None:
    fake = FakeProvider("openai")
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.url
    async with fake:
        assert fake.url == f"http://127.0.0.1:{fake.port}" and fake.base_url == fake.url + "/v1"
        with pytest.raises(RuntimeError, match="already running"):
            await fake.start()
    await fake.stop()  # idempotent
    for protocol in ("anthropic", "ollama"):
        async with FakeProvider(protocol) as f:  # type: ignore[arg-type]
            assert f.base_url == f.url


async def test_fixtures_give_running_fakes(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider, fake_ollama: FakeProvider
) -> None:
    assert [f.protocol for f in (fake_openai, fake_anthropic, fake_ollama)] == PROTOCOLS
    assert len({f.port for f in (fake_openai, fake_anthropic, fake_ollama)}) == 3


def test_run_in_thread_serves_sync_code() -> None:
    fake = FakeProvider("ollama", model="fixed")
    with fake.run_in_thread(), httpx.Client(timeout=5.0) as c:
        for i in range(3):
            r = c.post(f"{fake.url}/api/chat", json=chat_body("ollama", f"n{i}"))
            assert r.json()["message"]["content"] == f"echo: n{i}"
            assert r.json()["model"] == "fixed"
        assert [q.json["messages"][0]["content"] for q in fake.requests] == ["n0", "n1", "n2"]
    assert fake.request_count == 3


def test_spawn_runs_a_subprocess() -> None:
    with FakeProvider.spawn("openai", model="gpt-x") as handle:
        assert handle.base_url == handle.url + "/v1"
        r = httpx.post(
            handle.base_url + "/chat/completions",
            json=chat_body("openai", "sub"),
            headers=HEADERS["openai"],
            timeout=5.0,
        )
        assert r.json()["model"] == "gpt-x" and reply_text("openai", r.json()) == "echo: sub"
    assert handle.process.returncode is not None


def test_cli_rejects_unknown_protocol() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmrelay.testing", "gemini"], capture_output=True, timeout=30
    )
    assert proc.returncode == 2 and b"invalid choice" in proc.stderr


# ---- replies, scripts and the request log -------------------------------------------------------


async def test_default_echo_then_script_queue(
    fake: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake.script("first")
    fake.script("again", times=2)
    replies = [reply_text(fake.protocol, (await chat(client, fake, "x")).json()) for _ in range(4)]
    assert replies == ["first", "again", "again", "echo: x"]


def test_script_rejects_bad_input() -> None:
    fake = FakeProvider("openai")
    with pytest.raises(ConfigError, match="not both or neither"):
        fake.script()
    with pytest.raises(ConfigError, match="not both or neither"):
        fake.script("x", embedding_dims=3)
    with pytest.raises(ConfigError, match="times=0"):
        fake.script("x", times=0)
    with pytest.raises(ConfigError, match=r"tool_calls\[0\]"):
        fake.script(tool_calls=[{"arguments": {}}])
    with pytest.raises(ConfigError, match=r"tool_calls\[0\].arguments"):
        fake.script(tool_calls=[{"name": "f", "arguments": [1]}])
    with pytest.raises(ConfigError, match="finish_reason='done'"):
        fake.script("x", finish_reason="done")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="embedding_dims=0"):
        fake.script(embedding_dims=0)


async def test_scripted_embeddings(fake_ollama: FakeProvider, client: httpx.AsyncClient) -> None:
    fake_ollama.script(embeddings=[[1.0, 0.0]])
    fake_ollama.script(embedding_dims=3)
    fake_ollama.script("chat replies do not use the embedding queue")
    url = f"{fake_ollama.url}/api/embed"
    first = (await client.post(url, json={"model": "m", "input": "a"})).json()
    second = (await client.post(url, json={"model": "m", "input": "a"})).json()
    third = (await client.post(url, json={"model": "m", "input": "a"})).json()
    assert first["embeddings"] == [[1.0, 0.0]] and len(second["embeddings"][0]) == 3
    assert len(third["embeddings"][0]) == 8  # the default again, deterministic
    assert third == (await client.post(url, json={"model": "m", "input": "a"})).json()


async def test_request_log_records_and_resets(
    fake: FakeProvider, client: httpx.AsyncClient
) -> None:
    before = time.monotonic()
    await chat(client, fake, "logged")
    (req,) = fake.requests
    assert isinstance(req, RecordedRequest)
    assert req.method == "POST" and req.path == PATHS[fake.protocol]
    assert req.json is not None and req.json["messages"][0]["content"] == "logged"
    assert req.headers["content-type"] == "application/json" and before <= req.time
    assert fake.request_count == 1
    fake.script("queued")
    fake.inject("server_error")
    fake.reset()
    assert fake.requests == [] and fake.request_count == 0
    assert reply_text(fake.protocol, (await chat(client, fake, "z")).json()) == "echo: z"


async def test_unknown_path_method_and_bad_json(
    fake: FakeProvider, client: httpx.AsyncClient
) -> None:
    r = await client.get(f"{fake.url}/nope", headers=HEADERS[fake.protocol])
    assert r.status_code == 404 and error_message(fake.protocol, r.json())
    r = await client.get(fake.url + PATHS[fake.protocol], headers=HEADERS[fake.protocol])
    assert r.status_code == 405 and error_message(fake.protocol, r.json())
    r = await client.post(
        fake.url + PATHS[fake.protocol], content=b"{nope", headers=HEADERS[fake.protocol]
    )
    assert r.status_code == 400 and error_message(fake.protocol, r.json())
    assert fake.requests[-1].json is None and fake.requests[-1].body == b"{nope"


async def test_openai_checks_the_api_key(client: httpx.AsyncClient) -> None:
    async with FakeProvider("openai", api_key="sk-right") as fake:
        url = fake.base_url + "/chat/completions"
        for headers in ({}, {"authorization": "Bearer sk-wrong"}):
            r = await client.post(url, json=chat_body("openai"), headers=headers)
            assert r.status_code == 401 and error_message("openai", r.json())
        r = await client.post(
            url, json=chat_body("openai"), headers={"authorization": "Bearer sk-right"}
        )
        assert r.status_code == 200


async def test_latency_and_chunk_delay(client: httpx.AsyncClient) -> None:
    async with FakeProvider("openai", latency_s=0.05, stream_chunk_delay_s=0.01) as fake:
        start = time.perf_counter()
        r = await chat(client, fake, "a b c", stream=True)
        assert time.perf_counter() - start >= 0.05 + 0.01 * 4
        assert r.text.endswith("data: [DONE]\n\n")


# ---- rate limits -------------------------------------------------------------------------------


async def test_rate_limit_headers_in_each_format(
    fake: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake.set_rate_limit_headers(
        limit_requests=100, remaining_requests=99, reset_requests_s=6.0, limit_tokens=1000
    )
    h = (await chat(client, fake)).headers
    if fake.protocol == "openai":
        assert h["x-ratelimit-limit-requests"] == "100"
        assert h["x-ratelimit-remaining-requests"] == "99"
        assert h["x-ratelimit-reset-requests"] == "6s" and h["x-ratelimit-limit-tokens"] == "1000"
    elif fake.protocol == "anthropic":
        assert h["anthropic-ratelimit-requests-limit"] == "100"
        assert h["anthropic-ratelimit-requests-remaining"] == "99"
        assert h["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert h["anthropic-ratelimit-tokens-limit"] == "1000"
    else:
        assert not any("ratelimit" in k for k in h)
    fake.set_rate_limit_headers()
    assert not any("ratelimit" in k for k in (await chat(client, fake)).headers)
    with pytest.raises(ConfigError, match="limit_requests=-1"):
        fake.set_rate_limit_headers(limit_requests=-1)


async def test_enforced_rate_limit_on_a_manual_clock(client: httpx.AsyncClient) -> None:
    clock = _core.ManualClock(0.0)
    async with FakeProvider("openai", clock=clock.now) as fake:
        fake.set_rate_limit(requests_per_minute=2)
        statuses = [(await chat(client, fake)).status_code for _ in range(2)]
        refused = await chat(client, fake)
        assert statuses == [200, 200] and refused.status_code == 429
        assert refused.headers["retry-after"] == "60"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        clock.advance(60.0)
        r = await chat(client, fake)
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "1"
        fake.set_rate_limit(tokens_per_minute=10)
        assert (await chat(client, fake, "word " * 40)).status_code == 429
        fake.set_rate_limit()
        assert (await chat(client, fake, "word " * 40)).status_code == 200
    with pytest.raises(ConfigError, match="requests_per_minute=0"):
        fake.set_rate_limit(requests_per_minute=0)


# ---- faults ------------------------------------------------------------------------------------

STATUS = {
    "rate_limit": (429, 429, 429),
    "server_error": (500, 500, 500),
    "unavailable": (503, 503, 503),
    "overloaded": (503, 529, 503),
    "context_length": (400, 400, 400),
    "auth": (401, 401, 401),
}


@pytest.mark.parametrize("kind", list(STATUS))
async def test_error_faults(fake: FakeProvider, client: httpx.AsyncClient, kind: str) -> None:
    fake.inject(kind, times=1)  # type: ignore[arg-type]
    r = await chat(client, fake)
    assert r.status_code == STATUS[kind][PROTOCOLS.index(fake.protocol)]
    message = error_message(fake.protocol, r.json())
    rid = "request-id" if fake.protocol == "anthropic" else "x-request-id"
    assert r.headers[rid].startswith("req_")
    if kind == "rate_limit":
        assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
    if kind == "context_length":
        expected = {"openai": "maximum context length", "anthropic": "prompt is too long",
                    "ollama": "exceeds the context length"}  # fmt: skip
        assert expected[fake.protocol] in message
    if fake.protocol == "openai":
        codes = {"rate_limit": "rate_limit_exceeded", "context_length": "context_length_exceeded",
                 "auth": "invalid_api_key"}  # fmt: skip
        assert r.json()["error"]["code"] == codes.get(kind)
    if fake.protocol == "anthropic":
        types = {
            "rate_limit": "rate_limit_error",
            "server_error": "api_error",
            "unavailable": "api_error",
            "overloaded": "overloaded_error",
            "context_length": "invalid_request_error",
            "auth": "authentication_error",
        }
        assert r.json()["error"]["type"] == types[kind]
    assert (await chat(client, fake)).status_code == 200  # times=1: only the next request


async def test_rate_limit_fault_arguments(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_openai.inject("rate_limit", times=1, retry_after=2.5, message="slow down")
    r = await chat(client, fake_openai)
    assert r.headers["retry-after"] == "3" and r.headers["retry-after-ms"] == "2500"
    assert r.json()["error"]["message"] == "slow down"
    fake_openai.inject("rate_limit", times=1, retry_after=None)
    assert "retry-after" not in (await chat(client, fake_openai)).headers


async def test_reset_closes_without_response(fake: FakeProvider, client: httpx.AsyncClient) -> None:
    fake.inject("reset", times=1)
    with pytest.raises(httpx.TransportError) as info:
        await chat(client, fake)
    assert not isinstance(info.value, httpx.TimeoutException)
    assert (await chat(client, fake)).status_code == 200


async def test_hang_times_out_and_does_not_block_stop(fake: FakeProvider) -> None:
    fake.inject("hang")
    async with httpx.AsyncClient(timeout=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            await chat(c, fake)
    async with httpx.AsyncClient(timeout=5.0) as c:
        pending = asyncio.ensure_future(chat(c, fake))
        for _ in range(500):  # bounded: wait until the fake holds the request
            if fake.request_count == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(fake.stop(), 2.0)
        with pytest.raises(httpx.TransportError):
            await pending


@pytest.mark.parametrize("after", [0, 2])
async def test_cut_stream_has_no_end_marker(
    fake: FakeProvider, client: httpx.AsyncClient, after: int
) -> None:
    full = (await chat(client, fake, "one two three", stream=True)).text
    fake.inject("cut_stream", times=1, after=after)
    r = await chat(client, fake, "one two three", stream=True)
    assert r.status_code == 200 and END_MARKERS[fake.protocol] not in r.text
    separator = "\n" if fake.protocol == "ollama" else "\n\n"
    assert r.text.count(separator) == after < full.count(separator)


async def test_cut_stream_abrupt_and_on_whole_replies(
    fake: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake.inject("cut_stream", times=1, after=1, abrupt=True)
    with pytest.raises(httpx.TransportError):
        await chat(client, fake, stream=True)
    fake.inject("cut_stream", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await chat(client, fake)


async def test_malformed_json_and_wrong_content_type(
    fake: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake.inject("malformed_json", times=2)
    r = await chat(client, fake)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(r.content)
    r = await chat(client, fake, stream=True)
    first = r.text.split("\n")[0 if fake.protocol != "anthropic" else 1]
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(first.removeprefix("data: "))
    fake.inject("wrong_content_type", times=2)
    for stream in (False, True):
        r = await chat(client, fake, stream=stream)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


async def test_slow_adds_latency(fake_openai: FakeProvider, client: httpx.AsyncClient) -> None:
    fake_openai.inject("slow", times=1, delay_s=0.05)
    start = time.perf_counter()
    assert (await chat(client, fake_openai)).status_code == 200
    assert time.perf_counter() - start >= 0.05


async def test_times_ratio_seed_and_clear(
    fake_ollama: FakeProvider, client: httpx.AsyncClient
) -> None:
    async def pattern(n: int) -> list[int]:
        return [(await chat(client, fake_ollama)).status_code for _ in range(n)]

    fake_ollama.inject("server_error", times=2)
    assert await pattern(3) == [500, 500, 200]
    fake_ollama.inject("server_error", ratio=0.5, seed=7)
    first = await pattern(20)
    fake_ollama.clear_faults()
    fake_ollama.inject("server_error", ratio=0.5, seed=7)
    assert await pattern(20) == first and 0 < first.count(500) < 20
    fake_ollama.clear_faults()
    fake_ollama.inject("server_error", ratio=0.5, seed=7, times=3)
    assert (await pattern(20)).count(500) == 3
    fake_ollama.inject("unavailable")  # always, until cleared
    fake_ollama.inject("server_error")  # never reached: the first rule fires first
    assert await pattern(2) == [503, 503]
    fake_ollama.clear_faults()
    assert await pattern(1) == [200]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fault": "explode"}, "fault='explode'"),
        ({"fault": "reset", "times": 0}, "times=0"),
        ({"fault": "reset", "ratio": 1.5}, "ratio=1.5"),
        ({"fault": "reset", "seed": 3}, "seed=3"),
        ({"fault": "reset", "after": 3}, "after=3"),
        ({"fault": "cut_stream", "after": -1}, "after=-1"),
        ({"fault": "slow", "delay_s": -1}, "delay_s=-1"),
        ({"fault": "rate_limit", "retry_after": "soon"}, "retry_after='soon'"),
        ({"fault": "cut_stream", "abrupt": 1}, "abrupt=1"),
    ],
)
def test_inject_rejects_bad_input(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FakeProvider("openai").inject(**kwargs)


def test_fault_list_is_complete() -> None:
    assert set(FAULTS) == {*STATUS, "reset", "hang", "cut_stream", "malformed_json",
                           "wrong_content_type", "slow"}  # fmt: skip


# ---- official clients against faults -------------------------------------------------------------


async def test_official_clients_classify_faults(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    # a generous timeout for answers (the fake shares this loop); only the hang gets a short one
    async with openai.AsyncOpenAI(
        base_url=fake_openai.base_url, api_key="t", max_retries=1, timeout=10.0
    ) as c:
        fake_openai.inject("rate_limit", times=1, retry_after=0.01)
        r = await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content == "echo: x" and fake_openai.request_count == 2
        c0 = c.with_options(max_retries=0)
        for fault, exc in (
            ("rate_limit", openai.RateLimitError),
            ("context_length", openai.BadRequestError),
            ("reset", openai.APIConnectionError),
            ("hang", openai.APITimeoutError),
        ):
            fake_openai.inject(fault, times=1)  # type: ignore[arg-type]
            client = c0.with_options(timeout=0.3) if fault == "hang" else c0
            with pytest.raises(exc):
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}]
                )
    async with anthropic.AsyncAnthropic(
        base_url=fake_anthropic.base_url, api_key="t", max_retries=0
    ) as a:
        for fault, aexc in (
            ("overloaded", anthropic.OverloadedError),
            ("rate_limit", anthropic.RateLimitError),
            ("auth", anthropic.AuthenticationError),
        ):
            fake_anthropic.inject(fault, times=1)  # type: ignore[arg-type]
            with pytest.raises(aexc):
                await a.messages.create(
                    model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
                )
