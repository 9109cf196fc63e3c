"""Fresh-process measurements, one JSON line on stdout.

``worker.py import MODULE``: seconds to import MODULE and the RSS after it.
``worker.py rss CLIENT URL N CPU``: the RSS after import, and after N requests by CLIENT
(16 in flight, bounded to 120 s).
"""

from __future__ import annotations

import json
import os
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    what = sys.argv[1]
    if what == "import":
        module = sys.argv[2]
        base = rss_mb()
        t = time.perf_counter()
        if module != "-":
            __import__(module)
        took = time.perf_counter() - t
        print(json.dumps({"import_s": took, "rss_mb": rss_mb(), "base_rss_mb": base}))
        return
    if what == "rss":
        import asyncio

        name, url, n, cpu = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        if cpu >= 0 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})
        import netguard

        netguard.install()
        import clients
        import harness

        async def run() -> dict[str, float]:
            client = clients.make(name)
            await client.start(url)
            after_import = rss_mb()
            lat, _, _ = await harness.burst(client.call, 16, n, 120.0)
            await client.close()
            return {"rss_import_mb": after_import, "rss_mb": rss_mb(), "requests": len(lat)}

        print(json.dumps(asyncio.run(run())))
        return
    raise SystemExit(f"unknown measurement {what!r}")


if __name__ == "__main__":
    main()
