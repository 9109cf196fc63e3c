"""Prices and the cost of a call.

A bundled, dated table of list prices (USD per million tokens: input, cached
input, cache write, output) for the built-in models, overridable in
``LLMServiceConfig.pricing``. :meth:`PriceBook.cost` turns a call's ``Usage``
into a :class:`~llmrelay.Cost`, or None when a price it needs is unknown: never a
guess. Cache writes are priced at the 5-minute rate (Anthropic's 1-hour writes
cost more: configure ``cache_write`` for them). A model not in the table but
registered with input and output prices (``ModelInfo``) is priced from those,
with no cached rates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from llmrelay._config import ModelPrice
from llmrelay._types import Cost, Usage

__all__ = ["BUILTIN_PRICES", "PRICES_AS_OF", "PriceBook", "cost_of"]

#: The date the bundled prices were taken from the providers' public pricing pages.
PRICES_AS_OF = "2025-10-15"


def _p(inp: float, out: float, cached: float | None, write: float | None = None) -> ModelPrice:
    return ModelPrice(input=inp, output=out, cached_input=cached, cache_write=write)


#: kind -> model -> price (USD per million tokens), as of :data:`PRICES_AS_OF`.
BUILTIN_PRICES: dict[str, dict[str, ModelPrice]] = {
    "openai": {
        "gpt-5": _p(1.25, 10.00, 0.125),
        "gpt-5-mini": _p(0.25, 2.00, 0.025),
        "gpt-5-nano": _p(0.05, 0.40, 0.005),
        "gpt-4.1": _p(2.00, 8.00, 0.50),
        "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
        "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
        "gpt-4o": _p(2.50, 10.00, 1.25),
        "gpt-4o-mini": _p(0.15, 0.60, 0.075),
        "o3": _p(2.00, 8.00, 0.50),
        "o3-mini": _p(1.10, 4.40, 0.55),
        "o4-mini": _p(1.10, 4.40, 0.275),
        "gpt-4-turbo": _p(10.00, 30.00, None),
        "gpt-3.5-turbo": _p(0.50, 1.50, None),
    },
    # Anthropic: cache reads at 0.1x the input price, 5-minute cache writes at 1.25x
    "anthropic": {
        "claude-opus-4-5": _p(5.00, 25.00, 0.50, 6.25),
        "claude-opus-4-1": _p(15.00, 75.00, 1.50, 18.75),
        "claude-opus-4-0": _p(15.00, 75.00, 1.50, 18.75),
        "claude-sonnet-4-5": _p(3.00, 15.00, 0.30, 3.75),
        "claude-sonnet-4-0": _p(3.00, 15.00, 0.30, 3.75),
        "claude-haiku-4-5": _p(1.00, 5.00, 0.10, 1.25),
        "claude-3-7-sonnet-latest": _p(3.00, 15.00, 0.30, 3.75),
        "claude-3-5-haiku": _p(0.80, 4.00, 0.08, 1.00),
        "claude-3-5-haiku-latest": _p(0.80, 4.00, 0.08, 1.00),
        "claude-3-haiku-20240307": _p(0.25, 1.25, 0.03, 0.30),
    },
}

# a dated snapshot name: claude-haiku-4-5-20251001, gpt-4o-2024-08-06
_DATED = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")
_MTOK = 1_000_000.0


def cost_of(price: ModelPrice, usage: Usage) -> Cost | None:
    """What ``usage`` costs at ``price``; None when it needs a rate the price lacks."""
    cached = usage.cached_tokens or 0
    written = usage.cache_write_tokens or 0
    fresh = max(0, usage.prompt_tokens - cached - written)
    if cached and price.cached_input is None:
        return None
    if written and price.cache_write is None:
        return None
    input_usd = fresh * price.input / _MTOK
    output_usd = usage.completion_tokens * price.output / _MTOK
    read_usd = cached * (price.cached_input or 0.0) / _MTOK
    write_usd = written * (price.cache_write or 0.0) / _MTOK
    return Cost(
        input_usd=input_usd,
        output_usd=output_usd,
        cache_read_usd=read_usd,
        cache_write_usd=write_usd,
        total_usd=input_usd + output_usd + read_usd + write_usd,
    )


class PriceBook:
    """The prices a service uses: the config's ``pricing`` over the bundled table.

    A ``pricing`` key is ``"<deployment>/<model>"``, ``"<kind>/<model>"``,
    ``"<model>"``, or ``"<deployment or kind>/*"`` for every model of it; the most
    specific one wins. A dated model name (``claude-haiku-4-5-20251001``) falls back
    on its undated entry.
    """

    __slots__ = ("_memo", "_overrides")

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._memo: dict[tuple[str, str, str], ModelPrice | None] = {}

    def price(self, kind: str, deployment: str, model: str) -> ModelPrice | None:
        """The price of ``model`` on a deployment of ``kind``, or None when unknown."""
        key = (kind, deployment, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        undated = _DATED.sub("", model)
        found = self._lookup(kind, deployment, model)
        if found is None and undated != model:
            found = self._lookup(kind, deployment, undated)
        if found is None:
            found = _registered(kind, model)
        self._memo[key] = found
        return found

    def _lookup(self, kind: str, deployment: str, model: str) -> ModelPrice | None:
        o = self._overrides
        for name in (f"{deployment}/{model}", f"{kind}/{model}", model):
            if name in o:
                return o[name]
        for name in (f"{deployment}/*", f"{kind}/*"):
            if name in o:
                return o[name]
        table = BUILTIN_PRICES.get(kind)
        return table.get(model) if table is not None else None

    def cost(self, kind: str, deployment: str, model: str, usage: Usage) -> Cost | None:
        """What a call's ``usage`` cost, or None when a price it needs is unknown."""
        price = self.price(kind, deployment, model)
        return None if price is None else cost_of(price, usage)

    def estimate_usd(
        self, kind: str, deployment: str, model: str, tokens_in: int, tokens_out: int
    ) -> float | None:
        """The most a call of these token counts can cost (no cache discount), or None."""
        price = self.price(kind, deployment, model)
        if price is None:
            return None
        return (tokens_in * price.input + tokens_out * price.output) / _MTOK


def _registered(kind: str, model: str) -> ModelPrice | None:
    """Input and output prices a provider registration lists for ``model``, if both."""
    from llmrelay.providers import capabilities

    try:
        info = capabilities(kind, model)
    except Exception:  # an unregistered kind has no prices
        return None
    inp = getattr(info, "input_price_per_mtok", None)
    out = getattr(info, "output_price_per_mtok", None)
    if inp is None or out is None:
        return None
    return ModelPrice(input=inp, output=out)


def zero_cost(cost: Cost | None) -> Cost | None:
    """The cost of answering again from llmrelay's cache: nothing (None stays None)."""
    if cost is None:
        return None
    return msgspec.structs.replace(
        cost, input_usd=0.0, output_usd=0.0, cache_read_usd=0.0, cache_write_usd=0.0, total_usd=0.0
    )
