"""A throwaway ``redis-server`` on 127.0.0.1 for tests and benchmarks.

Started on a free port with persistence off, stopped by its PID; never a
system service. ``resp`` sends one command with a raw socket (no client
library needed) to look at or poke the server.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls_certs(into: str) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl);
    the paths of the CA cert, the server cert and the server key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl is not installed")
    ca, ca_key = f"{into}/ca.crt", f"{into}/ca.key"
    crt, key, csr, ext = (f"{into}/server.{x}" for x in ("crt", "key", "csr", "ext"))
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    rsa = ["-newkey", "rsa:2048", "-nodes", "-keyout"]
    steps = [
        ["req", "-x509", *rsa, ca_key, "-out", ca, "-subj", "/CN=llmrelay-ca", "-days", "2"],
        ["req", *rsa, key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"],
    ]
    steps[2] += ["-out", crt, "-extfile", ext, "-days", "2"]
    for step in steps:
        subprocess.run([openssl, *step], check=True, capture_output=True, timeout=60)
    return ca, crt, key


def _start_server(binary: str, directory: str, args: list[str]) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1 with no persistence, in the foreground, in
    ``directory``, with ``args`` (its ports, cluster or TLS settings)."""
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
    return subprocess.Popen(
        [binary, *args, *common, "--dir", directory, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _poll_until(
    ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], within_s: float
) -> None:
    """Poll ``ready`` (a connection refused counts as not yet) until it holds;
    RuntimeError when a process exits or ``within_s`` passes first."""
    deadline = time.monotonic() + within_s
    while True:
        with contextlib.suppress(OSError, RuntimeError):
            if ready():
                return
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError("not ready in time")
        time.sleep(0.01)


class RedisServer:
    """One ``redis-server`` process; ``url`` points at it.

    With ``tls=True`` it serves TLS only (``rediss://``), with a certificate for
    127.0.0.1 signed by a throwaway CA whose cert is at ``ca_file``.
    """

    def __init__(self, port: int | None = None, *, tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="llmrelay-redis-")
        self.ca_file: str | None = None
        listen = ["--port", str(self.port)]
        if tls:
            self.ca_file, crt, key = make_tls_certs(self._dir.name)
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", crt]
            listen += ["--tls-key-file", key, "--tls-ca-cert-file", self.ca_file]
            listen += ["--tls-auth-clients", "no"]
        self.proc = _start_server(binary, self._dir.name, listen)
        self._wait_ready()

    def _wait_ready(self, within_s: float = 10.0) -> None:
        try:
            _poll_until(lambda: self.resp("PING") == "PONG", [self.proc], within_s)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not start") from None

    def resp(self, *args: str | int | float, timeout_s: float = 2.0) -> Any:
        """Send one command; the decoded reply (str, int, list, None)."""
        parts = [str(a).encode() for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as raw:
            if self.ca_file is None:
                raw.sendall(out)
                return _read(raw.makefile("rb"))
            ctx = ssl.create_default_context(cafile=self.ca_file)
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s, s.makefile("rb") as f:
                s.sendall(out)
                return _read(f)

    def pause(self) -> None:
        """SIGSTOP the server (it stops answering; connections stay open)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the server."""
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server by its PID and wait for it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()


def _read(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read(f) for _ in range(n)]
    raise ValueError(f"unexpected reply {line!r}")


def free_cluster_port(taken: set[int]) -> int:
    """A port P on 127.0.0.1 with P and its cluster bus port P + 10000 both free a
    moment ago (so P is below 55536, which an ephemeral port may not be)."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20_000, 40_000)
        if port in taken or port + 10_000 in taken:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """A three-master Redis Cluster on 127.0.0.1 (no replicas, no persistence).

    Each master is a ``redis-server --cluster-enabled yes`` on a free port (and bus
    port + 10000) with its
    nodes file in a temp dir; ``redis-cli --cluster create`` assigns the slots and
    the cluster is ready when every node says ``cluster_state:ok``. Stopped by PID.
    ``url`` lists the seeds (for ``SharedStateConfig(url=..., cluster=True)``).
    """

    def __init__(
        self, masters: int = 3, within_s: float = 30.0, extra_args: tuple[str, ...] = ()
    ) -> None:
        self._extra = list(extra_args)
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise FileNotFoundError(
                "redis-server and redis-cli are not installed (apt-get install redis-server)"
            )
        self._dir = tempfile.TemporaryDirectory(prefix="llmrelay-rcluster-")
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(masters):
                port = free_cluster_port(set(self.ports))
                self.ports.append(port)
                self.procs.append(self._start(server, port))
            for port in self.ports:
                self._wait(lambda port=port: self.resp(port, "PING") == "PONG", within_s)
            created = subprocess.run(
                [cli, "--cluster", "create"]
                + [f"127.0.0.1:{p}" for p in self.ports]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=within_s,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-500:]!r}")
            for port in self.ports:
                self._wait(
                    lambda port=port: "cluster_state:ok" in self.resp(port, "CLUSTER", "INFO"),
                    within_s,
                )
        except BaseException:
            self.stop()
            raise
        self.urls = [f"redis://127.0.0.1:{p}" for p in self.ports]
        self.url = ",".join(self.urls)

    def _start(self, binary: str, port: int) -> subprocess.Popen[bytes]:
        cluster = ["--cluster-enabled", "yes"]
        cluster += ["--cluster-config-file", f"{self._dir.name}/nodes-{port}.conf"]
        return _start_server(binary, self._dir.name, ["--port", str(port), *cluster, *self._extra])

    def _wait(self, ready: Any, within_s: float) -> None:
        try:
            _poll_until(ready, self.procs, within_s)
        except RuntimeError:
            raise RuntimeError("the Redis Cluster did not come up") from None

    @staticmethod
    def resp(port: int, *args: str | int | float, timeout_s: float = 2.0) -> Any:
        """Send one command to the node on ``port``; the decoded reply."""
        parts = [str(a).encode() for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(out)
            return _read(s.makefile("rb"))

    def keys(self, port: int, pattern: str = "*") -> list[str]:
        """Every key matching ``pattern`` on the node on ``port`` (a bounded SCAN)."""
        found: list[str] = []
        cursor = "0"
        for _ in range(10_000):
            cursor, batch = self.resp(port, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found.extend(batch)
            if cursor == "0":
                return found
        raise RuntimeError("SCAN did not finish")

    def owner(self, slot: int) -> int:
        """The port of the master that serves ``slot`` (from ``CLUSTER SLOTS``)."""
        for start, end, master, *_ in self.resp(self.ports[0], "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise RuntimeError(f"slot {slot} is not served")

    def move_slot(self, slot: int, to_port: int) -> None:
        """Move ``slot`` and its keys to the master on ``to_port`` (the steps of a
        resharding: IMPORTING, MIGRATING, MIGRATE the keys, then SETSLOT NODE)."""
        src = self.owner(slot)
        src_id, dst_id = (self.resp(p, "CLUSTER", "MYID") for p in (src, to_port))
        self.resp(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        self.resp(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        for _ in range(10_000):
            keys = self.resp(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            self.resp(src, "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
        for port in self.ports:
            self.resp(port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)

    def stop(self) -> None:
        """Stop every node by its PID and wait for it."""
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._dir.cleanup()


#: Skips a module's tests where redis-server is not installed (.ci/run installs it).
needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (.ci/run installs it)",
)
