"""The JSONL file runner (``LLMService.arun_file``, ``llmrelay run``) against the fakes:
one line out per line in, resumable (reruns, torn lines, SIGKILL, Ctrl-C), replay mode,
per-line samples and every kind of bad line as a typed error line."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from llmrelay import CacheConfig, CacheControl, ChatResponse, LLMService, RunSummary
from llmrelay._progress import RunProgress
from llmrelay._runner import FileRunner
from llmrelay.errors import InvalidRequestError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory

N = 2000


def write_input(path: Path, n: int, **extra: Any) -> list[str]:
    ids = [f"q{i}" for i in range(n)]
    with path.open("w") as f:
        for i, id_ in enumerate(ids):
            f.write(json.dumps({"id": id_, "prompt": f"question {i}", **extra}) + "\n")
    return ids


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ids_of(records: list[dict[str, Any]]) -> Counter[Any]:
    return Counter(r["id"] for r in records)


async def wait_for(cond: Any, limit_s: float = 20.0) -> None:
    """Poll a condition on a real server or process (bounded), not a timer."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


# ---- a full run, a rerun, replay ------------------------------------------------------------


async def test_2000_lines_rerun_skips_all_and_replay_calls_no_provider(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    oa = fakes["openai"]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(src, N, temperature=0)
    cfg = make_config(cache=CacheConfig(disk_path=str(tmp_path / "cache")))
    async with LLMService(cfg) as svc:
        s = await svc.arun_file(src, out, concurrency=32, progress=False)
    assert isinstance(s, RunSummary)
    assert (s.total, s.ok, s.failed, s.skipped, s.remaining) == (N, N, 0, 0, 0)
    records = read_output(out)
    assert ids_of(records) == Counter(ids)
    by_id = {r["id"]: r for r in records}
    assert by_id["q7"]["response"]["text"].endswith("question 7")
    assert by_id["q7"]["line"] == 8
    back = msgspec.convert(by_id["q7"]["response"], ChatResponse)
    assert back.text == by_id["q7"]["response"]["text"] and back.usage.total_tokens > 0
    assert oa.request_count == N

    # a rerun skips every id already in the output: no call, no new line
    async with LLMService(cfg) as svc:
        s = await svc.arun_file(src, out, progress=False)
    assert (s.skipped, s.done) == (N, 0)
    assert len(read_output(out)) == N and oa.request_count == N

    # replay into a new output: all from the disk cache, and a line never run is a typed
    # error line, not a crash
    with src.open("a") as f:
        f.write(json.dumps({"id": "new", "prompt": "never asked", "temperature": 0}) + "\n")
    replayed = tmp_path / "replayed.jsonl"
    async with LLMService(
        make_config(cache=CacheConfig(disk_path=str(tmp_path / "cache"), mode="replay"))
    ) as svc:
        s = await svc.arun_file(src, replayed, progress=False)
    assert oa.request_count == N  # 0 provider calls in replay
    assert (s.ok, s.cached, s.failed, s.errors) == (N, N, 1, {"CacheMissError": 1})
    rec = {r["id"]: r for r in read_output(replayed)}
    assert rec["new"]["error"]["type"] == "CacheMissError"
    assert rec["new"]["error"]["reason"] == "miss"
    assert all(rec[i]["response"]["cached"] for i in ids)


def test_run_file_sync_with_a_replay_view(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    write_input(src, 20, temperature=0)
    with LLMService(make_config()) as svc:
        first = svc.run_file(src, tmp_path / "a.jsonl", progress=False)
        assert first.ok == 20
        view = svc.with_options(cache=CacheControl(mode="replay"))
        again = view.run_file(src, tmp_path / "b.jsonl", progress=False)
        assert (again.ok, again.cached) == (20, 20)
    assert fakes["openai"].request_count == 20


# ---- bad lines ------------------------------------------------------------------------------


async def test_bad_lines_become_typed_error_lines(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        json.dumps({"id": "ok", "prompt": "fine"}),
        "this is not json",
        json.dumps([1, 2]),
        json.dumps({"prompt": "no id"}),
        json.dumps({"id": True, "prompt": "bool id"}),
        json.dumps({"id": "ok", "prompt": "duplicate"}),
        json.dumps({"id": "hot", "prompt": "x", "temperature": 9}),
        json.dumps({"id": "unknown", "prompt": "x", "colour": "red"}),
        json.dumps({"id": "both", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}),
        json.dumps({"id": "none"}),
        json.dumps({"id": "prompt", "prompt": 5}),
        json.dumps({"id": "sample", "prompt": "x", "sample": -1}),
        json.dumps({"id": "prio", "prompt": "x", "priority": 99}),
        json.dumps({"id": "cache", "prompt": "x", "cache": {"mode": "never"}}),
        json.dumps({"id": "self", "prompt": "x", "self": 1}),
        json.dumps({"id": 7, "messages": [{"role": "user", "content": "int id"}]}),
        "",
        "   ",
    ]
    src.write_text("\n".join(lines) + "\n")
    async with LLMService(make_config()) as svc:
        s = await svc.arun_file(src, out, progress=False)
    assert s.total == 16 and s.ok == 2 and s.failed == 14
    recs = read_output(out)
    assert len(recs) == 16
    errors = {(r["id"], r["line"]): r["error"] for r in recs if "error" in r}
    assert all(e["type"] == "InvalidRequestError" for e in errors.values())
    fields = {k: e["field"] for k, e in errors.items()}
    assert fields == {
        (None, 2): "line",
        (None, 3): "line",
        (None, 4): "id",
        (None, 5): "id",
        ("ok", 6): "id",  # the duplicate carries the id, keyed by its line
        ("hot", 7): "params.temperature",
        ("unknown", 8): "params.colour",
        ("both", 9): "prompt",
        ("none", 10): "messages",
        ("prompt", 11): "prompt",
        ("sample", 12): "sample",
        ("prio", 13): "priority",
        ("cache", 14): "cache",
        ("self", 15): "params.self",
    }
    assert {r["id"] for r in recs if "response" in r} == {"ok", 7}
    assert fakes["openai"].request_count == 2  # nothing bad was sent

    # a rerun writes nothing again: neither the answered ids nor the bad lines
    async with LLMService(make_config()) as svc:
        s = await svc.arun_file(src, out, progress=False)
    assert (s.skipped, s.done) == (16, 0) and len(read_output(out)) == 16


async def test_bad_arguments_raise_before_anything_runs(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    write_input(src, 1)
    async with LLMService(make_config()) as svc:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"input": tmp_path / "missing.jsonl", "output": tmp_path / "o"}, "input"),
            ({"input": src, "output": src}, "output"),
            ({"input": src, "output": tmp_path / "no" / "dir.jsonl"}, "output"),
            ({"input": src, "output": tmp_path / "o", "concurrency": 0}, "concurrency"),
            ({"input": src, "output": tmp_path / "o", "progress": "yes"}, "progress"),
        ]
        for kw, field in cases:
            with pytest.raises(InvalidRequestError) as info:
                await svc.arun_file(**kw)
            assert info.value.field == field
    assert not (tmp_path / "o").exists()


# ---- resuming -------------------------------------------------------------------------------


async def test_a_torn_last_line_is_cut_and_rewritten(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(src, 50)
    async with LLMService(make_config()) as svc:
        await svc.arun_file(src, out, progress=False)
    whole = out.read_bytes().splitlines(keepends=True)
    # as if killed mid-write: 30 whole lines, then half of the 31st; and a garbage line
    out.write_bytes(b"".join(whole[:29]) + b"garbage\n" + whole[29] + whole[30][:25])
    lost = {json.loads(x)["id"] for x in whole[30:]}
    async with LLMService(make_config()) as svc:
        s = await svc.arun_file(src, out, progress=False)
    assert s.torn == 2 and s.skipped == 30 and s.ok == 20
    lines = out.read_bytes().splitlines()
    assert b"garbage" in lines  # left alone, ignored
    records = [json.loads(x) for x in lines if x != b"garbage"]
    assert ids_of(records) == Counter(ids)
    assert {r["id"] for r in records[30:]} == lost


async def test_cancelling_a_run_keeps_every_finished_line(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    oa = fakes["openai"]
    oa.latency_s = 0.01
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(src, 300)
    async with LLMService(make_config()) as svc:
        task = asyncio.ensure_future(svc.arun_file(src, out, concurrency=8, progress=False))
        await wait_for(
            lambda: out.exists() and out.stat().st_size > 0 and len(read_output(out)) >= 40
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    written = read_output(out)  # whole lines only
    assert 40 <= len(written) < 300 and len(ids_of(written)) == len(written)
    oa.latency_s = 0.0
    async with LLMService(make_config()) as svc:
        s = await svc.arun_file(src, out, progress=False)
    assert s.skipped == len(written)
    assert ids_of(read_output(out)) == Counter(ids)


async def test_stop_finishes_what_is_in_flight_and_starts_nothing_new(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    oa = fakes["openai"]
    oa.latency_s = 0.01
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(src, 200)
    async with LLMService(make_config()) as svc:
        runner = FileRunner(svc, src, out, concurrency=4, progress=None)
        task = asyncio.ensure_future(runner.run())
        await wait_for(lambda: runner.summary.done >= 10)
        runner.stop()
        s = await task
    assert s.interrupted and s.remaining > 0
    assert s.done == len(read_output(out)) == oa.request_count  # every sent one was written


async def test_two_runs_on_one_output_are_refused(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    oa = fakes["openai"]
    oa.latency_s = 0.01
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(src, 100)
    async with LLMService(make_config()) as svc:
        first = asyncio.ensure_future(svc.arun_file(src, out, concurrency=4, progress=False))
        await wait_for(lambda: out.exists() and out.stat().st_size > 0)
        with pytest.raises(InvalidRequestError) as info:
            await svc.arun_file(src, out, progress=False)
        assert info.value.field == "output" and "another run" in str(info.value)
        await first
        again = await svc.arun_file(src, out, progress=False)  # the lock went with the run
    assert again.skipped == 100 and ids_of(read_output(out)) == Counter(ids)


# ---- samples --------------------------------------------------------------------------------


async def test_per_line_samples_are_cached_apart(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    oa = fakes["openai"]
    src = tmp_path / "in.jsonl"
    with src.open("w") as f:
        for k in range(4):
            f.write(
                json.dumps({"id": f"p#{k}", "prompt": "solve", "temperature": 1.0, "sample": k})
                + "\n"
            )
        f.write(json.dumps({"id": "plain", "prompt": "solve", "temperature": 1.0}) + "\n")
    for k in range(5):
        oa.script(f"try {k}")
    async with LLMService(make_config()) as svc:
        await svc.arun_file(src, tmp_path / "a.jsonl", concurrency=1, progress=False)
        s = await svc.arun_file(src, tmp_path / "b.jsonl", concurrency=1, progress=False)
    assert oa.request_count == 6  # the four samples once each; the plain line twice
    assert s.cached == 4
    a = {r["id"]: r for r in read_output(tmp_path / "a.jsonl")}
    b = {r["id"]: r for r in read_output(tmp_path / "b.jsonl")}
    assert len({a[f"p#{k}"]["response"]["text"] for k in range(4)}) == 4
    for k in range(4):
        assert b[f"p#{k}"]["response"]["text"] == a[f"p#{k}"]["response"]["text"]
        assert b[f"p#{k}"]["sample"] == k


# ---- progress -------------------------------------------------------------------------------


async def test_plain_progress_and_summary(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    write_input(src, 10, temperature=0)
    with src.open("a") as f:
        f.write("{broken\n")
    buf = io.StringIO()
    async with LLMService(make_config()) as svc:
        runner = FileRunner(
            svc, src, tmp_path / "o.jsonl", concurrency=None, progress=RunProgress(buf)
        )
        await runner.run()
    text = buf.getvalue()
    assert "11/11 lines" in text and "errors 1" in text and "cached 0" in text
    assert "InvalidRequestError" in text and "answered" in text


async def test_rich_progress_and_table(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    pytest.importorskip("rich")
    src = tmp_path / "in.jsonl"
    write_input(src, 5)
    buf = io.StringIO()
    async with LLMService(make_config()) as svc:
        progress = RunProgress(buf, use_rich=True)
        runner = FileRunner(svc, src, tmp_path / "o.jsonl", concurrency=None, progress=progress)
        await runner.run()
    text = buf.getvalue()
    assert "llmrelay run" in text and "answered" in text and "5" in text


# ---- the command line in a subprocess: SIGKILL and Ctrl-C -----------------------------------


def _cli(tmp_path: Path, base_url: str, *args: str) -> subprocess.Popen[bytes]:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        'default_model = "openai/gpt-4o-mini"\n[[providers]]\nname = "openai"\nkind = "openai"\n'
        f'base_url = "{base_url}"\napi_key = "sk-test"\nmodels = ["gpt-4o-mini"]\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "llmrelay", "run", *args, "--config", str(cfg), "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_sigkill_mid_run_then_resume_gives_every_id_once(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(src, N)
    concurrency = 16
    with FakeProvider.spawn("openai", latency_s=0.02) as fake:
        proc = _cli(
            tmp_path, fake.base_url, str(src), "-o", str(out), "--concurrency", str(concurrency)
        )
        try:
            await wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 300)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        before = read_output(out)
        assert 300 <= len(before) < N
        sent_before = fake.request_count
        assert sent_before - len(before) <= concurrency  # lost at most the lines in flight
        with out.open("ab") as f:  # and as if the kill had cut a write in half
            f.write(b'{"id":"q1","line":2,"respo')
        proc = _cli(tmp_path, fake.base_url, str(src), "-o", str(out))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        records = read_output(out)
        assert ids_of(records) == Counter(ids)  # every id exactly once
        assert N <= fake.request_count <= N + concurrency
        assert re.search(rb"torn output lines ignored +1\n", err)
        assert re.search(rb"already done \(skipped\) +%d\n" % len(before), err)


async def test_ctrl_c_stops_cleanly_and_exit_code_130(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(src, 500)
    with FakeProvider.spawn("openai", latency_s=0.02) as fake:
        proc = _cli(tmp_path, fake.base_url, str(src), "-o", str(out), "--concurrency", "8")
        try:
            await wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 50)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130, err.decode()
        assert b"stopping" in err and b"interrupted" in err
        data = out.read_bytes()
        assert data.endswith(b"\n")
        written = read_output(out)
        assert len(written) == fake.request_count  # whatever was sent was finished and written
        proc = _cli(tmp_path, fake.base_url, str(src), "-o", str(out))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert ids_of(read_output(out)) == Counter(ids)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmrelay._cli import main

    cfg = tmp_path / "echo.toml"
    cfg.write_text('default_model = "echo/echo"\n[[providers]]\nname = "echo"\nkind = "echo"\n')
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(src, 30)
    assert main(["run", str(src), "-o", str(out), "--config", str(cfg), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"answered +30\n", err) and "llmrelay run" in err
    with src.open("a") as f:
        f.write("{not json\n")
    assert main(["run", str(src), "-o", str(out), "--config", str(cfg), "--no-progress"]) == 1
    assert re.search(r"already done \(skipped\) +30\n", capsys.readouterr().err)
    missing = ["run", str(tmp_path / "nope.jsonl"), "-o", str(out), "--config", str(cfg)]
    assert main(missing) == 2
    assert "InvalidRequestError" in capsys.readouterr().err
    assert main(["run", str(src), "-o", str(out), "--config", str(cfg), "--concurrency", "0"]) == 2
    replay = ["run", str(src), "-o", str(tmp_path / "r.jsonl"), "--config", str(cfg)]
    assert main([*replay, "--cache-mode", "replay", "--no-progress"]) == 1
    recs = read_output(tmp_path / "r.jsonl")
    # the echo lines ran at the default temperature: not cacheable, so replay cannot answer
    assert {r["error"]["type"] for r in recs} == {"CacheMissError", "InvalidRequestError"}
    assert len(recs) == 31


async def test_a_failing_write_stops_every_worker(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    oa = fakes["openai"]
    oa.latency_s = 0.01
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(src, 200)
    async with LLMService(make_config()) as svc:
        runner = FileRunner(svc, src, out, concurrency=8, progress=None)
        landed = runner._landed

        def full_disk(job: Any, result: Any) -> None:
            if runner.summary.done >= 20:
                raise OSError(28, "No space left on device")
            landed(job, result)

        runner._landed = full_disk  # type: ignore[method-assign]
        with pytest.raises(OSError, match="No space"):
            await runner.run()
        # nothing runs on after the run failed: no worker is left to send
        me = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not me and not t.done()] == []
        assert oa.request_count < 40
    assert len(read_output(out)) == 20


async def test_plot_png_or_a_clear_error_before_running(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    import importlib.util

    src, out, png = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "run.png"
    write_input(src, 40)
    async with LLMService(make_config()) as svc:
        with pytest.raises(InvalidRequestError) as info:
            await svc.arun_file(src, out, progress=False, plot=tmp_path / "run.svg")
        assert info.value.field == "plot"
        if importlib.util.find_spec("matplotlib") is None:
            with pytest.raises(InvalidRequestError, match="matplotlib") as info:
                await svc.arun_file(src, out, progress=False, plot=png)
            assert info.value.field == "plot" and not out.exists()  # nothing ran
            assert fakes["openai"].request_count == 0
            return
        s = await svc.arun_file(src, out, progress=False, plot=png)
    assert s.ok == 40
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
