"""Fork scenario of leased mode, in a process of its own (``python`` it).

Argument: the Redis URL and a namespace. The parent leases a slice, forks; the
child must not admit from the parent's slice (it is the parent's, booked once):
it finds none and leases its own. Prints one JSON line per process:
``{"who", "held_before", "first_source"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import warnings

from llmrelay import SharedStateConfig
from llmrelay._shared import SharedLimiter


async def use(lim: SharedLimiter, who: str) -> None:
    held = lim.leased_units("f/m:rpm")
    first = (await lim.reserve([("f/m:rpm", 1.0)])).source
    row = {"who": who, "held_before": held, "first_source": first}
    os.write(1, (json.dumps(row) + "\n").encode())  # one write(2) per line
    await lim.aclose()


def main(url: str, ns: str) -> None:
    lim = SharedLimiter(
        SharedStateConfig(url=url, namespace=ns, mode="leased", op_timeout_s=0.5, lease_ttl_s=30)
    )
    lim.configure("f/m:rpm", 10.0, 1000.0)  # slices of 300
    asyncio.run(lim.reserve([("f/m:rpm", 1.0)]))
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
    main(sys.argv[1], sys.argv[2])
