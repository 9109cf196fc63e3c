"""A fake provider in a subprocess: ``python -m llmrelay.testing <protocol>``.

The child prints its URL as the first line of stdout, then serves until terminated.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
from types import TracebackType
from typing import Self

__all__ = ["SpawnedFake", "spawn"]


class SpawnedFake:
    """A handle on a fake running in a subprocess; ``close()`` (or ``with``) ends it."""

    def __init__(self, process: subprocess.Popen[str], url: str, protocol: str) -> None:
        self.process = process
        self.url = url
        self.protocol = protocol

    @property
    def base_url(self) -> str:
        """The SDK's ``base_url``: OpenAI's ends in ``/v1``, the others' is the root."""
        return f"{self.url}/v1" if self.protocol == "openai" else self.url

    def close(self, timeout_s: float = 10.0) -> None:
        """Terminate the subprocess (kill it if it does not exit in time) and reap it."""
        proc = self.process
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SpawnedFake({self.protocol!r}, {self.url}, pid={self.process.pid})"


def spawn(
    protocol: str,
    *,
    port: int,
    latency_s: float,
    stream_chunk_delay_s: float,
    model: str | None,
    api_key: str | None,
    timeout_s: float,
) -> SpawnedFake:
    args = [sys.executable, "-m", "llmrelay.testing", protocol, "--port", str(port)]
    args += ["--latency-s", repr(latency_s), "--stream-chunk-delay-s", repr(stream_chunk_delay_s)]
    if model is not None:
        args += ["--model", model]
    if api_key is not None:
        args += ["--api-key", api_key]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout_s)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("http://"):
        handle = SpawnedFake(proc, "", protocol)
        handle.close()
        raise RuntimeError(
            f"the fake {protocol} server did not start within {timeout_s}s"
            f" (exit code {proc.returncode}, first line {line!r})"
        )
    return SpawnedFake(proc, line, protocol)
