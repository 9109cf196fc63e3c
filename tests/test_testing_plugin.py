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


SYNC_TESTS = """
import httpx


def test_sync_openai(fake_openai):
    fake_openai.script("scripted")
    with httpx.Client(timeout=5.0) as c:
        r = c.post(
            fake_openai.base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": "Bearer t"},
        )
    assert r.json()["choices"][0]["message"]["content"] == "scripted"


def test_sync_anthropic_and_ollama(fake_anthropic, fake_ollama):
    with httpx.Client(timeout=5.0) as c:
        assert c.get(fake_ollama.url + "/api/tags").json()["models"]
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        r = c.get(fake_anthropic.url + "/v1/models", headers=headers)
        assert r.status_code == 200


async def test_async_still_on_the_test_loop(fake_openai):
    import asyncio

    assert fake_openai._server._server.get_loop() is asyncio.get_running_loop()
"""


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_fixtures_in_sync_tests(pytester: pytest.Pytester, mode: str) -> None:
    source = SYNC_TESTS
    if mode == "strict":
        source = source.replace(
            "async def test_async", "@pytest.mark.asyncio\nasync def test_async"
        )
        source = "import pytest\n" + source
    pytester.makepyfile(test_sync_fakes=source)
    result = pytester.runpytest_subprocess(
        "-W", "error", "-o", f"asyncio_mode={mode}",
        "-o", "asyncio_default_fixture_loop_scope=function", "-p", "no:randomly", "-q",
    )  # fmt: skip
    result.assert_outcomes(passed=3)


CONSUMED_TESTS = """
import httpx
import pytest


def ask(fake):
    with httpx.Client(timeout=5.0) as c:
        c.post(
            fake.base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": "Bearer t"},
        )


@pytest.mark.llmrelay_fakes(assert_all_consumed=True)
def test_leftover_fails(fake_openai):
    fake_openai.script("used")
    fake_openai.script("left over")
    ask(fake_openai)


@pytest.mark.llmrelay_fakes(assert_all_consumed=True)
async def test_leftover_fails_async(fake_openai):
    fake_openai.script("left over async")


@pytest.mark.llmrelay_fakes(assert_all_consumed=True)
def test_all_used_passes(fake_openai):
    fake_openai.script("used")
    ask(fake_openai)


@pytest.mark.llmrelay_fakes(assert_all_consumed=True)
def test_failing_test_is_not_reported_twice(fake_openai):
    fake_openai.script("left over")
    assert False


def test_unmarked_leftover_is_fine(fake_openai):
    fake_openai.script("left over")
"""


def test_teardown_checks_unconsumed_scripts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_consumed=CONSUMED_TESTS)
    args = ["-W", "error", "-o", "asyncio_mode=auto", "-p", "no:randomly", "-q"]
    args += ["-o", "asyncio_default_fixture_loop_scope=function"]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=4, failed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leftover_fails *",
            "*1 scripted reply not consumed:*",
            "*- chat reply 'left over'",
        ]
    )
    assert "left over async" in result.stdout.str()
    # the ini option turns the check on for every test
    result = pytester.runpytest_subprocess(
        *args, "-o", "llmrelay_assert_all_consumed=true", "-k", "unmarked"
    )
    result.assert_outcomes(passed=1, errors=1)
