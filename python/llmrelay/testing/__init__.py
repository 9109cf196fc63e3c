"""Fake LLM provider servers for tests, demos and benchmarks.

``FakeProvider("openai" | "anthropic" | "ollama" | "azure")`` serves that provider's real wire
protocol (``azure``: OpenAI's at Azure OpenAI's deployment URLs, ``api-version`` and ``api-key``)
on 127.0.0.1 (JSON and streaming, tool calls, embeddings, model lists, errors in the
provider's shape), with scripted replies, latency, faults on demand and a log of the requests
it received. Point any client at ``fake.base_url``::

    async with FakeProvider("openai") as fake:
        fake.script("Hello!")
        fake.inject("rate_limit", times=1, retry_after=0.5)
        ...  # the first request gets a 429, the next one "Hello!"
        assert fake.request_count == 2

``fake.script("Hi", match={"model": "gpt-4o"})`` (or ``path=``, or a predicate on the JSON
body) answers only matching requests; ``fake.assert_all_consumed()`` fails on leftovers.

With pytest, the fixtures ``fake_openai``, ``fake_anthropic`` and ``fake_ollama`` (a running
fake per test, in sync and async tests alike) are registered automatically.
"""

from __future__ import annotations

from llmrelay.testing._fake import FakeProvider, Protocol, RecordedRequest
from llmrelay.testing._faults import FAULTS, FaultKind
from llmrelay.testing._ratelimit import RateLimitInfo
from llmrelay.testing._script import estimate_tokens
from llmrelay.testing._spawn import SpawnedFake

__all__ = [
    "FAULTS",
    "FakeProvider",
    "FaultKind",
    "Protocol",
    "RateLimitInfo",
    "RecordedRequest",
    "SpawnedFake",
    "estimate_tokens",
]

# (RecordedRequest keeps its module: msgspec resolves its annotations there)
for _cls in (FakeProvider, RateLimitInfo, SpawnedFake):
    _cls.__module__ = __name__
