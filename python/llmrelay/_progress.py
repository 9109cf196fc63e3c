"""The live display of a file run: a rich progress bar, or a plain line.

With ``rich`` installed (the ``cli`` extra) and the stream a terminal: a bar with
the rate, the ETA, cache hits, retries and errors, refreshed ten times a second.
Otherwise a plain line: rewritten in place on a terminal, printed every few
seconds when the stream is a file or a pipe (logs, CI). The counters are read
from the run's summary by a ticker task, so a line costs the run no drawing.
At the end, the summary table (rich's, or plain text).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmrelay._runner import FileRunner, RunSummary

__all__ = ["RunProgress"]

#: Seconds between redraws: a terminal, and a file or pipe.
_TTY_EVERY_S = 0.1
_LOG_EVERY_S = 5.0


def _status(s: RunSummary, elapsed: float) -> str:
    rate = s.done / elapsed if elapsed > 0 else 0.0
    left = s.remaining
    eta = f"{left / rate:.0f}s" if rate > 0 else "?"
    line = (
        f"{s.skipped + s.done}/{s.total} lines  {rate:.1f}/s  ETA {eta}  "
        f"cached {s.cached}  retries {s.retries}  errors {s.failed}"
    )
    if s.cost_usd is not None:
        line += f"  ${s.cost_usd:.4f}"
    return line


class RunProgress:
    """Draws a run's progress on ``stream`` (stderr by default) and its summary at the end."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        live: bool = True,
        summary: bool = True,
        use_rich: bool | None = None,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._live = live
        self._summary = summary
        self._rich: Any = None
        self._task_id: Any = None
        self._wrote_cr = False
        want_rich = self._tty if use_rich is None else use_rich
        if want_rich:
            try:
                import rich  # noqa: F401
            except ImportError:
                want_rich = False
        self._use_rich = want_rich

    def start(self, runner: FileRunner) -> asyncio.Task[None] | None:
        """Start drawing; the ticker task (None when nothing live is drawn)."""
        if not self._live:
            return None
        if self._use_rich:
            self._start_rich(runner)
        return asyncio.get_running_loop().create_task(self._tick(runner))

    def _start_rich(self, runner: FileRunner) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=self._stream)
        self._rich = Progress(
            TextColumn("[bold]run"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("cached {task.fields[cached]}  retries {task.fields[retries]}"),
            TextColumn("[red]errors {task.fields[errors]}"),
            TextColumn("{task.fields[cost]}"),
            console=console,
            auto_refresh=False,
        )
        self._rich.start()
        s = runner.summary
        self._task_id = self._rich.add_task(
            "run", total=s.total or None, rate="0.0", cached=0, retries=0, errors=0, cost=""
        )

    async def _tick(self, runner: FileRunner) -> None:
        every = _TTY_EVERY_S if self._tty else _LOG_EVERY_S
        while True:
            await asyncio.sleep(every)
            self.draw(runner)

    def draw(self, runner: FileRunner) -> None:
        """Draw the current counters once."""
        s = runner.summary
        elapsed = runner.elapsed()
        if self._rich is not None:
            rate = s.done / elapsed if elapsed > 0 else 0.0
            self._rich.update(
                self._task_id,
                total=s.total or None,
                completed=s.skipped + s.done,
                rate=f"{rate:.1f}",
                cached=s.cached,
                retries=s.retries,
                errors=s.failed,
                cost="" if s.cost_usd is None else f"${s.cost_usd:.4f}",
            )
            self._rich.refresh()
        elif self._tty:
            self._stream.write("\r" + _status(s, elapsed) + "\x1b[K")
            self._stream.flush()
            self._wrote_cr = True
        else:
            self._stream.write(_status(s, elapsed) + "\n")
            self._stream.flush()

    def close(self, runner: FileRunner, ticker: asyncio.Task[None] | None) -> None:
        """Stop drawing, draw the last state, then the summary table."""
        if ticker is not None:
            ticker.cancel()
        if self._live:
            with contextlib.suppress(Exception):  # a broken terminal must not lose the run
                self.draw(runner)
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self._wrote_cr:
            self._stream.write("\n")
        if self._summary:
            self.print_summary(runner.summary)

    def print_summary(self, s: RunSummary) -> None:
        """The summary table on the stream."""
        if self._use_rich:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"llmrelay run: {s.input} -> {s.output}", show_header=False)
            table.add_column(justify="left")
            table.add_column(justify="right")
            for k, v in s.rows():
                table.add_row(k, v)
            Console(file=self._stream).print(table)
        else:
            self._stream.write(f"llmrelay run: {s.input} -> {s.output}\n{s.table()}\n")
        self._stream.flush()
