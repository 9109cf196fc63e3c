"""User code under ``mypy --strict``: a typo'd or mistyped parameter is reported, and the
results (metrics, snapshots, conversations, batches) carry real types, not ``Any``."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

import llmrelay

mypy_api = pytest.importorskip("mypy.api")

# The openai SDK's message and tool params are TypedDicts like these (importing the SDK
# itself would make mypy read all of it: a minute on a small machine).
GOOD = """
from typing import Literal, TypedDict

from llmrelay import ChatResponse, LLMService, MetricsSnapshot, llm
from llmrelay.errors import LLMRelayError


class UserMessage(TypedDict):
    role: Literal["user"]
    content: str


class Function(TypedDict):
    name: str


class Tool(TypedDict):
    type: Literal["function"]
    function: Function


svc = LLMService()
user: UserMessage = {"role": "user", "content": "hi"}
tool: Tool = {"type": "function", "function": {"name": "f"}}
r: ChatResponse = svc.chat(
    [user],
    temperature=0,
    max_tokens=100,
    stop="END",
    tools=[tool],
    tool_choice="auto",
    n=2,
    reasoning_effort="low",
    logit_bias={50256: -100},
    service_tier="flex",
    extra={"num_ctx": 8192},
)
text: str = r.choices[0].message.text
snap: MetricsSnapshot = svc.metrics.snapshot()
n: int = snap.total("requests")
view = svc.with_options(model="openai/gpt-4o-mini", temperature=0.2)
results = llm.batch(["a", {"messages": "b", "temperature": 0}], concurrency=2)
for item in results:
    if isinstance(item, LLMRelayError):
        continue
    out: str = item.text
conv = svc.conversation(system="be brief", max_tokens=50)
answer: ChatResponse = conv.send("hi")
vectors: list[list[float]] = svc.embed(["a"], dimensions=8).embeddings
"""

BAD = """
from llmrelay import LLMService, llm

svc = LLMService()
svc.chat("hi", temprature=0)
svc.chat("hi", max_tokens="100")
svc.with_options(temprature=0)
llm.chat("hi", reasoning_effort="hihg")
svc.embed("x", bogus=1)
svc.metrics.snapshot().no_such_field
svc.conversation().no_such_method()
llm.batch(["a"])[0].no_such_attribute
"""

# (line of BAD, what mypy must say about it)
EXPECTED = [
    (5, r'Unexpected keyword argument "temprature"'),
    (6, r'Argument "max_tokens" .* incompatible type "str"'),
    (7, r'Unexpected keyword argument "temprature"'),
    (8, r'Argument "reasoning_effort" .* incompatible type'),
    (9, r'Unexpected keyword argument "bogus"'),
    (10, r'"MetricsSnapshot" has no attribute "no_such_field"'),
    (11, r'"Conversation" has no attribute "no_such_method"'),
    (12, r'has no attribute "no_such_attribute"'),
]


def test_mypy_strict_checks_user_code(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    bad = tmp_path / "bad.py"
    good.write_text(textwrap.dedent(GOOD))
    bad.write_text(textwrap.dedent(BAD))
    package_root = Path(llmrelay.__file__).resolve().parent.parent
    config = tmp_path / "mypy.ini"
    search = "" if package_root.name in ("site-packages", "dist-packages") else package_root
    config.write_text(f"[mypy]\nstrict = True\nmypy_path = {search}\n")
    stdout, stderr, _ = mypy_api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--no-error-summary",
            "--show-error-codes",
            str(good),
            str(bad),
        ]
    )
    assert not stderr, stderr
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    good_errors = [e for e in errors if Path(e.split(":", 1)[0]).name == "good.py"]
    assert good_errors == [], "\n".join(good_errors)
    bad_errors = [e for e in errors if Path(e.split(":", 1)[0]).name == "bad.py"]
    for line, pattern in EXPECTED:
        found = [e for e in bad_errors if e.split(":")[1] == str(line)]
        assert any(re.search(pattern, e) for e in found), (line, pattern, bad_errors)
    other = [e for e in errors if Path(e.split(":", 1)[0]).name not in ("good.py", "bad.py")]
    assert other == [], "\n".join(other)  # the package itself is clean under --strict
