"""Crash safety of the disk tier: SIGKILL mid-write, flipped and truncated files, a held lock.

Values written here carry their own key and a checksum, so a read can tell a right
value from a wrong or partial one. Damage is checked in a child process, so a crash
would show as its exit status rather than take the test run down.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmrelay import CacheConfig, LLMService, _core
from service_helpers import ConfigFactory
from soak_helpers import count, report

# a value: key | sha256(key + payload) | payload, so a read can prove it whole and right
COMMON = """
import hashlib, os, random, sys
from llmrelay import _core

def value_for(key: bytes, rng: random.Random) -> bytes:
    payload = os.urandom(rng.choice((16, 200, 4_000, 40_000)))
    return key + b"|" + hashlib.sha256(key + payload).hexdigest().encode() + b"|" + payload

def check(key: bytes, value: bytes) -> None:
    k, digest, payload = value.split(b"|", 2)
    assert k == key, (key, k)
    assert hashlib.sha256(key + payload).hexdigest().encode() == digest, key

def keys(n: int) -> list[bytes]:
    return [f"crash-key-{i}".encode() for i in range(n)]
"""

WRITER = (
    COMMON
    + """
path, seed, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
if kind == "hybrid":
    cache = _core.HybridCache(disk_path=path, memory_max_entries=64,
                              write_mode=rng.choice(("write_through", "write_behind")),
                              flush_every_ms=rng.choice((None, 5, 500)))
else:
    cache = _core.DiskCache(path, flush_every_ms=rng.choice((None, 5, 500)))
ks = keys(300)
for n in range(1, 10**9):
    key = rng.choice(ks)
    op = rng.random()
    if op < 0.8:
        cache.set(key, value_for(key, rng))
    elif op < 0.9:
        cache.delete(key)
    elif op < 0.95:
        cache.flush()
    else:
        got = cache.get(key)
        if got is not None:
            check(key, got)
    if n % 25 == 0:
        print(n, flush=True)
"""
)

VERIFY = (
    COMMON
    + """
path = sys.argv[1]
cache = _core.DiskCache(path)
enabled = int(cache.enabled)
assert enabled, cache.error
found = 0
for key in keys(300):
    got = cache.get(key)
    if got is not None:
        check(key, got)
        found += 1
rng = random.Random(1)
for key in keys(300)[:20]:  # still writable after the damage
    v = value_for(key, rng)
    cache.set(key, v)
    assert cache.get(key) == v
st = cache.stats()
cache.close()
print(found, enabled, st["recovered"], st["corrupt"], flush=True)
"""
)

HOLDER = """
import sys
from llmrelay import _core
cache = _core.DiskCache(sys.argv[1])
assert cache.enabled, cache.error
print("holding", flush=True)
sys.stdin.readline()
cache.close()
"""


def _run(script: str, *args: str, timeout: float = 60) -> str:
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    return out.stdout


def _kill_mid_write(path: Path, seed: int, kind: str, rng: random.Random) -> int:
    """Start a writer, SIGKILL it after a random number of operations; the ops it reported."""
    target = rng.randrange(25, 800)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(seed), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while done < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            done = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
    assert done >= target, f"writer stopped early at {done}: {err[-2000:]}"
    return done


def _verify_here(path: Path) -> int:
    cache = _core.DiskCache(str(path))
    try:
        assert cache.enabled, cache.error
        n = 0
        for i in range(300):
            key = f"crash-key-{i}".encode()
            got = cache.get(key)
            if got is not None:
                k, digest, payload = got.split(b"|", 2)
                assert k == key and hashlib.sha256(key + payload).hexdigest().encode() == digest
                n += 1
        return n
    finally:
        cache.close()


def test_sigkill_mid_write_never_corrupts(tmp_path: Path) -> None:
    rounds = count(20, 100)
    rng = random.Random(2024)
    path = tmp_path / "cache"
    ops = 0
    found = []
    started = time.perf_counter()
    for r in range(rounds):
        ops += _kill_mid_write(path, r, "hybrid" if r % 2 else "disk", rng)
        # every reopen succeeds; every value read back is whole and the right one
        found.append(_verify_here(path))
    assert max(found) > 0
    report(
        "crash_sigkill",
        {
            "kills": rounds,
            "writer_ops_before_kill": ops,
            "entries_verified_per_reopen_max": max(found),
            "wall_s": round(time.perf_counter() - started, 2),
        },
    )


def _fill(path: Path) -> None:
    cache = _core.DiskCache(str(path))
    rng = random.Random(5)
    for i in range(300):
        key = f"crash-key-{i}".encode()
        payload = rng.randbytes(rng.choice((16, 200, 4_000)))
        digest = hashlib.sha256(key + payload).hexdigest().encode()
        cache.set(key, key + b"|" + digest + b"|" + payload)
    cache.close()


def _sled_files(path: Path) -> list[Path]:
    files = [f for f in path.rglob("*") if f.is_file() and f.stat().st_size > 0]
    assert files
    return files


@pytest.mark.parametrize("damage", ["flip", "truncate", "zero", "delete"])
def test_damaged_files_become_misses_or_a_fresh_db(tmp_path: Path, damage: str) -> None:
    rounds = count(4, 30)
    rng = random.Random(sum(map(ord, damage)))
    left, recovered, corrupt = [], 0, 0
    for r in range(rounds):
        path = tmp_path / f"c{r}"
        _fill(path)
        files = sorted(_sled_files(path))
        f = files[r % len(files)]  # one file per round: each of sled's files gets its turn
        data = bytearray(f.read_bytes())
        if damage == "flip":
            for _ in range(rng.randrange(1, 64)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
            f.write_bytes(bytes(data))
        elif damage == "truncate":
            f.write_bytes(bytes(data[: rng.randrange(len(data))]))
        elif damage == "zero":
            start = rng.randrange(len(data))
            end = min(len(data), start + rng.randrange(1, 4096))
            data[start:end] = bytes(end - start)
            f.write_bytes(bytes(data))
        else:
            f.unlink()
        # repaired in place or moved aside and started fresh; never a wrong value or a crash
        n, enabled, rec, bad = map(int, _run(VERIFY, str(path)).split())
        assert enabled == 1
        left.append(n)
        recovered += rec
        corrupt += bad
    report(
        f"crash_damage_{damage}",
        {
            "rounds": rounds,
            "entries_left": left,
            "set_aside": recovered,
            "corrupt_dropped": corrupt,
        },
    )


def test_locked_directory_degrades_to_memory_only(
    make_config: ConfigFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        cfg = make_config(cache=CacheConfig(disk_path=str(path)))
        with caplog.at_level(logging.WARNING, logger="llmrelay"), LLMService(cfg) as svc:
            assert not svc._engine.cache.disk_enabled
            first = svc.chat("held cache", temperature=0)
            again = svc.chat("held cache", temperature=0)
            assert again.cached and again.text == first.text  # the memory tier still works
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("disk cache" in r.getMessage() for r in warnings), warnings
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)
        if holder.stdout:
            holder.stdout.close()
    assert os.path.isdir(path)
