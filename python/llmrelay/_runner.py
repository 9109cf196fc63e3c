"""Batch runs over JSONL files: :meth:`LLMService.arun_file` and ``llmrelay run``.

Each input line is one request: ``{"id": ..., "messages": [...] | "prompt": "...",
"model"?, "priority"?, "timeout"?, "sample"?, "cache"?, <chat parameters>...}``.
Each produces exactly one output line, appended and flushed as soon as it is
known, in completion order (``response`` is the :class:`ChatResponse` as msgspec
encodes it, so ``msgspec.convert(record["response"], ChatResponse)`` rebuilds it;
its tool calls carry parsed ``arguments``)::

    {"id": ..., "line": n, "response": {ChatResponse's fields}}
    {"id": ..., "line": n, "error": {"type": ..., "message": ..., "field": ..., ...}}

A rerun reads the output first and skips every input already answered there, so
a run killed at any point (SIGKILL included) resumes where it was: only the lines
in flight are lost. A torn last line (a write cut by the kill) is cut off before
appending. Lines that cannot be a request (not JSON, no usable ``id``, an ``id``
seen earlier in the file) get an error line keyed by their line number rather
than their id (``error.field`` is ``"line"`` or ``"id"``), so they never hide the
real request of that id.

Concurrency is the batch's back-pressure (:class:`llmrelay._batch.BatchRunner`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay._cachekey import CacheControl
from llmrelay._pipeline.validate import cache_control
from llmrelay._structured import parsed_builtins
from llmrelay._types import ChatResponse
from llmrelay.errors import InvalidRequestError, LLMRelayError

if TYPE_CHECKING:
    from llmrelay._progress import RunProgress
    from llmrelay._service import LLMService

__all__ = ["FileRunner", "RunSummary"]

#: The fields of an input line that are not chat parameters.
_OWN = ("id", "messages", "prompt", "model", "priority", "timeout", "sample", "cache")
#: ``error.field`` of the lines keyed by line number instead of id.
_LINE_KEYED = ("line", "id")


class RunSummary(msgspec.Struct, kw_only=True):
    """What a run did. ``total`` input lines (blank ones aside), of which ``skipped``
    were already in the output; ``ok`` + ``failed`` lines written by this run."""

    input: str
    output: str
    total: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    cached: int = 0
    retries: int = 0
    #: torn or unreadable lines found in the output before the run (ignored; a torn
    #: last line is cut off)
    torn: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    errors: dict[str, int] = {}
    cost_usd: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None

    @property
    def done(self) -> int:
        """Lines written by this run."""
        return self.ok + self.failed

    @property
    def remaining(self) -> int:
        """Input lines with no output line yet (0 when the run completed)."""
        return self.total - self.skipped - self.done

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (label, value) rows."""
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        rows = [
            ("input lines", str(self.total)),
            ("already done (skipped)", str(self.skipped)),
            ("answered", str(self.ok)),
            ("  from cache", str(self.cached)),
            ("errors", str(self.failed)),
        ]
        rows += [(f"  {name}", str(n)) for name, n in sorted(self.errors.items())]
        rows += [("retries", str(self.retries)), ("left to do", str(self.remaining))]
        if self.torn:
            rows.append(("torn output lines ignored", str(self.torn)))
        rows.append(("elapsed", f"{self.elapsed_s:.2f} s ({rate:.1f} lines/s)"))
        if self.latency_p50_s is not None and self.latency_p95_s is not None:
            p50, p95 = self.latency_p50_s * 1000, self.latency_p95_s * 1000
            rows.append(("latency p50 / p95", f"{p50:.1f} / {p95:.1f} ms"))
        if self.cost_usd is not None:
            rows.append(("cost", f"${self.cost_usd:.4f}"))
        if self.interrupted:
            rows.append(("interrupted", "yes: rerun the same command to resume"))
        return rows

    def table(self) -> str:
        """The summary as plain text, one row a line."""
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class _Job:
    """One input line that is a request."""

    __slots__ = ("error", "id", "kwargs", "line", "messages", "sample")

    def __init__(
        self,
        line: int,
        id_: str | int,
        messages: Any,
        sample: int | None,
        kwargs: dict[str, Any],
        error: InvalidRequestError | None = None,
    ) -> None:
        self.line = line
        self.id = id_
        self.messages = messages
        self.sample = sample
        self.kwargs = kwargs
        #: a bad field of a line with a good id: reported as that id's error line
        self.error = error


class _DoneRecord(msgspec.Struct):
    """What resuming needs from an output line (the rest is not decoded)."""

    id: Any = None
    line: int | None = None
    error: _DoneError | None = None


class _DoneError(msgspec.Struct):
    field: str | None = None


_done_decoder = msgspec.json.Decoder(_DoneRecord)
_encoder = msgspec.json.Encoder(enc_hook=parsed_builtins)  # a pydantic ``parsed``


def read_done(path: Path) -> tuple[set[Any], set[int], int]:
    """The ids and the line numbers already answered in ``path``, and how many of its
    lines were torn or unreadable. A torn last line (no newline) is cut off the file."""
    ids: set[Any] = set()
    lines: set[int] = set()
    if not path.exists():
        return ids, lines, 0
    data = path.read_bytes()
    torn = 0
    end = data.rfind(b"\n") + 1
    if end < len(data):  # the last write was cut short (SIGKILL, full disk)
        torn += 1
        with path.open("r+b") as f:
            f.truncate(end)
    for raw in data[:end].splitlines():
        if not raw.strip():
            continue
        try:
            rec = _done_decoder.decode(raw)
        except msgspec.DecodeError:
            torn += 1
            continue
        if rec.error is not None and rec.error.field in _LINE_KEYED:
            if rec.line is not None:
                lines.add(rec.line)
        elif isinstance(rec.id, (str, int)) and not isinstance(rec.id, bool):
            ids.add(rec.id)
        else:
            torn += 1
    return ids, lines, torn


def error_record(id_: Any, line: int, err: BaseException) -> dict[str, Any]:
    """The output line of a failed input: the error's type, message and field (if any),
    and where it came from when it is a provider's."""
    info: dict[str, Any] = {
        "type": type(err).__name__,
        "message": str(err),
        "field": getattr(err, "field", None),
        "retryable": bool(getattr(err, "retryable", False)),
    }
    for name in ("provider", "model", "status_code", "reason"):
        value = getattr(err, name, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            info[name] = value
    return {"id": id_, "line": line, "error": info}


def _bad(line: int, message: str, field: str) -> InvalidRequestError:
    return InvalidRequestError(f"input line {line}: {message}", field=field)


class FileRunner:
    """One run of an input file into an output file (see the module docstring)."""

    def __init__(
        self,
        svc: LLMService,
        input: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        concurrency: int | None,
        progress: RunProgress | None,
        plot: str | os.PathLike[str] | None = None,
    ) -> None:
        self._svc = svc
        self._input = Path(input)
        self._output = Path(output)
        self._concurrency = concurrency
        self._progress = progress
        self._stopping = False
        self._fd = -1
        self._latencies: list[float] = []
        self.summary = RunSummary(input=str(self._input), output=str(self._output))
        self._started = 0.0
        self._check_paths()
        self._plot: Path | None = None
        #: (seconds since the start, latency, cached) per line written, for the plot
        self._timeline: list[tuple[float, float, bool]] | None = None
        if plot is not None:
            from llmrelay._plot import check_plot

            self._plot = check_plot(plot)
            self._timeline = []

    def _check_paths(self) -> None:
        if not self._input.is_file():
            raise InvalidRequestError(f"input={str(self._input)!r}: no such file", field="input")
        if self._output.exists() and self._output.resolve() == self._input.resolve():
            raise InvalidRequestError(
                "output: must not be the input file (results are appended to it)", field="output"
            )
        if not self._output.parent.is_dir():
            raise InvalidRequestError(
                f"output={str(self._output)!r}: its directory does not exist", field="output"
            )

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    def stop(self) -> None:
        """Start no new line; the ones in flight finish and are written."""
        self._stopping = True

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self._started if self._started else 0.0

    async def run(self) -> RunSummary:
        """Run every input line not yet in the output; the summary (also on ``self.summary``)."""
        from llmrelay._batch import BatchRunner, batch_limit

        s = self.summary
        self._started = time.perf_counter()
        self._fd = _open_locked(self._output)
        try:
            done_ids, done_lines, s.torn = read_done(self._output)
            s.total = _count_lines(self._input)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        eng = self._svc._engine
        orch = eng.orchestrator
        runner: BatchRunner[_Job] = BatchRunner(
            self._call,
            limit=batch_limit(eng.config, self._concurrency, max(1, s.total)),
            on_progress=None,
            backoff=orch.backoff,
            sleep=orch._sleep,
            max_retries=eng.config.orchestrator.max_retries,
        )
        ticker = None
        try:
            if self._progress is not None:
                ticker = self._progress.start(self)
            jobs = self._jobs(done_ids, done_lines)
            await runner.each(jobs, self._landed, stopped=lambda: self._stopping)
            s.interrupted = self._stopping and s.remaining > 0
        except asyncio.CancelledError:
            s.interrupted = True
            raise
        finally:
            self._finish(ticker)
        return s

    def _finish(self, ticker: asyncio.Task[None] | None) -> None:
        s = self.summary
        s.elapsed_s = self.elapsed()
        if self._latencies:
            xs = sorted(self._latencies)
            s.latency_p50_s = xs[len(xs) // 2]
            s.latency_p95_s = xs[min(len(xs) - 1, int(len(xs) * 0.95))]
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1
        if self._progress is not None:
            self._progress.close(self, ticker)
        if self._plot is not None and self._timeline is not None:
            from llmrelay._plot import write_plot

            write_plot(self._plot, self._timeline, f"llmrelay run: {self._input.name}")

    # ---- input -----------------------------------------------------------------------------

    def _jobs(self, done_ids: set[Any], done_lines: set[int]) -> Iterator[_Job]:
        """The input's requests not yet answered; bad lines are answered here (written)."""
        seen: dict[Any, int] = {}
        s = self.summary
        with self._input.open("rb") as f:
            for n, raw in enumerate(f, 1):
                if raw.isspace():
                    continue
                try:
                    job = self._parse(n, raw, seen)
                except InvalidRequestError as e:
                    if n in done_lines:
                        s.skipped += 1
                    else:
                        self._write(error_record(_given_id(raw), n, e))
                        self._count_error(e)
                    continue
                if job.id in done_ids:
                    s.skipped += 1
                    continue
                yield job

    def _parse(self, n: int, raw: bytes, seen: dict[Any, int]) -> _Job:
        try:
            obj = msgspec.json.decode(raw)
        except msgspec.DecodeError as e:
            raise _bad(n, f"not JSON ({e})", "line") from None
        if not isinstance(obj, dict):
            raise _bad(n, f"expected a JSON object, got {type(obj).__name__}", "line")
        if "id" not in obj:
            raise _bad(n, "no 'id'", "id")
        id_ = obj.pop("id")
        if isinstance(id_, bool) or not isinstance(id_, (str, int)) or id_ == "":
            raise _bad(n, f"id={id_!r}: expected a non-empty string or an int", "id")
        first = seen.get(id_)
        if first is not None:
            raise _bad(n, f"duplicate id={id_!r} (first on line {first})", "id")
        seen[id_] = n
        return self._job(n, id_, obj)

    def _job(self, n: int, id_: str | int, obj: dict[str, Any]) -> _Job:
        """A line's request; a bad field is an error line of that id (not a crash)."""
        messages = obj.pop("messages", None)
        prompt = obj.pop("prompt", None)
        sample = obj.pop("sample", None)
        problem = None
        if (messages is None) == (prompt is None) or sample is not None or "self" in obj:
            problem = _problem(messages, prompt, sample, obj)
        elif prompt is not None and not isinstance(prompt, str):
            problem = (f"prompt={prompt!r}: expected a string", "prompt")
        if problem is not None:
            message, field = problem
            return _Job(n, id_, None, None, {}, _bad(n, message, field))
        if sample is not None:
            obj["cache"] = self._with_sample(obj.get("cache"), sample)
        return _Job(n, id_, messages if messages is not None else prompt, sample, obj)

    def _with_sample(self, cache: Any, sample: int) -> CacheControl | Any:
        base = cache if cache is not None else self._svc._cache
        try:
            cc = cache_control(base)
        except InvalidRequestError:
            return cache  # the call reports it
        return msgspec.structs.replace(cc, sample=sample)

    # ---- calls and output ------------------------------------------------------------------

    async def _call(self, job: _Job) -> ChatResponse:
        if job.error is not None:
            raise job.error
        return await self._svc.achat(job.messages, **job.kwargs)

    def _landed(self, job: _Job, result: ChatResponse | LLMRelayError) -> None:
        s = self.summary
        if isinstance(result, ChatResponse):
            rec: dict[str, Any] = {"id": job.id, "line": job.line}
            if job.sample is not None:
                rec["sample"] = job.sample
            rec["response"] = result  # encoded as the struct: msgspec.convert() rebuilds it
            self._write(rec)
            s.ok += 1
            if result.cached:
                s.cached += 1
            else:
                self._latencies.append(result.latency_s)
            if result.attempts > 1:
                s.retries += result.attempts - 1
            if self._timeline is not None:
                self._timeline.append((self.elapsed(), result.latency_s, result.cached))
            cost = getattr(result, "cost", None)
            if cost is not None:
                total = getattr(cost, "total_usd", None)
                if isinstance(total, (int, float)):
                    s.cost_usd = (s.cost_usd or 0.0) + float(total)
        else:
            self._write(error_record(job.id, job.line, result))
            self._count_error(result)
            tried = getattr(result, "attempts", None)
            if isinstance(tried, list) and len(tried) > 1:
                s.retries += len(tried) - 1

    def _count_error(self, err: BaseException) -> None:
        s = self.summary
        s.failed += 1
        name = type(err).__name__
        s.errors[name] = s.errors.get(name, 0) + 1

    def _write(self, rec: Mapping[str, Any]) -> None:
        """Append one line with one write (so a kill leaves whole lines, or a torn last one)."""
        data = _encoder.encode(rec) + b"\n"
        n = os.write(self._fd, data)
        while n < len(data):  # a regular file takes it whole; a pipe or a full disk may not
            data = data[n:]
            n = os.write(self._fd, data)


def _problem(
    messages: Any, prompt: Any, sample: Any, rest: dict[str, Any]
) -> tuple[str, str] | None:
    """What is wrong with a line's own fields (message, field), if anything; the chat
    parameters are checked by the call itself."""
    if messages is not None and prompt is not None:
        return "give 'messages' or 'prompt', not both", "prompt"
    if messages is None and prompt is None:
        return "needs 'messages' (a list) or 'prompt' (a string)", "messages"
    if prompt is not None and not isinstance(prompt, str):
        return f"prompt={prompt!r}: expected a string", "prompt"
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int) or sample < 0
    ):
        return f"sample={sample!r}: expected an int >= 0", "sample"
    if "self" in rest:
        return "unknown parameter 'self'", "params.self"
    return None


def _given_id(raw: bytes) -> Any:
    """The id of a line that is not a request, if it has a usable one (else None)."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    id_ = obj.get("id") if isinstance(obj, dict) else None
    return id_ if isinstance(id_, (str, int)) and not isinstance(id_, bool) else None


def _open_locked(path: Path) -> int:
    """The output opened for appending, locked so that a second run on it fails at once
    (two runs appending to one file would answer the same ids twice)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # not on this platform: no lock
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InvalidRequestError(
            f"output={str(path)!r}: another run is writing to it (wait for it, or stop it)",
            field="output",
        ) from None
    return fd


def _count_lines(path: Path) -> int:
    """Non-blank lines of ``path`` (read in blocks; no JSON decoding)."""
    n = 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.isspace():
                n += 1
    return n
