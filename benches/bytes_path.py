"""The byte-level HTTP path, before and after, against the bare asyncio client (the floor).

    python benches/bytes_path.py [--before-ref REF] [--rounds 3] [--seq 2000]
                                 [--conc-total 5000] [--pin]

Starts the fake OpenAI server (``compare/fakeserver.py``) in its own process, then runs
each client in a fresh process per round, the clients' order rotated every round, so
before and after see the same machine load (the figures are noisy on a shared machine;
the ratios are what to read). Each run: 200 warm-up calls, ``--seq`` sequential calls
(client CPU per request: ``time.process_time`` of the client process, the core's tokio
thread included; p50 latency), then ``--conc-total`` calls 64 in flight (requests/s);
then, for llmrelay, the adapter's share alone (no I/O, best of 5 x 5,000).

Clients: ``bare asyncio`` (a hand-written keep-alive HTTP/1.1 client: the floor),
``llmrelay`` (this tree: bytes straight to the core client), ``llmrelay (httpx shim)``
(this tree, the same core client behind the httpx shim, i.e. what a user-supplied
transport costs) and, with ``--before-ref``, ``llmrelay before`` (that commit's Python
package with this tree's compiled core: httpx objects through RustTransport).
Prints one table of medians and ratios to the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COMPARE = HERE / "compare"
ROOT = HERE.parent


# ---- the worker: one client, one fresh process ----------------------------------------------


async def _measure(name: str, url: str, seq_n: int, conc_total: int) -> dict[str, float]:
    sys.path.insert(0, str(COMPARE))
    import clients
    import harness

    client: Any
    if name == "bare asyncio":
        client = clients.BareAsyncio()
    elif name == "llmrelay (httpx shim)":
        from llmrelay._transport import RustTransport

        class ShimmedRust(RustTransport):
            """The core client behind the httpx shim (a subclass is not sent bytes
            directly: it may override handle_async_request)."""

        client = clients.LLMRelay(lambda _p: ShimmedRust(), name)
    else:
        client = clients.LLMRelay()
    await client.start(url)
    try:
        await harness.timed_loop(client.call, 200, 30.0)
        await harness.settle()
        cpu0 = time.process_time()
        lat = await harness.timed_loop(client.call, seq_n, 60.0)
        cpu = time.process_time() - cpu0
        await harness.burst(client.call, 64, 64, 30.0)  # open the connections
        await harness.settle()
        clat, wall, ccpu = await harness.burst(client.call, 64, conc_total, 60.0)
    finally:
        await client.close()
    return {
        "cpu_us": cpu / len(lat) * 1e6,
        "p50_us": statistics.median(lat) * 1e6,
        "rps64": len(clat) / wall,
        "cpu64_us": ccpu / len(clat) * 1e6,
    }


def adapter_work(n: int = 5000) -> float:
    """Microseconds of Python per request for the adapter's share alone, no I/O: build
    the request, read the reply's rate-limit headers, decode the reply. Bytes in and
    out where the adapter speaks them, else httpx objects as the old execute stage
    built them (``httpx.Request``, a read ``httpx.Response``)."""
    import timeit

    import httpx
    from fakeserver import _completion

    from llmrelay._types import build_request
    from llmrelay.providers import OpenAIAdapter

    body = _completion()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"date", b"Tue, 01 Dec 2026 19:00:00 GMT"),
        (b"x-request-id", b"req-1"),
    ]
    a: Any = OpenAIAdapter(deployment="openai", base_url="http://127.0.0.1:1/v1", api_key="x")
    req = build_request(clients_messages(), None, {})

    def with_httpx() -> Any:
        r = a.build_chat_request(req, "gpt-4o-mini", stream=False)
        r.extensions["timeout"] = {"connect": 10.0, "read": 60.0, "write": 10.0, "pool": 10.0}
        _ = (r.method, str(r.url), r.headers.raw, r.content)
        resp = httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))
        resp.read()
        a.rate_limit_info(resp.headers)
        return a.parse_chat_response(resp, "gpt-4o-mini")

    def with_bytes() -> Any:
        a.wire_chat(req, "gpt-4o-mini", stream=False)
        a.rate_limit_info(headers)
        return a.decode_chat(200, headers, body, "gpt-4o-mini")

    fn = with_bytes if hasattr(a, "wire_chat") else with_httpx
    assert fn().text
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def clients_messages() -> Any:
    import clients

    return clients.MESSAGES


def worker(argv: list[str]) -> None:
    name, url, seq_n, conc_total, cpu = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]
    if cpu != "-" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})
    sys.path.insert(0, str(COMPARE))
    import netguard

    netguard.install()
    out = asyncio.run(_measure(name, url, seq_n, conc_total))
    if name != "bare asyncio" and "shim" not in name:
        out["adapter_us"] = adapter_work()
    print(json.dumps(out))


# ---- the driver ------------------------------------------------------------------------------


def _before_tree(ref: str, tmp: Path) -> Path:
    """``ref``'s Python package, with this tree's compiled core copied in."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "python"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    for so in (ROOT / "python" / "llmrelay").glob("_core*.so"):
        shutil.copy(so, tmp / "python" / "llmrelay" / so.name)
    return tmp / "python"


def _run(name: str, pythonpath: Path, url: str, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    cpu = "0" if args.pin else "-"
    cmd = [sys.executable, __file__, "--worker", name, url, str(args.seq), str(args.conc_total)]
    cmd.append(cpu)
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=600)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _table(results: dict[str, list[dict[str, float]]]) -> str:
    med = {
        name: {k: statistics.median(r[k] for r in runs if k in r) for k in runs[0]}
        for name, runs in results.items()
    }
    floor = med["bare asyncio"]
    lines = [
        "| client | CPU µs/req (seq) | x floor | p50 µs (seq) | req/s @64 | x floor "
        "| CPU µs/req @64 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in med.items():
        lines.append(
            f"| {name} | {m['cpu_us']:.0f} | {m['cpu_us'] / floor['cpu_us']:.2f}x "
            f"| {m['p50_us']:.0f} | {m['rps64']:,.0f} | {m['rps64'] / floor['rps64']:.2f}x "
            f"| {m['cpu64_us']:.0f} |"
        )
    adapter = {n: m["adapter_us"] for n, m in med.items() if "adapter_us" in m}
    if adapter:
        lines += ["", "Adapter work alone (build the request, read the reply; no I/O), µs/request:"]
        lines += [f"- {n}: {us:.1f}" for n, us in adapter.items()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before-ref", default=None, help="git ref of the 'before' package")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seq", type=int, default=2000)
    p.add_argument("--conc-total", type=int, default=5000)
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to core 1 and each client process to core 0 (as bench-compare)",
    )
    args = p.parse_args()
    here = ROOT / "python"
    variants: dict[str, Path] = {"bare asyncio": here}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before_ref:
            variants["llmrelay before"] = _before_tree(args.before_ref, Path(tmp))
        variants["llmrelay"] = here
        variants["llmrelay (httpx shim)"] = here
        server = subprocess.Popen(
            [sys.executable, str(COMPARE / "fakeserver.py"), "--port", "0"]
            + (["--cpu", "1"] if args.pin else []),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            results: dict[str, list[dict[str, float]]] = {n: [] for n in variants}
            names = list(variants)
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    results[name].append(_run(name, variants[name], url, args))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(10)
    load = os.getloadavg()
    pinned = "client on core 0, server on core 1" if args.pin else "not pinned"
    print(
        f"{args.rounds} rounds, medians, {pinned}; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(_table(results))
    print(json.dumps(results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
