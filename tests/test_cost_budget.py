"""Cost and budgets: the dated price table and its overrides, ``ChatResponse.cost`` by part
(None when a price is unknown), cost in metrics and Prometheus, and USD budgets per
deployment and per view: reserved from the estimate, reconciled with the real cost,
refused with BudgetExceededError before sending (not retried, not a breaker failure)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmrelay import (
    BudgetConfig,
    LLMService,
    ModelPrice,
    ModelSelectionStrategy,
    Usage,
    _core,
)
from llmrelay._budget import Budget
from llmrelay._cli import main
from llmrelay._pricing import BUILTIN_PRICES, PRICES_AS_OF, PriceBook, cost_of
from llmrelay.errors import BudgetExceededError, ConfigError
from llmrelay.providers import accumulate_chunks
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory

MINI = "openai/gpt-4o-mini"
HAIKU = "claude/claude-haiku-4-5"


# ---- prices and cost ---------------------------------------------------------------------------


def test_cost_by_part() -> None:
    price = BUILTIN_PRICES["anthropic"]["claude-haiku-4-5"]
    u = Usage(
        prompt_tokens=1000,
        completion_tokens=200,
        total_tokens=1200,
        cached_tokens=600,
        cache_write_tokens=100,
    )
    c = cost_of(price, u)
    assert c is not None
    assert c.input_usd == pytest.approx(300 * 1.00 / 1e6)  # the uncached part only
    assert c.cache_read_usd == pytest.approx(600 * 0.10 / 1e6)
    assert c.cache_write_usd == pytest.approx(100 * 1.25 / 1e6)
    assert c.output_usd == pytest.approx(200 * 5.00 / 1e6)
    assert c.total_usd == pytest.approx(c.input_usd + c.cache_read_usd + c.cache_write_usd + 1e-3)
    # unreported cache counts (None) cost nothing, like 0
    plain = cost_of(price, Usage(prompt_tokens=1000, completion_tokens=0, total_tokens=1000))
    assert plain is not None and plain.total_usd == pytest.approx(1e-3)


def test_unknown_price_is_none_never_a_guess() -> None:
    book = PriceBook()
    assert book.cost("openai", "o", "my-finetune", Usage(prompt_tokens=5)) is None
    assert book.cost("ollama", "local", "llama3.2", Usage(prompt_tokens=5)) is None
    # a known model whose cached rate is unknown: a call that read the cache has no cost
    turbo = Usage(prompt_tokens=10, completion_tokens=1, cached_tokens=5)
    assert book.cost("openai", "o", "gpt-4-turbo", turbo) is None
    assert book.cost("openai", "o", "gpt-4-turbo", Usage(prompt_tokens=10)) is not None
    # a dated snapshot name is priced as its model
    dated = book.price("anthropic", "c", "claude-haiku-4-5-20251001")
    assert dated == BUILTIN_PRICES["anthropic"]["claude-haiku-4-5"]
    assert book.price("openai", "o", "gpt-4o-mini-2024-07-18") is not None
    assert PRICES_AS_OF.count("-") == 2


def test_pricing_overrides_most_specific_first() -> None:
    p = {k: ModelPrice(input=v, output=v) for k, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))}
    book = PriceBook(
        {
            "prod/gpt-4o-mini": p["a"],
            "openai/gpt-4o-mini": p["b"],
            "gpt-4o-mini": p["c"],
            "local/*": p["a"],
        }
    )
    assert book.price("openai", "prod", "gpt-4o-mini") == p["a"]
    assert book.price("openai", "other", "gpt-4o-mini") == p["b"]
    assert book.price("openai_compatible", "x", "gpt-4o-mini") == p["c"]
    assert book.price("ollama", "local", "anything") == p["a"]
    assert book.price("openai", "x", "gpt-4o") == BUILTIN_PRICES["openai"]["gpt-4o"]


def test_bad_pricing_and_budget_config(make_config: ConfigFactory) -> None:
    with pytest.raises(ConfigError) as ei:
        make_config(pricing={"gpt-4o-mini": {"input": -1, "output": 1}})
    assert ei.value.field == "pricing['gpt-4o-mini'].input"
    with pytest.raises(ConfigError) as ei:
        make_config(pricing={"gpt-4o-mini": {"input": 1}})
    assert ei.value.field is not None and "pricing" in ei.value.field
    with pytest.raises(ConfigError) as ei:
        BudgetConfig(limit_usd=1.0, period_s=0)
    assert ei.value.field == "period_s"


async def test_response_cost_plain_streamed_cached(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script("four words of answer", prompt_tokens=1000, completion_tokens=100)
    async with LLMService(make_config()) as svc:
        r = await svc.achat("q", temperature=0)
        assert r.cost is not None
        assert r.cost.input_usd == pytest.approx(1000 * 0.15 / 1e6)
        assert r.cost.output_usd == pytest.approx(100 * 0.60 / 1e6)
        assert r.cost.cache_read_usd == 0.0 and r.to_dict()["cost"]["total_usd"] > 0
        hit = await svc.achat("q", temperature=0)
        assert hit.cached and hit.cost is not None and hit.cost.total_usd == 0.0
        chunks = [c async for c in svc.astream("streamed", temperature=0)]
        assert accumulate_chunks(chunks).usage.prompt_tokens > 0
        local = await svc.achat("q", model="local/llama3.2")
        assert local.cost is None  # no price for a local model: unknown, not 0
        snap = svc.metrics.snapshot()
        [mini] = [s for s in snap.series if s.deployment == "openai" and s.counter("successes")]
        # the plain call and the stream, not the cache hit
        assert mini.counter("successes") == 2
        assert mini.cost_usd > r.cost.total_usd
        assert snap.cost_usd("openai") == pytest.approx(mini.cost_usd)
        assert snap.total("cost_unknown") == 1
        prom = svc.metrics.prometheus()
    line = next(x for x in prom.splitlines() if x.startswith("llmrelay_cost_usd_total{"))
    assert 'provider="openai"' in line and 'model="gpt-4o-mini"' in line
    assert 'deployment="openai"' in line and float(line.split()[-1]) == pytest.approx(mini.cost_usd)
    assert "# TYPE llmrelay_cost_usd_total counter" in prom
    assert "llmrelay_cost_nanousd_total" not in prom


async def test_cost_with_anthropic_cache_parts(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["anthropic"].script("a", prompt_tokens=2000, cached_tokens=1500, completion_tokens=10)
    async with LLMService(make_config(pricing={"claude/*": {"input": 2, "output": 10}})) as svc:
        # the override has no cached rate: a call that read the cache has no cost
        r = await svc.achat("q", model=HAIKU)
        assert r.usage.cached_tokens == 1500 and r.cost is None
    fakes["anthropic"].script("a", prompt_tokens=2000, cached_tokens=1500, completion_tokens=10)
    async with LLMService(make_config()) as svc:
        r = await svc.achat("q", model=HAIKU)
        assert r.cost is not None
        assert r.cost.cache_read_usd == pytest.approx(1500 * 0.10 / 1e6)
        assert r.cost.input_usd == pytest.approx(500 * 1.00 / 1e6)


def test_cli_providers_shows_prices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    assert PRICES_AS_OF in out
    line = next(x for x in out.splitlines() if x.strip().startswith("claude-haiku-4-5 "))
    assert "$ 1 / 0.1 / 1.25 / 5" in line
    assert "price ?" in next(x for x in out.splitlines() if x.strip().startswith("llama3.2"))


# ---- budgets ---------------------------------------------------------------------------------


def test_budget_reserves_and_reconciles() -> None:
    clock = _core.ManualClock(0.0)
    b = Budget("view", BudgetConfig(limit_usd=1.0, period_s=60.0), clock.now)
    held = Budget.reserve_all([b], 0.6, "m")
    assert b.reserved_usd == pytest.approx(0.6)
    with pytest.raises(BudgetExceededError) as ei:
        Budget.reserve_all([b], 0.5, "m")  # the call in flight holds its reservation
    e = ei.value
    assert (e.limit_usd, e.needed_usd, e.budget, e.retry_after) == (1.0, 0.5, "view", 60.0)
    assert not e.retryable
    held.settle(0.1)  # the real cost was less than the estimate
    assert b.spent_usd == pytest.approx(0.1) and b.reserved_usd == 0.0
    held.settle(5.0)  # settled once only
    assert b.spent_usd == pytest.approx(0.1)
    Budget.reserve_all([b], 0.5, "m").refund()
    assert b.remaining_usd() == pytest.approx(0.9)
    Budget.reserve_all([b], 0.9, "m").settle(None)  # unknown real cost: the reservation
    assert b.remaining_usd() == pytest.approx(0.0)
    clock.advance(60.0)  # a new period
    assert b.spent_usd == 0.0 and b.remaining_usd() == 1.0
    # all or nothing over several budgets
    small = Budget("deployment:x", BudgetConfig(limit_usd=0.1), clock.now)
    with pytest.raises(BudgetExceededError):
        Budget.reserve_all([b, small], 0.2, "m")
    assert b.reserved_usd == 0.0


def _budgeted(make_config: ConfigFactory, limit: float, **kw: Any) -> Any:
    return make_config(
        provider_kw={"openai": {"budget": BudgetConfig(limit_usd=limit)}, **kw.pop("pkw", {})},
        **kw,
    )


async def test_deployment_budget_refuses_before_sending(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    # each call reserves ~3.1e-4 USD (512 output tokens at most); the first really costs 3.6e-4
    fake.script("a", completion_tokens=600)
    async with LLMService(_budgeted(make_config, 5e-4)) as svc:
        r = await svc.achat("q")
        assert r.cost is not None and r.cost.total_usd > 3e-4
        with pytest.raises(BudgetExceededError) as ei:
            await svc.achat("q again")
        assert ei.value.budget == "deployment:openai" and ei.value.model == "gpt-4o-mini"
        assert fake.request_count == 1  # not sent, not retried
        snap = svc.metrics.snapshot()
        assert snap.total("budget_refused") == 1
        assert not any(n.startswith("failures") for s in snap.series for n in s.counters)
        assert snap.breakers["openai"]["state"] == "closed"
        with pytest.raises(BudgetExceededError):
            [c async for c in svc.astream("streamed")]
        assert fake.request_count == 1


async def test_budget_reconciles_so_cheap_calls_keep_going(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    async with LLMService(_budgeted(make_config, 5e-4)) as svc:
        for i in range(5):  # each reserves ~3.1e-4 but really costs ~4e-6
            await svc.achat(f"q{i}")
        for _ in range(2):
            [c async for c in svc.astream("s")]
        budget = svc._engine.budgets["openai"]
        assert budget.reserved_usd == 0.0
        assert budget.spent_usd == pytest.approx(svc.metrics.snapshot().cost_usd("openai"))
    assert fakes["openai"].request_count == 7


async def test_a_spent_deployment_falls_back(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    cfg = _budgeted(make_config, 1e-9, selection=ModelSelectionStrategy(fallbacks={MINI: [HAIKU]}))
    async with LLMService(cfg) as svc:
        r = await svc.achat("q")
        assert r.provider == "claude"
    assert fakes["openai"].request_count == 0


async def test_view_budgets_are_their_own(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].script("a", completion_tokens=600)
    clock = _core.ManualClock(0.0)
    async with LLMService(make_config(), clock=clock) as svc:
        planner = svc.with_options(budget=BudgetConfig(limit_usd=5e-4, period_s=3600))
        coder = svc.with_options(budget=5e-4)
        await planner.achat("plan")
        with pytest.raises(BudgetExceededError) as ei:
            await planner.achat("plan more")
        assert ei.value.budget == "view" and ei.value.retry_after == pytest.approx(3600)
        await coder.achat("code")  # its own budget
        await svc.achat("no budget")  # the parent has none
        # a view of a view has both budgets
        sub = planner.with_options(temperature=0)
        with pytest.raises(BudgetExceededError):
            await sub.achat("sub")
        clock.advance(3600)
        await planner.achat("next hour")
        with pytest.raises(ConfigError) as ce:
            svc.with_options(budget="lots")  # type: ignore[arg-type]
        assert ce.value.field == "budget"
    assert fakes["openai"].request_count == 4


async def test_view_budget_does_not_fall_back(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    cfg = make_config(selection=ModelSelectionStrategy(fallbacks={MINI: [HAIKU]}))
    async with LLMService(cfg) as svc:
        with pytest.raises(BudgetExceededError):
            await svc.with_options(budget=1e-9).achat("q")
    assert fakes["openai"].request_count == fakes["anthropic"].request_count == 0


async def test_budget_needs_a_price(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    cfg = make_config(provider_kw={"local": {"budget": {"limit_usd": 1.0}}})
    async with LLMService(cfg) as svc:
        with pytest.raises(ConfigError, match="price") as ei:
            await svc.achat("q", model="local/llama3.2")
        assert ei.value.field == "pricing"
    assert fakes["ollama"].request_count == 0
    cfg = make_config(
        provider_kw={"local": {"budget": {"limit_usd": 1.0}}},
        pricing={"local/*": {"input": 0, "output": 0}},
    )
    async with LLMService(cfg) as svc:
        r = await svc.achat("q", model="local/llama3.2")
        assert r.cost is not None and r.cost.total_usd == 0.0


async def test_calls_in_flight_hold_their_reservation_until_they_end(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.inject("hang", times=1)
    async with LLMService(_budgeted(make_config, 4e-4)) as svc:
        first = asyncio.ensure_future(svc.achat("one"))
        for _ in range(1000):  # until the first call is on the wire
            if fake.request_count:
                break
            await asyncio.sleep(0.005)
        budget = svc._engine.budgets["openai"]
        assert budget.reserved_usd > 0
        with pytest.raises(BudgetExceededError):
            await svc.achat("two")  # the hanging call holds ~3.1e-4 of 4e-4
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert budget.reserved_usd == 0.0 and budget.spent_usd == 0.0  # given back
        await svc.achat("three")
    assert fake.request_count == 2
