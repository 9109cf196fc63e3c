"""pytest-benchmark of the cache tiers from Python: 2 KB values, 16-byte keys.

Targets: a memory-tier get <= 1 us, a disk-tier get <= 20 us (see `make bench`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmrelay import _core

VALUE = b"\x5a" * 2048
KEYS = [_core.cache_key(i.to_bytes(4, "little"), "bench") for i in range(1_000)]


@pytest.fixture
def hybrid(tmp_path: Path) -> Iterator[_core.HybridCache]:
    c = _core.HybridCache(disk_path=str(tmp_path / "h"), ttl_s=3600.0)
    for k in KEYS:
        c.set(k, VALUE)
    yield c
    c.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[_core.DiskCache]:
    c = _core.DiskCache(str(tmp_path / "d"))
    for k in KEYS:
        c.set(k, VALUE)
    yield c
    c.close()


def test_cache_key_1k(benchmark: Any) -> None:
    data = b"x" * 1024
    assert len(benchmark(_core.cache_key, data, "chat")) == 16


@pytest.mark.parametrize("eviction", ["tinylfu", "lru"])
def test_memory_get_2k(benchmark: Any, eviction: str) -> None:
    c = _core.MemoryCache(eviction=eviction)
    key = KEYS[0]
    c.set(key, VALUE)
    assert benchmark(c.get, key) == VALUE


def test_memory_set_2k(benchmark: Any) -> None:
    c = _core.MemoryCache()
    benchmark(c.set, KEYS[1], VALUE)
    assert c.get(KEYS[1]) == VALUE


def test_hybrid_get_memory_2k(benchmark: Any, hybrid: _core.HybridCache) -> None:
    assert benchmark(hybrid.get_memory, KEYS[2]) == VALUE


def test_hybrid_get_2k_memory_hit(benchmark: Any, hybrid: _core.HybridCache) -> None:
    assert benchmark(hybrid.get, KEYS[3]) == VALUE


def test_hybrid_set_2k_write_through(benchmark: Any, hybrid: _core.HybridCache) -> None:
    benchmark(hybrid.set, KEYS[4], VALUE)
    assert hybrid.get(KEYS[4]) == VALUE


def test_disk_get_2k(benchmark: Any, disk: _core.DiskCache) -> None:
    assert benchmark(disk.get, KEYS[5]) == VALUE


def test_disk_set_2k(benchmark: Any, disk: _core.DiskCache) -> None:
    benchmark(disk.set, KEYS[6], VALUE)
    assert disk.get(KEYS[6]) == VALUE


def test_hybrid_get_2k_disk_hit(benchmark: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "h")
    writer = _core.HybridCache(disk_path=path)
    writer.set(KEYS[7], VALUE)
    writer.close()
    # a fresh memory tier that never promotes: every get goes to disk
    c = _core.HybridCache(disk_path=path, promotion="after_n_hits", promote_after=2**31 - 1)
    assert benchmark(c.get, KEYS[7]) == VALUE
    assert c.get_memory(KEYS[7]) is None
    c.close()


def test_hybrid_set_2k_write_behind(benchmark: Any, tmp_path: Path) -> None:
    c = _core.HybridCache(disk_path=str(tmp_path / "wb"), write_mode="write_behind")
    benchmark(c.set, KEYS[8], VALUE)
    c.flush()
    assert c.stats()["disk_entries"] == 1
    c.close()
