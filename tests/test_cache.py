"""The memory tier and the hybrid cache of ``llmrelay._core``, driven by a manual clock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from llmrelay import _core, errors


def test_cache_key_is_16_scoped_bytes() -> None:
    k = _core.cache_key(b"hello")
    assert isinstance(k, bytes) and len(k) == 16
    assert k == _core.cache_key(b"hello", "")
    assert k != _core.cache_key(b"hello", "ns")
    assert _core.cache_key(b"b", "a") != _core.cache_key(b"", "ab")
    with pytest.raises(errors.InvalidRequestError, match="scope"):
        _core.cache_key(b"x", "a\0b")


def test_memory_set_get_delete_clear() -> None:
    c = _core.MemoryCache()
    assert c.get(b"k") is None
    c.set(b"k", b"v" * 2048)
    assert c.get(b"k") == b"v" * 2048
    c.set(b"k", b"new")
    assert c.get(b"k") == b"new"
    assert len(c) == 1
    assert c.delete(b"k") is True
    assert c.delete(b"k") is False
    c.set(b"a", b"1")
    c.clear()
    assert c.get(b"a") is None and len(c) == 0
    s = c.stats()
    assert s["hits"] == 2 and s["misses"] == 2 and s["inserts"] == 3 and s["bytes"] == 0


def test_memory_ttl_follows_the_manual_clock() -> None:
    clock = _core.ManualClock()
    c = _core.MemoryCache(ttl_s=10.0, clock=clock)
    c.set(b"default", b"d")
    c.set(b"short", b"s", ttl_s=1.0)
    clock.advance(0.999)
    assert c.get(b"short") == b"s"
    clock.advance(0.001)
    assert c.get(b"short") is None
    assert c.get(b"default") == b"d"
    clock.advance(9.0)
    assert c.get(b"default") is None
    assert c.stats()["expired"] == 2
    assert len(c) == 0


@pytest.mark.parametrize("eviction", ["tinylfu", "lru"])
def test_memory_evicts_by_entries(eviction: str) -> None:
    c = _core.MemoryCache(memory_max_entries=10, eviction=eviction)
    for i in range(100):
        c.set(i.to_bytes(4, "big"), b"x")
    assert len(c) <= 10
    s = c.stats()
    assert s["evictions"] + s["entries"] == 100


def test_memory_evicts_by_bytes() -> None:
    c = _core.MemoryCache(memory_max_entries=1000, memory_max_bytes=10_000, eviction="lru")
    for i in range(50):
        c.set(bytes([i]), b"x" * 999)
    s = c.stats()
    assert s["bytes"] <= 10_000 and s["entries"] == 10 and s["evictions"] == 40


def test_memory_is_thread_safe() -> None:
    c = _core.MemoryCache(memory_max_entries=100)

    def work(n: int) -> None:
        for i in range(200):
            key = bytes([n, i % 50])
            c.set(key, key * 3)
            got = c.get(key)
            assert got is None or got == key * 3

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(c) <= 100


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"memory_max_entries": 0}, "memory_max_entries=0"),
        ({"memory_max_entries": -3}, "memory_max_entries=-3"),
        ({"memory_max_bytes": 0}, "memory_max_bytes=0"),
        ({"ttl_s": float("nan")}, "ttl_s=NaN"),
        ({"ttl_s": -1.0}, "ttl_s=-1"),
        ({"eviction": "fifo"}, "eviction=fifo"),
    ],
)
def test_memory_bad_config(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(errors.ConfigError, match=needle):
        _core.MemoryCache(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match=needle):
        _core.HybridCache(**kwargs)  # type: ignore[arg-type]


def test_bad_ttl_on_set() -> None:
    for c in (_core.MemoryCache(), _core.HybridCache()):
        with pytest.raises(errors.ConfigError, match="ttl_s=NaN"):
            c.set(b"k", b"v", ttl_s=float("nan"))
        with pytest.raises(errors.ConfigError, match="ttl_s=0"):
            c.set(b"k", b"v", ttl_s=0.0)
        assert c.get(b"k") is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"promotion": "sometimes"}, "promotion=sometimes"),
        ({"promote_after": 0}, "promote_after=0"),
        ({"write_mode": "later"}, "write_mode=later"),
        ({"disk_max_bytes": -1}, "disk_max_bytes=-1"),
        ({"flush_every_ms": 0}, "flush_every_ms=0"),
    ],
)
def test_hybrid_bad_config(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(errors.ConfigError, match=needle):
        _core.HybridCache(**kwargs)  # type: ignore[arg-type]


def test_hybrid_memory_only() -> None:
    c = _core.HybridCache(memory_max_entries=100)
    assert not c.disk_enabled and c.disk_error is None
    c.set(b"k", b"v")
    assert c.get(b"k") == b"v" and c.get_memory(b"k") == b"v"
    assert c.get(b"missing") is None
    assert len(c) == 1 and c.memory_entries == 1
    c.flush()
    c.close()
    c.close()
    c.set(b"k2", b"v2")
    assert c.get(b"k2") == b"v2"
    s = c.stats()
    assert s["hits"] == 3 and s["misses"] == 1 and s["disk_disabled"] == 0


def test_hybrid_promotes_on_hit(tmp_path: Path) -> None:
    c = _core.HybridCache(memory_max_entries=2, disk_path=str(tmp_path / "c"), eviction="lru")
    for key in (b"a", b"b", b"c", b"d"):
        c.set(key, key * 10)
    assert len(c) <= 2
    assert c.get_memory(b"a") is None
    assert c.get(b"a") == b"a" * 10  # from disk
    assert c.get_memory(b"a") == b"a" * 10  # promoted
    s = c.stats()
    assert s["disk_hits"] == 1 and s["promotions"] == 1
    assert s["memory_evictions"] >= 2 and s["disk_entries"] == 4
    c.close()


def test_hybrid_promotes_after_n_hits(tmp_path: Path) -> None:
    c = _core.HybridCache(disk_path=str(tmp_path / "c"), promotion="after_n_hits", promote_after=3)
    c.set(b"k", b"v")
    assert c.delete(b"k")
    c.set(b"k", b"v")
    c.close()
    c2 = _core.HybridCache(disk_path=str(tmp_path / "c"), promotion="after_n_hits", promote_after=3)
    for _ in range(2):
        assert c2.get(b"k") == b"v"
        assert c2.get_memory(b"k") is None
    assert c2.get(b"k") == b"v"
    assert c2.get_memory(b"k") == b"v"
    assert c2.stats()["promotions"] == 1
    c2.close()


def test_hybrid_ttl_reaches_both_tiers(tmp_path: Path) -> None:
    clock = _core.ManualClock()
    c = _core.HybridCache(disk_path=str(tmp_path / "c"), ttl_s=10.0, clock=clock)
    c.set(b"k", b"v")
    c.set(b"short", b"v", ttl_s=1.0)
    clock.advance(1.0)
    assert c.get(b"short") is None
    clock.advance(9.0)
    assert c.get(b"k") is None
    s = c.stats()
    assert s["memory_expired"] == 2 and s["disk_expired"] == 2 and s["hits"] == 0
    c.close()


def test_hybrid_write_behind_flush_and_close(tmp_path: Path) -> None:
    path = str(tmp_path / "c")
    c = _core.HybridCache(disk_path=path, write_mode="write_behind", flush_every_ms=None)
    for i in range(200):
        c.set(i.to_bytes(2, "big"), b"v" * 100)
    c.flush()
    s = c.stats()
    assert s["write_behind_queued"] == 200 and s["disk_entries"] == 200
    c.set(b"last", b"x")
    c.close()
    assert not c.disk_enabled
    assert c.get(b"last") == b"x"  # memory still works
    again = _core.HybridCache(disk_path=path)
    assert again.get(b"last") == b"x"
    assert again.stats()["disk_hits"] == 1
    again.clear()
    assert again.get(b"last") is None
    again.close()
