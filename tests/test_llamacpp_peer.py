"""Our adapters and LLMService against a REAL peer: llama.cpp's own server (xllamacpp wheel).

The model is a tiny llama-architecture GGUF with seeded random weights, made at
test time (tests/peer/make_gguf.py); nothing is downloaded. Its text is gibberish,
but it goes through llama.cpp's real tokenizer, chat template, sampler and HTTP
server: OpenAI chat completions (plain and SSE with usage), embeddings, models,
and Anthropic ``/v1/messages`` (plain and SSE), plus real error replies.

Greedy decoding (``temperature=0``) makes each reply deterministic, so a streamed
answer must equal the plain one; the model never picks its end-of-turn token, so
every reply runs to ``max_tokens``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec
import pytest

from llmrelay import CacheConfig, ChatResponse, LLMService, LLMServiceConfig, ProviderConfig
from llmrelay._types import build_request
from llmrelay.errors import ContextLengthError, ProviderError
from llmrelay.providers import AnthropicAdapter, OpenAIAdapter, accumulate_chunks

if importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip(
        "the real llama.cpp peer needs the xllamacpp and gguf wheels (dev extra), "
        "which are not installed here (no xllamacpp wheel for this platform?)",
        allow_module_level=True,
    )

from peer.llamacpp import MODEL_ALIAS, N_CTX, LlamaCppPeer
from peer.make_gguf import N_EMBD, write_tiny_llama

MAX_TOKENS = 8
GREEDY: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": 0}
KEY = "sk-local-peer-key"  # the server has no keys set: any bearer is accepted
TOO_LONG = "the " * (N_CTX * 2)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("llamacpp") / "tiny-random.gguf")


@pytest.fixture(scope="module")
def chat_peer(tiny_model: Path) -> Iterator[str]:
    """The chat server's root URL."""
    with LlamaCppPeer(tiny_model) as peer:
        yield peer.base_url


@pytest.fixture(scope="module")
def embed_peer(tiny_model: Path) -> Iterator[str]:
    """An embeddings server (mean pooling) on the same model: its root URL."""
    with LlamaCppPeer(tiny_model, embedding=True) as peer:
        yield peer.base_url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as c:
        yield c


def openai(base: str) -> OpenAIAdapter:
    return OpenAIAdapter(deployment="llama-oa", base_url=f"{base}/v1", api_key=KEY)


def anthropic(base: str) -> AnthropicAdapter:
    return AnthropicAdapter(deployment="llama-an", base_url=base, api_key=KEY)


def check_reply(r: ChatResponse, provider: str) -> None:
    assert isinstance(r.text, str) and r.text
    assert r.message.role == "assistant" and r.message.content == r.text
    assert r.finish_reason == "length"  # ran to max_tokens
    assert r.provider == provider and r.model == MODEL_ALIAS and r.id
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens == MAX_TOKENS
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello in three words."},
]


# ---------------------------------------------------------------- OpenAI protocol


async def test_openai_chat(chat_peer: str, client: httpx.AsyncClient) -> None:
    r = await openai(chat_peer).chat(client, build_request(MESSAGES, MODEL_ALIAS, GREEDY), "x")
    check_reply(r, "llama-oa")
    again = await openai(chat_peer).chat(client, build_request(MESSAGES, MODEL_ALIAS, GREEDY), "x")
    assert again.text == r.text  # greedy: deterministic


async def test_openai_stream_equals_chat(chat_peer: str, client: httpx.AsyncClient) -> None:
    adapter = openai(chat_peer)
    req = build_request(MESSAGES, MODEL_ALIAS, GREEDY, stream=True)
    plain = await adapter.chat(client, build_request(MESSAGES, MODEL_ALIAS, GREEDY), "x")
    chunks = [c async for c in adapter.stream(client, req, "x", stream_idle_s=30.0)]
    assert len([c for c in chunks if c.text]) > 1  # really streamed, token by token
    assert chunks[-1].usage is not None  # stream_options.include_usage: usage comes last
    whole = accumulate_chunks(chunks)
    check_reply(whole, "llama-oa")
    assert whole.text == plain.text
    assert whole.usage.prompt_tokens == plain.usage.prompt_tokens


async def test_openai_stream_stopped_early_then_reused(
    chat_peer: str, client: httpx.AsyncClient
) -> None:
    adapter = openai(chat_peer)
    req = build_request("count to ten", MODEL_ALIAS, {**GREEDY, "max_tokens": 64}, stream=True)
    gen = adapter.stream(client, req, "x")
    first = await anext(gen)
    assert isinstance(first.text, str)
    await gen.aclose()  # drops the connection mid-stream; the server must cope
    r = await adapter.chat(client, build_request("count to ten", MODEL_ALIAS, GREEDY), "x")
    check_reply(r, "llama-oa")


async def test_openai_embeddings(embed_peer: str, client: httpx.AsyncClient) -> None:
    inputs = ["hello there", "the cat is on the mat", "hello there"]
    r = await openai(embed_peer).embed(client, inputs, MODEL_ALIAS)
    assert len(r.embeddings) == 3
    assert all(len(v) == N_EMBD for v in r.embeddings)
    for v in r.embeddings:  # the server L2-normalises by default
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-3)
    assert r.embeddings[0] == pytest.approx(r.embeddings[2])  # input order kept
    assert r.embeddings[0] != pytest.approx(r.embeddings[1])
    assert r.usage.prompt_tokens > 0 and r.provider == "llama-oa"


async def test_openai_list_models(chat_peer: str, client: httpx.AsyncClient) -> None:
    assert MODEL_ALIAS in await openai(chat_peer).list_models(client)


async def test_openai_context_too_long(chat_peer: str, client: httpx.AsyncClient) -> None:
    adapter = openai(chat_peer)
    with pytest.raises(ContextLengthError, match="context size") as info:
        await adapter.chat(client, build_request(TOO_LONG, MODEL_ALIAS, GREEDY), "x")
    assert info.value.status_code == 400 and not info.value.retryable
    with pytest.raises(ContextLengthError):
        async for _ in adapter.stream(client, build_request(TOO_LONG, MODEL_ALIAS, GREEDY), "x"):
            pass


async def test_openai_embeddings_on_a_chat_only_server(
    chat_peer: str, client: httpx.AsyncClient
) -> None:
    with pytest.raises(ProviderError, match="embeddings") as info:
        await openai(chat_peer).embed(client, ["hi"], MODEL_ALIAS)
    assert info.value.status_code == 501 and info.value.provider == "llama-oa"
    assert KEY not in str(info.value)


# ---------------------------------------------------------------- Anthropic protocol


async def test_anthropic_chat(chat_peer: str, client: httpx.AsyncClient) -> None:
    req = build_request(MESSAGES, MODEL_ALIAS, {**GREEDY, "stop": ["\x00"], "user": "u-1"})
    r = await anthropic(chat_peer).chat(client, req, "x")
    check_reply(r, "llama-an")
    # the same prompt through the other protocol: same template, same greedy answer
    plain = await openai(chat_peer).chat(client, build_request(MESSAGES, MODEL_ALIAS, GREEDY), "x")
    assert r.text == plain.text


async def test_anthropic_stream_equals_chat(chat_peer: str, client: httpx.AsyncClient) -> None:
    adapter = anthropic(chat_peer)
    plain = await adapter.chat(client, build_request(MESSAGES, MODEL_ALIAS, GREEDY), "x")
    req = build_request(MESSAGES, MODEL_ALIAS, GREEDY, stream=True)
    chunks = [c async for c in adapter.stream(client, req, "x", stream_idle_s=30.0)]
    assert len([c for c in chunks if c.text]) > 1
    assert chunks[-1].usage is not None and chunks[-1].finish_reason == "length"
    whole = accumulate_chunks(chunks)
    check_reply(whole, "llama-an")
    assert whole.text == plain.text


async def test_anthropic_context_too_long(chat_peer: str, client: httpx.AsyncClient) -> None:
    adapter = anthropic(chat_peer)
    with pytest.raises(ContextLengthError, match="context size"):
        await adapter.chat(client, build_request(TOO_LONG, MODEL_ALIAS, GREEDY), "x")
    with pytest.raises(ContextLengthError):
        async for _ in adapter.stream(client, build_request(TOO_LONG, MODEL_ALIAS, GREEDY), "x"):
            pass


# ---------------------------------------------------------------- the whole service


def service_config(chat_base: str, embed_base: str) -> LLMServiceConfig:
    return LLMServiceConfig(
        providers=[
            ProviderConfig(
                name="llama-oa",
                kind="openai",
                base_url=f"{chat_base}/v1",
                api_key=KEY,
                models=[MODEL_ALIAS],
            ),
            ProviderConfig(
                name="llama-an",
                kind="anthropic",
                base_url=chat_base,
                api_key=KEY,
                models=[MODEL_ALIAS],
            ),
            ProviderConfig(
                name="llama-emb",
                kind="openai",
                base_url=f"{embed_base}/v1",
                api_key=KEY,
                models=["tiny-embed"],
            ),
        ],
        default_model=f"llama-oa/{MODEL_ALIAS}",
        # the replies stop at MAX_TOKENS (finish_reason "length"): stored only when asked
        cache=CacheConfig(cache_incomplete=True),
    )


async def test_service_chat_stream_embed(chat_peer: str, embed_peer: str) -> None:
    async with LLMService(service_config(chat_peer, embed_peer)) as svc:
        answers: dict[str, str] = {}
        for name in ("llama-oa", "llama-an"):
            model = f"{name}/{MODEL_ALIAS}"
            r = await svc.achat(MESSAGES, model, **GREEDY)
            assert r.provider == name and not r.cached and r.attempts == 1
            assert r.text and r.usage.completion_tokens == MAX_TOKENS
            chunks = [c async for c in svc.astream(MESSAGES, model, **GREEDY)]
            assert "".join(c.text for c in chunks) == r.text
            assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
            again = await svc.achat(MESSAGES, model, **GREEDY)
            assert again.cached and again.text == r.text
            answers[name] = r.text
        assert answers["llama-oa"] == answers["llama-an"]

        e = await svc.aembed(["one", "two"], "llama-emb/tiny-embed")
        assert [len(v) for v in e.embeddings] == [N_EMBD, N_EMBD]

        with pytest.raises(ContextLengthError):
            await svc.achat(TOO_LONG, **GREEDY)


async def test_service_batch_runs_concurrently(chat_peer: str, embed_peer: str) -> None:
    prompts = [f"prompt number {i}" for i in range(6)]
    async with LLMService(service_config(chat_peer, embed_peer)) as svc:
        results = await svc.abatch([{"messages": p, **GREEDY} for p in prompts], concurrency=3)
    assert len(results) == len(prompts)
    for r in results:
        assert isinstance(r, ChatResponse), r
        assert r.usage.completion_tokens == MAX_TOKENS


def test_service_sync_twin(chat_peer: str, embed_peer: str) -> None:
    with LLMService(service_config(chat_peer, embed_peer)) as svc:
        r = svc.chat("hello", f"llama-an/{MODEL_ALIAS}", **GREEDY)
        assert r.provider == "llama-an" and r.text
        text = "".join(c.text for c in svc.stream("hello", f"llama-an/{MODEL_ALIAS}", **GREEDY))
        assert text == r.text


# ---------------------------------------------------------------- the peer harness itself


def test_peer_that_cannot_load_its_model_fails_fast(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"GGUF but not really")
    peer = LlamaCppPeer(bogus, start_timeout_s=30.0)
    with pytest.raises(RuntimeError, match="exited with code"):
        peer.start()
    peer.close()  # idempotent
    assert peer.log_path.exists()


# ---------------------------------------------------------------- structured output


class Verdict(msgspec.Struct):
    choice: Literal["yes", "no"]
    sure: bool


async def test_structured_output_with_a_json_schema(chat_peer: str) -> None:
    """The ``llamacpp`` kind sends the schema as ``response_format`` json_schema, which the
    server compiles to a grammar: even random weights must answer valid JSON of it."""
    cfg = LLMServiceConfig(
        providers=[ProviderConfig(name="local", kind="llamacpp", base_url=f"{chat_peer}/v1")],
        default_model=f"local/{MODEL_ALIAS}",
        cache=CacheConfig(enabled=False),
    )
    async with LLMService(cfg) as svc:
        params: dict[str, Any] = {"temperature": 0, "max_tokens": 160}
        r = await svc.achat("Answer.", response_format=Verdict, **params)
        assert isinstance(r.parsed, Verdict) and r.parsed.choice in ("yes", "no")
        assert r.attempts == 1  # valid at once: no repair was needed
        chunks = [c async for c in svc.astream("Answer.", response_format=Verdict, **params)]
        assert chunks[-1].parsed == r.parsed  # greedy: the stream says the same
