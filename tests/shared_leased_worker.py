"""One worker process of the leased-mode tests (run with ``python``).

Arguments: ``url namespace key rate burst concurrency lease_ttl_s``. It builds a
leased limiter, prints ``ready``, reads the start and end times (``time.time()``
seconds) from stdin, hammers ``reserve`` from ``concurrency`` tasks between them
(a refusal sleeps its wait, at most 5 ms), returns its slices (``aclose``) and
prints a JSON line: the times of its admissions inside the window, its
admissions by source and its limiter stats.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

from llmrelay import SharedStateConfig
from llmrelay._shared import SharedLimiter


async def main(
    url: str, ns: str, key: str, rate: float, burst: float, concurrency: int, ttl: float
) -> None:
    lim = SharedLimiter(
        SharedStateConfig(url=url, namespace=ns, mode="leased", op_timeout_s=0.5, lease_ttl_s=ttl)
    )
    lim.configure(key, rate, burst)
    await lim.heartbeat()
    print("ready", flush=True)
    start, end = (float(x) for x in sys.stdin.readline().split())
    await asyncio.sleep(max(0.0, start - time.time()))  # the common start line
    await lim.heartbeat()  # every worker is live by now: slices split among them
    times: list[float] = []
    sources: Counter[str] = Counter()

    async def hammer() -> None:
        while time.time() < end:
            a = await lim.reserve([(key, 1.0)])
            now = time.time()
            if not a.admitted:
                await asyncio.sleep(min(max(a.wait_s, 0.0005), 0.005))
            elif now <= end:
                times.append(now)
                sources[a.source] += 1

    await asyncio.gather(*(hammer() for _ in range(concurrency)))
    returned = await lim.aclose()
    print(
        json.dumps(
            {"times": times, "sources": dict(sources), "stats": lim.stats(), "returned": returned}
        ),
        flush=True,
    )


if __name__ == "__main__":
    url, ns, key, rate, burst, conc, ttl = sys.argv[1:8]
    asyncio.run(main(url, ns, key, float(rate), float(burst), int(conc), float(ttl)))
