"""One worker process of the cross-process limiter tests (run with ``python``).

Arguments: ``url key rate burst concurrency``. It connects, prints ``ready``,
reads the start and end times (``time.time()`` seconds) from stdin, hammers
``reserve`` from ``concurrency`` tasks between them and prints a JSON line
with its admissions by source (those whose reply came back by the end).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

from llmrelay import SharedStateConfig
from llmrelay._shared import SharedLimiter


async def main(url: str, key: str, rate: float, burst: float, concurrency: int) -> None:
    lim = SharedLimiter(SharedStateConfig(url=url, op_timeout_s=0.5))
    lim.configure(key, rate, burst)
    await lim.heartbeat()
    print("ready", flush=True)
    start, end = (float(x) for x in sys.stdin.readline().split())
    await asyncio.sleep(max(0.0, start - time.time()))  # the common start line
    counts: Counter[str] = Counter()

    async def hammer() -> None:
        while time.time() < end:
            a = await lim.reserve([(key, 1.0)])
            # Count only what was decided inside the window: the reply came
            # back before its end (a call still in flight then is outside it).
            if a.admitted and time.time() <= end:
                counts[a.source] += 1

    await asyncio.gather(*(hammer() for _ in range(concurrency)))
    print(json.dumps(dict(counts)), flush=True)


if __name__ == "__main__":
    url, key, rate, burst, conc = sys.argv[1:6]
    asyncio.run(main(url, key, float(rate), float(burst), int(conc)))
