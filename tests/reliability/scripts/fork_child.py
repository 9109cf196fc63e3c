"""Run by test_fork.py in a process of its own: a service built before ``os.fork``.

argv: base_url disk_path mode, where mode is ``preload`` (built at import and never
used by the parent, as gunicorn --preload does) or ``used`` (the parent calls it
before forking, then keeps using it). Prints one JSON line per process; exit code 0
when every child answered, reported its disk tier as off and closed at once.
"""

from __future__ import annotations

import json
import os
import sys
import time

from llmrelay import CacheConfig, LLMService, LLMServiceConfig, ProviderConfig

BASE_URL, DISK, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
CHILDREN = 2
CALLS = 4
# the limit of any one wait in here: the test's own timeout is larger
BOUND_S = 20.0

SVC = LLMService(
    LLMServiceConfig(
        providers=[
            ProviderConfig(
                name="openai", base_url=BASE_URL, api_key="sk-fork-test", models=["gpt-4o-mini"]
            )
        ],
        default_model="openai/gpt-4o-mini",
        cache=CacheConfig(disk_path=DISK),
    )
)


def emit(record: dict[str, object]) -> None:
    """One JSON line in one write(2): lines of processes sharing the pipe never mix."""
    os.write(1, (json.dumps(record) + "\n").encode())


def calls(tag: str) -> list[str]:
    return [SVC.chat(f"{tag} prompt {i}", temperature=0).text for i in range(CALLS)]


def child(n: int) -> int:
    answers = calls(f"child{n}")
    snap = SVC.metrics.snapshot()
    t0 = time.monotonic()
    SVC.close()
    took = time.monotonic() - t0
    emit(
        {
            "who": f"child{n}",
            "answers": len(answers),
            "disk": snap.disk_tier,
            "close_s": round(took, 3),
        }
    )
    ok = len(answers) == CALLS and snap.disk_tier.get("enabled") is False and took < 5.0
    return 0 if ok else 1


def main() -> int:
    if MODE == "used":
        calls("parent-before")
    pids = []
    for n in range(CHILDREN):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = child(n)
            finally:
                os._exit(code)
        pids.append(pid)
    codes = []
    deadline = time.monotonic() + BOUND_S
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                codes.append(-9)
                break
            time.sleep(0.01)
    parent_answers = calls("parent-after") if MODE == "used" else []
    snap = SVC.metrics.snapshot()
    SVC.close()
    emit(
        {
            "who": "parent",
            "children": codes,
            "answers": len(parent_answers),
            "disk": snap.disk_tier,
            "disk_entries": snap.cache.get("disk_entries", 0),
        }
    )
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
