"""Cache modes (read_write, read_only, write_only, replay), sample-indexed keys, and the
rule that empty and length-cut replies are not stored unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelay import CacheConfig, CacheControl, LLMService, LLMServiceConfig
from llmrelay.errors import CacheMissError, ConfigError, InvalidRequestError, LLMRelayError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory

HOT = {"temperature": 0.9}  # not cacheable without a sample


def _count(svc: LLMService, name: str) -> int:
    return svc.metrics.snapshot().total(name)


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"mode": "sometimes"}, "cache.mode"),
        ({"sample": -1}, "cache.sample"),
        ({"sample": True}, "cache.sample"),
        ({"sample": 1.5}, "cache.sample"),
        ({"mode": "replay", "refresh": True}, "cache.refresh"),
        ({"mode": "read_only", "refresh": True}, "cache.refresh"),
        ({"mode": "replay", "skip": True}, "cache.skip"),
        ({"cache_incomplete": "yes"}, "cache.cache_incomplete"),
    ],
)
def test_bad_cache_control_is_refused_with_its_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        CacheControl(**kw)  # type: ignore[arg-type]
    assert info.value.field == field


async def test_bad_cache_dict_fails_before_sending(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config()) as svc:
        with pytest.raises(InvalidRequestError) as info:
            await svc.achat("x", cache={"mode": "never"})
        assert info.value.field is not None and info.value.field.startswith("cache")
        with pytest.raises(InvalidRequestError):
            await svc.achat("x", cache={"sample": -3})
    assert fakes["openai"].request_count == 0


def test_replay_with_the_cache_disabled_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        CacheConfig(enabled=False, mode="replay")
    assert info.value.field == "mode"
    with pytest.raises(ConfigError):
        LLMServiceConfig.from_dict({"cache": {"mode": "often"}})


async def test_refresh_under_a_replay_service_is_refused(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(make_config(cache=CacheConfig(mode="replay"))) as svc:
        with pytest.raises(InvalidRequestError) as info:
            await svc.achat("x", temperature=0, cache=CacheControl(refresh=True))
        assert info.value.field == "cache.refresh"
    assert fakes["openai"].request_count == 0


# ---- modes ----------------------------------------------------------------------------------


async def test_read_only_reads_but_never_stores(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    oa = fakes["openai"]
    async with LLMService(make_config()) as svc:
        ro = CacheControl(mode="read_only")
        a = await svc.achat("ro", temperature=0, cache=ro)
        b = await svc.achat("ro", temperature=0, cache=ro)
        assert not a.cached and not b.cached and oa.request_count == 2
        await svc.achat("ro", temperature=0)  # read_write stores it
        c = await svc.achat("ro", temperature=0, cache=ro)
        assert c.cached and oa.request_count == 3


async def test_write_only_stores_but_never_reads(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    oa = fakes["openai"]
    async with LLMService(make_config()) as svc:
        wo = CacheControl(mode="write_only")
        oa.script("first")
        oa.script("second")
        a = await svc.achat("wo", temperature=0, cache=wo)
        b = await svc.achat("wo", temperature=0, cache=wo)
        assert (a.text, b.text) == ("first", "second") and not b.cached
        c = await svc.achat("wo", temperature=0)
        assert c.cached and c.text == "second"  # the last write wins
        assert oa.request_count == 2


def test_write_only_sync_chat_never_reads_the_memory_tier(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    oa = fakes["openai"]
    with LLMService(make_config()) as svc:
        svc.chat("sync", temperature=0)
        r = svc.chat("sync", temperature=0, cache=CacheControl(mode="write_only"))
        assert not r.cached and oa.request_count == 2


async def test_replay_answers_hits_and_raises_a_typed_miss(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    oa = fakes["openai"]
    async with LLMService(make_config()) as svc:
        await svc.achat("known", temperature=0)
        rp = CacheControl(mode="replay")
        hit = await svc.achat("known", temperature=0, cache=rp)
        assert hit.cached
        with pytest.raises(CacheMissError) as info:
            await svc.achat("unknown", temperature=0, cache=rp)
        assert info.value.reason == "miss" and info.value.model == "openai/gpt-4o-mini"
        assert isinstance(info.value, LLMRelayError) and not info.value.retryable
        with pytest.raises(CacheMissError) as info:
            await svc.achat("known", cache=rp, **HOT)  # not cacheable: never sent either
        assert info.value.reason == "not_cacheable"
        chunks = [c.text async for c in svc.astream("known", temperature=0, cache=rp)]
        assert "".join(chunks) == hit.text
        with pytest.raises(CacheMissError):
            async for _ in svc.astream("unknown stream", temperature=0, cache=rp):
                pass
    assert oa.request_count == 1


def test_replay_from_the_config_default_sync_and_batch(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    oa = fakes["openai"]
    disk = str(tmp_path / "cache")
    with LLMService(make_config(cache=CacheConfig(disk_path=disk))) as svc:
        svc.chat("persisted", temperature=0)
    with LLMService(make_config(cache=CacheConfig(disk_path=disk, mode="replay"))) as svc:
        r = svc.chat("persisted", temperature=0)
        assert r.cached
        out = svc.batch(["persisted", "absent"], temperature=0)
        assert out[0].cached  # type: ignore[union-attr]
        assert isinstance(out[1], CacheMissError)
        # a per-call mode overrides the config's
        live = svc.chat("absent", temperature=0, cache=CacheControl(mode="read_write"))
        assert not live.cached
    assert oa.request_count == 2


async def test_replay_when_a_middleware_changes_the_request(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    import msgspec

    async def rewrite(req, call_next):  # type: ignore[no-untyped-def]
        return await call_next(msgspec.structs.replace(req, temperature=0.0))

    async with LLMService(make_config(cache=CacheConfig(mode="replay")), middleware=[rewrite]) as s:
        with pytest.raises(CacheMissError) as info:
            await s.achat("changed", temperature=0)
        assert info.value.reason == "changed"
    assert fakes["openai"].request_count == 0


# ---- samples --------------------------------------------------------------------------------


async def test_each_sample_is_cached_apart_at_any_temperature(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    oa = fakes["openai"]
    async with LLMService(make_config()) as svc:
        for i in range(3):
            oa.script(f"answer {i}")
        first = [
            (await svc.achat("pass@k", cache=CacheControl(sample=i), **HOT)).text for i in range(3)
        ]
        assert first == ["answer 0", "answer 1", "answer 2"]
        again = [await svc.achat("pass@k", cache={"sample": i}, **HOT) for i in range(3)]
        assert [r.text for r in again] == first and all(r.cached for r in again)
        assert oa.request_count == 3
        # without a sample the hot request is not cached, and is its own key
        await svc.achat("pass@k", **HOT)
        await svc.achat("pass@k", **HOT)
        assert oa.request_count == 5
        # sample 0 and no sample are different entries even at temperature 0
        oa.script("plain")
        oa.script("sampled")
        plain = await svc.achat("det", temperature=0)
        s0 = await svc.achat("det", temperature=0, cache=CacheControl(sample=0))
        assert (plain.text, s0.text) == ("plain", "sampled")


async def test_samples_in_flight_do_not_join_each_other(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    import asyncio

    oa = fakes["openai"]
    oa.latency_s = 0.05
    async with LLMService(make_config()) as svc:
        rs = await asyncio.gather(
            *(svc.achat("same", cache=CacheControl(sample=i % 4), **HOT) for i in range(8))
        )
    assert oa.request_count == 4  # four samples, each sent once: its twin joined it
    assert sum(r.attempts == 0 for r in rs) == 4


# ---- incomplete replies ---------------------------------------------------------------------


async def test_length_cut_and_empty_replies_are_not_stored_unless_asked(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    oa = fakes["openai"]
    async with LLMService(make_config()) as svc:
        oa.script("cut sh", finish_reason="length")
        oa.script("")
        await svc.achat("cut", temperature=0)
        await svc.achat("empty", temperature=0)
        again = await svc.achat("cut", temperature=0)
        assert not again.cached and oa.request_count == 3
        assert _count(svc, "cache_skipped.incomplete") == 2
        oa.script("cut again", finish_reason="length")
        await svc.achat("kept", temperature=0, cache=CacheControl(cache_incomplete=True))
        kept = await svc.achat("kept", temperature=0)
        assert kept.cached and kept.finish_reason == "length"
    async with LLMService(make_config(cache=CacheConfig(cache_incomplete=True))) as svc:
        oa.script("cut", finish_reason="length")
        await svc.achat("cfg", temperature=0)
        assert (await svc.achat("cfg", temperature=0)).cached
        oa.script("cut", finish_reason="length")
        await svc.achat("off", temperature=0, cache=CacheControl(cache_incomplete=False))
        assert not (await svc.achat("off", temperature=0)).cached


async def test_errors_are_never_cached(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    oa = fakes["openai"]
    async with LLMService(make_config()) as svc:
        oa.inject("context_length", times=1)
        with pytest.raises(LLMRelayError):
            await svc.achat("err", temperature=0)
        r = await svc.achat("err", temperature=0)
        assert not r.cached and oa.request_count == 2


async def test_streams_follow_the_modes(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    oa = fakes["openai"]
    async with LLMService(make_config()) as svc:
        wo = CacheControl(mode="write_only")
        oa.script("streamed once")
        oa.script("streamed twice")
        first = "".join([c.text async for c in svc.astream("s", temperature=0, cache=wo)])
        second = "".join([c.text async for c in svc.astream("s", temperature=0, cache=wo)])
        assert (first, second) == ("streamed once", "streamed twice")
        ro = CacheControl(mode="read_only")
        hit = "".join([c.text async for c in svc.astream("s", temperature=0, cache=ro)])
        assert hit == "streamed twice" and oa.request_count == 2
        oa.script("not kept")
        "".join([c.text async for c in svc.astream("fresh", temperature=0, cache=ro)])
        with pytest.raises(CacheMissError):
            await svc.achat("fresh", temperature=0, cache=CacheControl(mode="replay"))
