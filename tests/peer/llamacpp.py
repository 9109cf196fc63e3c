"""A real llama.cpp server (the ``xllamacpp`` wheel) on 127.0.0.1, in a child process.

``LlamaCppPeer(model_path)`` starts ``python llamacpp.py <model> [--embedding]``;
the child builds an ``xllamacpp.Server`` (which listens on a free port of
127.0.0.1), prints its address as one JSON line and serves until its stdin is
closed. A child keeps a native crash of llama.cpp from taking the test run down,
and keeps llama.cpp's log out of pytest's output (it goes to a log file, whose
tail is quoted if the server fails to start).

Startup is bounded (``start_timeout_s``); ``close()`` closes stdin, waits a
bounded time and kills the child if it has not exited.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["MODEL_ALIAS", "LlamaCppPeer"]

MODEL_ALIAS = "tiny"
N_CTX = 256
N_PARALLEL = 2


class LlamaCppPeer:
    """One llama.cpp server process; ``base_url`` is the host root (``http://127.0.0.1:PORT``)."""

    def __init__(
        self,
        model_path: Path,
        *,
        embedding: bool = False,
        log_path: Path | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.model_path = model_path
        self.embedding = embedding
        self.log_path = log_path or model_path.with_suffix(".embed.log" if embedding else ".log")
        self.start_timeout_s = start_timeout_s
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> LlamaCppPeer:
        """Start the server and wait (bounded) for its address."""
        args = [sys.executable, __file__, str(self.model_path)]
        if self.embedding:
            args.append("--embedding")
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        try:
            self.base_url = self._read_address()
        except BaseException:
            self.close()
            raise
        return self

    def _read_address(self) -> str:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(
                        f"llama.cpp server did not start in {self.start_timeout_s}s"
                        f"{self._log_tail()}"
                    )
                if not sel.select(left):
                    continue
                data = proc.stdout.read1(4096)  # type: ignore[attr-defined]
                if not data:
                    code = proc.wait(timeout=10)
                    raise RuntimeError(
                        f"llama.cpp server exited with code {code} before listening"
                        f"{self._log_tail()}"
                    )
                buf += data
        info = json.loads(buf.split(b"\n", 1)[0])
        return str(info["base_url"]).rstrip("/")

    def _log_tail(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            return ""
        return ":\n" + "\n".join(lines) if lines else ""

    def close(self) -> None:
        """Stop the server: EOF on its stdin, a bounded wait, then a kill."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
            if proc.stdout is not None:
                proc.stdout.close()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> LlamaCppPeer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _serve(model_path: str, embedding: bool) -> None:
    """The child: start xllamacpp's server, print its address, serve until stdin closes."""
    import xllamacpp

    params: Any = xllamacpp.CommonParams()
    params.model.path = model_path
    params.model_alias = {MODEL_ALIAS}
    params.n_ctx = N_CTX * N_PARALLEL  # split between the slots: N_CTX each
    params.n_parallel = N_PARALLEL
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.n_threads_http = 4
    params.warmup = False
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free port
    if embedding:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    server = xllamacpp.Server(params)
    sys.stdout.write(json.dumps({"base_url": server.listening_address}) + "\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()  # until the parent closes our stdin (or dies)
    del server  # joins llama.cpp's threads


if __name__ == "__main__":
    _serve(sys.argv[1], "--embedding" in sys.argv[2:])
