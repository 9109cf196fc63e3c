"""Fork scenario of the shared limiter, in a process of its own (``python`` it).

Argument: the Redis URL. The parent opens its connection, forks, and the child
uses the same limiter: it must open a fresh connection of its own (no shared
socket) and get answers from Redis; the parent's connection keeps working.
Prints one JSON line per process: ``{"who", "source", "connects", "elapsed_s"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import warnings

from llmrelay import SharedStateConfig
from llmrelay._shared import SharedLimiter


async def use(lim: SharedLimiter, who: str) -> None:
    t0 = time.perf_counter()
    sources = [(await lim.reserve([("f/m:rpm", 1.0)])).source for _ in range(3)]
    row = {
        "who": who,
        "source": sources[-1],
        "connects": lim.stats()["connects"],
        "elapsed_s": time.perf_counter() - t0,
    }
    # One write(2) per line: parent and child share the pipe, and print() may
    # split the text and its newline into two writes that interleave.
    os.write(1, (json.dumps(row) + "\n").encode())


def main(url: str) -> None:
    lim = SharedLimiter(SharedStateConfig(url=url, op_timeout_s=0.5))
    lim.configure("f/m:rpm", 1000.0, 1000.0)
    asyncio.run(use(lim, "before"))
    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
    pid = os.fork()
    if pid == 0:
        try:
            asyncio.run(use(lim, "child"))
        finally:
            os._exit(0)
    asyncio.run(use(lim, "parent"))
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv[1])
