"""The select stage: which (deployment, model) pairs may serve a request, in order.

A model is ``"<deployment>/<model>"`` or a bare model name, which means every
deployment listing it in ``models`` (or, when none lists it, every deployment
whose provider's registry knows it, or the only deployment there is). A name
with a ``/`` whose head is no deployment (``"nope/none"``) must be listed or
known; it never falls to the only deployment. The
asked model's deployments come first, ordered by the strategy; its fallbacks
follow in configured order. Candidates lacking a capability the request needs
(tools, vision, JSON mode, streaming) or too small for the request's estimated
size are dropped; open circuits are skipped, not tried.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from llmrelay._config import ModelSelectionStrategy, ProviderConfig
from llmrelay._pool import Deployment, ProviderPool
from llmrelay._types import ChatRequest
from llmrelay.errors import InvalidRequestError
from llmrelay.providers import capabilities
from llmrelay.providers._registry import get_provider

__all__ = ["Candidate", "Selector", "honouring", "route"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One place a request may go: a deployment and the model name it knows."""

    deployment: Deployment
    model: str

    @property
    def label(self) -> str:
        """``deployment/model``, as users name it."""
        return f"{self.deployment.name}/{self.model}"


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the selector needs to know of a model (None = unknown)."""

    tools: bool | None = None
    vision: bool | None = None
    json_mode: bool | None = None
    streaming: bool | None = None
    context_window: int | None = None
    cost_per_mtok: float | None = None


def _mapped(req: ChatRequest) -> bool:
    """Whether ``req`` has a parameter some provider may have no equivalent for."""
    return not (
        req.n is None
        and req.reasoning_effort is None
        and req.frequency_penalty is None
        and req.presence_penalty is None
        and req.logprobs is None
        and req.parallel_tool_calls is None
        and req.logit_bias is None
        and req.service_tier is None
        and req.thinking is None
    )


def honouring(cands: list[Candidate], req: ChatRequest, *, stream: bool) -> list[Candidate]:
    """The candidates whose provider can honour every parameter of ``req``.

    The first (the asked model) must: its InvalidRequestError, naming the parameter
    and the provider, is raised before anything is sent. A fallback that cannot is
    skipped, so a fallback never answers a different question. ``cands`` is
    returned as is when nothing needs checking.
    """
    if not cands or not _mapped(req):
        return cands
    out: list[Candidate] = []
    for i, c in enumerate(cands):
        check = getattr(c.deployment.adapter, "check_request", None)
        if check is None:
            out.append(c)
            continue
        try:
            check(req, stream=stream)
        except InvalidRequestError:
            if i == 0:
                raise
            continue
        out.append(c)
    return out


FactsFn = Callable[[str, str], ModelFacts]
KnowsFn = Callable[[str, str], bool]


def route(model: str, providers: Sequence[ProviderConfig], knows: KnowsFn) -> list[tuple[int, str]]:
    """Which providers serve ``model``: (index into ``providers``, model name it knows).

    ``<provider>/<model>`` names one provider; a bare name goes to every provider
    listing it in ``models``, else to every provider whose registry knows it, else
    to the only provider there is. InvalidRequestError when none serves it.
    """
    if not model or not isinstance(model, str):
        raise InvalidRequestError(f"invalid model={model!r}", field="model")
    head, sep, tail = model.partition("/")
    if sep:
        for i, p in enumerate(providers):
            if p.name == head:
                if not tail:
                    raise InvalidRequestError(f"invalid model={model!r}: empty", field="model")
                return [(i, tail)]
    listed = [(i, model) for i, p in enumerate(providers) if model in p.models]
    if listed:
        return listed
    known = [(i, model) for i, p in enumerate(providers) if knows(p.provider_kind, model)]
    if known:
        return known
    names = [p.name for p in providers]
    if sep:
        # "<name>/<model>" whose name is no deployment: a typo, never the only one
        raise InvalidRequestError(
            f"invalid model={model!r}: no deployment is named {head!r} and none lists "
            f"{model!r} in its models (deployments: {names}; a model whose own name "
            f"has a '/' goes as '<deployment>/{model}' or listed in models=[...])",
            field="model",
        )
    if len(providers) == 1:
        return [(0, model)]
    raise InvalidRequestError(
        f"invalid model={model!r}: no configured provider serves it "
        f"(use '<provider>/<model>'; providers: {names})",
        field="model",
    )


class Selector:
    """Resolves model names to ordered candidates."""

    def __init__(
        self,
        pool: ProviderPool,
        strategy: ModelSelectionStrategy,
        *,
        default_model: str | None,
        facts: FactsFn,
        knows: KnowsFn,
        is_open: Callable[[Deployment], bool],
        rng: random.Random | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._aliases: dict[str, str] = dict(aliases or {})
        self._pool = pool
        self._strategy = strategy
        self._default_model = default_model
        self._facts = facts
        self._knows = knows
        self._is_open = is_open
        self._rng = rng or random.Random()
        self._resolve_cache: dict[str, tuple[Candidate, ...]] = {}
        self._facts_cache: dict[tuple[str, str], ModelFacts] = {}
        # candidates per (model, needs) when the order is static: (list, smallest window)
        self._static = strategy.strategy == "priority"
        self._cand_cache: dict[tuple[str, tuple[str, ...]], tuple[list[Candidate], int]] = {}

    @property
    def default_model(self) -> str:
        """The model used when a call names none.

        ``LLMServiceConfig.default_model``, else the first deployment's own
        ``default_model`` or first listed model, else the registry's default model
        of the first deployment whose kind has one (``openai`` -> ``gpt-4o-mini``).
        """
        if self._default_model:
            return self._default_model
        found = self._implicit_default()
        self._default_model = found  # the pool and the registry do not change under us
        return found

    def _implicit_default(self) -> str:
        for dep in self._pool:
            if dep.config.default_model:
                return f"{dep.name}/{dep.config.default_model}"
            if dep.config.models:
                return f"{dep.name}/{dep.config.models[0]}"
        for dep in self._pool:
            registered = get_provider(dep.kind).default_model
            if registered:
                return f"{dep.name}/{registered}"
        raise InvalidRequestError(
            "no model given and no default_model configured (pass model=, set "
            "LLMServiceConfig.default_model or LLMRELAY_DEFAULT_MODEL)",
            field="model",
        )

    def canonical(self, model: str) -> str:
        """The model an alias stands for (``LLMServiceConfig.aliases``), else ``model``."""
        return self._aliases.get(model, model)

    def resolve(self, model: str) -> tuple[Candidate, ...]:
        """Every deployment serving ``model`` (an alias: its target; unordered by
        strategy); cached per name."""
        hit = self._resolve_cache.get(model)
        if hit is not None:
            return hit
        found = self._resolve(self.canonical(model))
        self._resolve_cache[model] = found
        return found

    def _resolve(self, model: str) -> tuple[Candidate, ...]:
        deps = list(self._pool)
        return tuple(
            Candidate(deps[i], m) for i, m in route(model, [d.config for d in deps], self._knows)
        )

    def candidates(
        self,
        model: str,
        *,
        needs: Sequence[str] = (),
        est_tokens: int = 0,
    ) -> list[Candidate]:
        """The ordered candidates for a request: the asked model, then its fallbacks.

        The result is shared (memoised when the strategy's order is static):
        callers must not mutate it.
        """
        if self._static:
            key = (model, tuple(needs))
            hit = self._cand_cache.get(key)
            if hit is not None and est_tokens <= hit[1]:
                return hit[0]
            out = self._candidates(model, needs, 0)
            windows = [self.facts(c.deployment.kind, c.model).context_window for c in out]
            smallest = min((w for w in windows if w is not None), default=2**62)
            self._cand_cache[key] = (out, smallest)
            if est_tokens <= smallest:
                return out
        return self._candidates(model, needs, est_tokens)

    def _candidates(self, model: str, needs: Sequence[str], est_tokens: int) -> list[Candidate]:
        primary = self._order(list(self.resolve(model)))
        out: list[Candidate] = list(primary)
        fallbacks = self._strategy.fallbacks.get(model)
        if fallbacks is None and model in self._aliases:
            model = self._aliases[model]
            fallbacks = self._strategy.fallbacks.get(model)
        if fallbacks is None and "/" in model:
            fallbacks = self._strategy.fallbacks.get(model.partition("/")[2])
        kinds = {c.deployment.kind for c in primary}
        for fb in fallbacks or ():
            for c in self._order(list(self.resolve(fb))):
                if not self._strategy.cross_provider and c.deployment.kind not in kinds:
                    continue
                if c not in out:
                    out.append(c)
        required = set(self._strategy.required_capabilities) | set(needs)
        if required:
            out = [c for c in out if self._capable(c, required)]
            if not out:
                raise InvalidRequestError(
                    f"invalid model={model!r}: no candidate supports {sorted(required)}",
                    field="model",
                )
        if est_tokens:
            fitting = [c for c in out if self._fits(c, est_tokens)]
            if fitting:
                out = fitting
        return out

    def usable(self, cands: list[Candidate]) -> list[Candidate]:
        """Candidates whose circuit is not open (order kept)."""
        return [c for c in cands if not self._is_open(c.deployment)]

    def facts(self, kind: str, model: str) -> ModelFacts:
        """What is known of a model (memoised: the registry does not change under us)."""
        key = (kind, model)
        f = self._facts_cache.get(key)
        if f is None:
            f = self._facts_cache[key] = self._facts(kind, model)
        return f

    def _capable(self, c: Candidate, required: set[str]) -> bool:
        f = self.facts(c.deployment.kind, c.model)
        return all(getattr(f, cap, None) is not False for cap in required)

    def _fits(self, c: Candidate, est_tokens: int) -> bool:
        window = self.facts(c.deployment.kind, c.model).context_window
        return window is None or window >= est_tokens

    def _order(self, cands: list[Candidate]) -> list[Candidate]:
        if len(cands) < 2:
            return cands
        s = self._strategy.strategy
        if s == "latency":
            # unknown latency sorts first, so a new deployment gets explored
            return sorted(cands, key=lambda c: c.deployment.health.ewma_latency_per_token_s or 0.0)
        if s == "least_busy":
            return sorted(cands, key=lambda c: c.deployment.health.in_flight)
        if s == "cost":
            inf = float("inf")

            def price(c: Candidate) -> float:
                p = self.facts(c.deployment.kind, c.model).cost_per_mtok
                return inf if p is None else p

            return sorted(cands, key=price)
        if s == "weighted":
            rest = list(cands)
            ordered: list[Candidate] = []
            while rest:
                pick = self._rng.choices(rest, weights=[c.deployment.config.weight for c in rest])
                ordered.append(pick[0])
                rest.remove(pick[0])
            return ordered
        return cands  # "priority": configured order


def model_facts(kind: str, model: str) -> ModelFacts:
    info = capabilities(kind, model)
    cin = info.input_price_per_mtok
    cout = info.output_price_per_mtok
    return ModelFacts(
        tools=info.tools,
        vision=info.vision,
        json_mode=info.json_mode,
        streaming=info.streaming,
        context_window=info.context_window,
        cost_per_mtok=(cin + cout) if cin is not None and cout is not None else None,
    )
