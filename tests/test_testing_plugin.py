"""The pytest plugin's fixtures work in a fresh pytest run, in auto and strict asyncio modes,
with warnings as errors (every socket closed, no task left pending)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import httpx
import pytest


@pytest.mark.asyncio
async def test_openai(fake_openai):
    fake_openai.inject("hang", times=1)  # left hanging: the fixture must still stop cleanly
    async with httpx.AsyncClient(timeout=0.1) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(fake_openai.base_url + "/models", headers={"authorization": "Bearer t"})
        r = await c.get(fake_openai.base_url + "/models", headers={"authorization": "Bearer t"})
        assert r.status_code == 200


@pytest.mark.asyncio
async def test_anthropic_and_ollama(fake_anthropic, fake_ollama):
    async with httpx.AsyncClient(timeout=5.0) as c:
        r = await c.get(fake_ollama.url + "/api/tags")
        assert r.json()["models"]
        assert fake_anthropic.url != fake_ollama.url
"""


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_fixtures_in_a_fresh_pytest(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_uses_fakes=TESTS)
    result = pytester.runpytest_subprocess(
        "-W", "error", "-o", f"asyncio_mode={mode}",
        "-o", "asyncio_default_fixture_loop_scope=function", "-p", "no:randomly", "-q",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
