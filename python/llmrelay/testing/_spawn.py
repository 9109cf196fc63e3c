"""A fake provider in a subprocess: ``python -m llmrelay.testing <protocol>``.

The child prints its URL as the first line of stdout, then serves until terminated.
The handle scripts it like an in-process fake (``script``, ``inject``, ``requests``...)
through the child's control channel (see :mod:`llmrelay.testing._control`). A fake in
its own process keeps serving while the test's process stalls (a GC pause, a busy
loop), so timing-sensitive tests see the provider's timing, not their own.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
from types import TracebackType
from typing import Any, Self

import httpx
import msgspec

from llmrelay.errors import ConfigError
from llmrelay.testing._control import CONTROL_PATH
from llmrelay.testing._recorded import RecordedRequest

__all__ = ["SpawnedFake", "spawn"]


class SpawnedFake:
    """A handle on a fake running in a subprocess; ``close()`` (or ``with``) ends it."""

    def __init__(
        self,
        process: subprocess.Popen[str],
        url: str,
        protocol: str,
        *,
        latency_s: float = 0.0,
        stream_chunk_delay_s: float = 0.0,
    ) -> None:
        self.process = process
        self.url = url
        self.protocol = protocol
        self._latency_s = latency_s
        self._stream_chunk_delay_s = stream_chunk_delay_s
        self._http: httpx.Client | None = None

    # the control channel -----------------------------------------------------------------

    def _control(self, op: str, **kwargs: Any) -> Any:
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=10.0)
        resp = self._http.post(CONTROL_PATH, json={"op": op, "kwargs": kwargs})
        body = resp.json()
        if resp.status_code != 200:
            raise ConfigError(f"{op}(): {body.get('error')}")
        return body["result"]

    def script(self, reply: str | None = None, **kwargs: Any) -> None:
        """Queue the next reply in the child (see ``FakeProvider.script``)."""
        self._control("script", reply=reply, **kwargs)

    def inject(self, fault: str, **kwargs: Any) -> None:
        """Make the child's requests fail (see ``FakeProvider.inject``)."""
        self._control("inject", fault=fault, **kwargs)

    def clear_faults(self) -> None:
        """Drop every injected fault."""
        self._control("clear_faults")

    def reset(self) -> None:
        """Forget received requests, queued scripts, faults and rate-limit settings."""
        self._control("reset")

    def set_rate_limit_headers(self, **kwargs: int | float | None) -> None:
        """Send these rate-limit values on every response (see the in-process fake)."""
        self._control("set_rate_limit_headers", **kwargs)

    def set_rate_limit(self, **kwargs: int | None) -> None:
        """Enforce a limit in the child (see ``FakeProvider.set_rate_limit``)."""
        self._control("set_rate_limit", **kwargs)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the child's log of requests received, oldest first."""

        raw = self._control("requests")
        return msgspec.convert(raw, list[RecordedRequest])

    @property
    def request_count(self) -> int:
        """How many requests the child received."""
        return int(self._control("request_count"))

    @property
    def latency_s(self) -> float:
        """The delay before every answer (set it to change the child's)."""
        return self._latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        self._control("set", latency_s=value)
        self._latency_s = value

    @property
    def stream_chunk_delay_s(self) -> float:
        """The gap between stream events (set it to change the child's)."""
        return self._stream_chunk_delay_s

    @stream_chunk_delay_s.setter
    def stream_chunk_delay_s(self, value: float) -> None:
        self._control("set", stream_chunk_delay_s=value)
        self._stream_chunk_delay_s = value

    @property
    def base_url(self) -> str:
        """The SDK's ``base_url``: OpenAI's ends in ``/v1``, the others' is the root."""
        return f"{self.url}/v1" if self.protocol == "openai" else self.url

    def close(self, timeout_s: float = 10.0) -> None:
        """Terminate the subprocess (kill it if it does not exit in time) and reap it."""
        if self._http is not None:
            self._http.close()
            self._http = None
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
    return SpawnedFake(
        proc, line, protocol, latency_s=latency_s, stream_chunk_delay_s=stream_chunk_delay_s
    )
