"""Fork scenario of a service with shared limits, in a process of its own.

Reads a ``cluster_worker.Plan`` as JSON on stdin. Builds the LLMService, makes two
calls, forks, and both processes make two more through the sync API. Prints one JSON
line per process: ``{"who", "pid", "elapsed_s"}`` and the service's
``snapshot().shared`` numbers (connected, connects, reservations, fallback_calls,
member).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

from cluster_worker import Plan, service_config
from llmrelay import LLMService


def use(svc: LLMService, who: str) -> None:
    t0 = time.perf_counter()
    for i in range(2):
        svc.chat(f"{who} {i}", timeout=30.0)
    shared = svc.metrics.snapshot().shared
    row = {"who": who, "pid": os.getpid(), "elapsed_s": time.perf_counter() - t0}
    for k in ("connected", "connects", "reservations", "fallback_calls", "member"):
        row[k] = shared[k]
    # one write(2) per line: parent and child share the pipe
    os.write(1, (json.dumps(row) + "\n").encode())


def main() -> None:
    plan = Plan(**json.loads(sys.stdin.read()))
    svc = LLMService(service_config(plan))
    use(svc, "before")
    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            use(svc, "child")
            svc.close()
            code = 0
        finally:
            os._exit(code)
    use(svc, "parent")
    svc.close()
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
