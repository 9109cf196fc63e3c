"""The sled disk tier: persistence, TTL, byte budget, locking and repair; never raising on I/O."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from llmrelay import _core, errors


def test_set_get_delete_clear(tmp_path: Path) -> None:
    c = _core.DiskCache(str(tmp_path / "d"))
    assert c.enabled and c.error is None
    assert c.get(b"k") is None
    c.set(b"k", b"v" * 2048)
    assert c.get(b"k") == b"v" * 2048
    assert len(c) == 1
    assert c.delete(b"k") is True
    assert c.delete(b"k") is False
    c.set(b"a", b"1")
    c.clear()
    assert c.get(b"a") is None and len(c) == 0
    s = c.stats()
    assert s["hits"] == 1 and s["misses"] == 2 and s["disabled"] == 0
    c.close()


def test_survives_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    c = _core.DiskCache(path)
    c.set(b"k", b"persisted")
    c.flush()
    c.close()
    c.close()
    assert not c.enabled
    assert c.get(b"k") is None
    c.set(b"ignored", b"x")  # closed: a dropped write, not an error
    again = _core.DiskCache(path)
    assert again.get(b"k") == b"persisted"
    assert again.get(b"ignored") is None
    assert len(again) == 1
    again.close()


def test_ttl_with_manual_clock(tmp_path: Path) -> None:
    clock = _core.ManualClock(100.0)
    c = _core.DiskCache(str(tmp_path / "d"), clock=clock)
    c.set(b"k", b"v", ttl_s=5.0)
    c.set(b"forever", b"v")
    clock.advance(4.9)
    assert c.get(b"k") == b"v"
    clock.advance(0.1)
    assert c.get(b"k") is None
    assert c.get(b"forever") == b"v"
    assert c.stats()["expired"] == 1 and len(c) == 1
    c.close()


def test_evicts_oldest_over_budget(tmp_path: Path) -> None:
    c = _core.DiskCache(str(tmp_path / "d"), max_bytes=10_000)
    for i in range(100):
        c.set(bytes([i]), b"x" * 500)
    s = c.stats()
    assert s["bytes"] <= 10_000 and s["evictions"] > 0
    assert c.get(bytes([0])) is None
    assert c.get(bytes([99])) == b"x" * 500
    c.set(b"huge", b"x" * 20_000)
    assert c.get(b"huge") is None and c.stats()["oversize"] == 1
    c.close()


def test_locked_path_in_same_process_degrades(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    first = _core.DiskCache(path)
    second = _core.DiskCache(path)
    assert first.enabled
    assert not second.enabled
    assert second.error is not None and "in use" in second.error
    second.set(b"k", b"v")
    assert second.get(b"k") is None
    assert second.delete(b"k") is False
    second.flush()
    second.close()
    assert second.stats()["disabled"] == 1
    hybrid = _core.HybridCache(disk_path=path)
    assert not hybrid.disk_enabled and hybrid.disk_error is not None
    hybrid.set(b"k", b"v")
    assert hybrid.get(b"k") == b"v"  # memory still serves
    assert hybrid.stats()["disk_disabled"] == 1
    first.close()


HOLD = """
import sys
import threading
from llmrelay import _core
c = _core.DiskCache(sys.argv[1])
print("ready" if c.enabled else "failed", flush=True)
sys.stdin.readline()
c.close()
"""


def test_locked_path_in_another_process_degrades(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            c = _core.HybridCache(disk_path=path)
            assert not c.disk_enabled
            assert c.disk_error is not None
            c.set(b"k", b"v")
            assert c.get(b"k") == b"v"
        finally:
            proc.communicate("\n", timeout=30)
    assert proc.returncode == 0
    again = _core.DiskCache(path)
    assert again.enabled
    again.close()


def test_corrupt_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "d"
    c = _core.DiskCache(str(path))
    c.set(b"k", b"v")
    c.close()
    (path / "conf").write_bytes(b"\xff\xfe not a sled config \x00")
    fresh = _core.DiskCache(str(path))
    assert fresh.enabled
    assert fresh.stats()["recovered"] == 1
    assert fresh.get(b"k") is None
    fresh.set(b"k", b"new")
    assert fresh.get(b"k") == b"new"
    assert len(list(tmp_path.glob("d.corrupt-*"))) == 1
    fresh.close()


def test_unwritable_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    bad = str(blocker / "sub")
    with pytest.raises(errors.ConfigError, match="path=") as info:
        _core.DiskCache(bad)
    assert bad in str(info.value)
    with pytest.raises(errors.ConfigError, match="disk_path=") as info:
        _core.HybridCache(disk_path=bad)
    assert bad in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_bytes": 0}, "max_bytes=0"),
        ({"flush_every_ms": -5}, "flush_every_ms=-5"),
    ],
)
def test_bad_config(tmp_path: Path, kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(errors.ConfigError, match=needle):
        _core.DiskCache(str(tmp_path / "d"), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match="path"):
        _core.DiskCache("")
    with pytest.raises(errors.ConfigError, match="ttl_s=NaN"):
        c = _core.DiskCache(str(tmp_path / "ok"))
        try:
            c.set(b"k", b"v", ttl_s=float("nan"))
        finally:
            c.close()


@pytest.mark.parametrize("write_mode", ["write_through", "write_behind"])
def test_hybrid_threads_never_see_a_wrong_value(tmp_path: Path, write_mode: str) -> None:
    c = _core.HybridCache(
        memory_max_entries=8,
        disk_path=str(tmp_path / "h"),
        disk_max_bytes=50_000,
        write_mode=write_mode,
    )
    failures: list[bytes] = []

    def work(n: int) -> None:
        for i in range(300):
            key = bytes([n, i % 40])
            c.set(key, key * 50)
            got = c.get(key)
            if got is not None and got != key * 50:
                failures.append(key)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    c.flush()
    assert failures == []
    s = c.stats()
    assert s["disk_bytes"] <= 50_000 and s["disk_errors"] == 0
    c.close()


def test_second_process_on_the_same_path_does_not_block_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A path held by another process disables the tier at once (no lock wait: only a
    handle this process just closed is waited for), visible in the snapshot, with a
    warning that says what to do."""
    import logging

    from llmrelay import CacheConfig, LLMService, LLMServiceConfig, ProviderConfig

    path = tmp_path / "shared"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from llmrelay import _core; c = _core.DiskCache(sys.argv[1]);"
            " print('ready', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        config = LLMServiceConfig(
            providers=[ProviderConfig(name="e", kind="echo")],
            default_model="e/echo",
            cache=CacheConfig(disk_path=str(path)),
        )
        with caplog.at_level(logging.WARNING, logger="llmrelay"):
            svc = LLMService(config)
        snap = svc.metrics.snapshot()
        svc.close()
    finally:
        holder.communicate("", timeout=30)
    assert snap.cache["disk_lock_waits"] == 0
    assert snap.disk_tier["enabled"] is False
    assert "in use by another handle" in snap.disk_tier["error"]
    assert any("its own disk_path" in m for m in caplog.messages)
