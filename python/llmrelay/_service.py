"""LLMService: the public API, and the pipeline behind it.

    validate -> select -> cache -> dedup -> orchestrate -> execute -> process

Async methods are the implementation; the sync twins run the very same
coroutines on a private loop thread (after answering memory-cache hits in the
calling thread, which needs no loop at all). ``with_options`` returns a light
view that shares the engine: pools, caches, limits, breakers and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

import httpx

from llmrelay import _core
from llmrelay._budget import Budget
from llmrelay._cachekey import CacheControl
from llmrelay._config import BudgetConfig, LLMServiceConfig, redact_url
from llmrelay._engine import Engine, Middleware
from llmrelay._metrics import ServiceMetrics
from llmrelay._params import ChatParams, EmbedParams, check_chat_params, check_embed, short
from llmrelay._preflight import check_service_config
from llmrelay._priority import Priority
from llmrelay._telemetry import check_listener
from llmrelay._types import ChatChunk, ChatResponse, EmbeddingResponse, MessagesIn
from llmrelay.errors import ConfigError, InvalidRequestError, LLMRelayError
from llmrelay.events import Listener

if TYPE_CHECKING:
    import os

    from llmrelay._conversation import Conversation
    from llmrelay._runner import RunSummary

__all__ = ["BatchItem", "CacheIn", "LLMService", "MessagesIn", "Priority"]

_log = logging.getLogger("llmrelay")

CacheIn = bool | CacheControl | Mapping[str, Any] | None
#: One request of a batch: a prompt, a message list, or a dict with ``messages`` and
#: any of ``model``, ``priority``, ``timeout``, ``cache`` and the chat parameters.
BatchItem = MessagesIn | Mapping[str, Any]


def _merged(defaults: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A view's default parameters under a call's: the call's win, and its output limit
    (``max_tokens`` or ``max_completion_tokens``) replaces the view's under either name."""
    out = {**defaults, **params}
    for name, other in (
        ("max_tokens", "max_completion_tokens"),
        ("max_completion_tokens", "max_tokens"),
    ):
        if name in params and other not in params:
            out.pop(other, None)
    return out


def _budget_of(budget: Any, clock: Callable[[], float]) -> Budget | None:
    """A view's ``budget=`` as a Budget (None: none); ConfigError naming ``budget``."""
    if budget is None:
        return None
    if isinstance(budget, Mapping):
        budget = BudgetConfig.from_dict(budget)
    elif isinstance(budget, int | float) and not isinstance(budget, bool):
        budget = BudgetConfig(limit_usd=float(budget))
    if not isinstance(budget, BudgetConfig):
        raise ConfigError(
            f"invalid budget={short(budget)}: give a limit in USD or a BudgetConfig",
            field="budget",
        )
    return Budget("view", budget, clock)


def _batch_requests(requests: Any, concurrency: Any) -> list[Any]:
    """The requests of a batch as a list; InvalidRequestError for a bad batch or concurrency.

    A bare string (or bytes, or one dict) is refused rather than iterated: ``"hey"``
    would otherwise run three requests, ``"h"``, ``"e"`` and ``"y"``.
    """
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise InvalidRequestError(
            f"invalid concurrency={short(concurrency)}: must be an int >= 1", field="concurrency"
        )
    if isinstance(requests, (str, bytes, Mapping)):
        raise InvalidRequestError(
            f"requests={short(requests)}: expected a list of requests; for one request "
            "use achat()/chat(), or pass a list of one",
            field="requests",
        )
    try:
        return list(requests)
    except TypeError:
        raise InvalidRequestError(
            f"requests={short(requests)}: expected a list of requests", field="requests"
        ) from None


class LLMService:
    """One API over every configured provider, with scheduling, limits, breakers and caching.

    Use ``async with LLMService(config) as svc`` (or ``with`` for the sync API).
    """

    def __init__(
        self,
        config: LLMServiceConfig | Mapping[str, Any] | None = None,
        *,
        transport: str | Callable[[Any], httpx.AsyncBaseTransport | None] | None = None,
        middleware: Sequence[Middleware] = (),
        clock: _core.ManualClock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        on_event: Listener | None = None,
    ) -> None:
        if on_event is not None:
            check_listener(on_event, "on_event")
        if config is None:
            config = LLMServiceConfig.from_env()
        elif isinstance(config, Mapping):
            config = LLMServiceConfig.from_dict(config)
        elif not isinstance(config, LLMServiceConfig):
            raise InvalidRequestError(
                f"invalid config: expected LLMServiceConfig or a dict, got {type(config).__name__}",
                field="config",
            )
        check_service_config(config)
        _check_shared(config)
        otel = None
        if config.telemetry.otel:  # before the engine: ConfigError if it is not installed
            from llmrelay.otel import OpenTelemetryListener

            otel = OpenTelemetryListener(capture_content=config.telemetry.capture_content)
        self._engine = Engine(
            config, transport=transport, middleware=middleware, clock=clock, sleep=sleep
        )
        from llmrelay._shared import share_breakers

        share_breakers(config, self._engine.orchestrator.runtimes)
        if otel is not None:
            self._engine.events.add(otel)
        if on_event is not None:
            self._engine.events.add(on_event)
        self._model: str | None = None
        self._priority: int | None = None
        self._timeout: float | None = None
        self._cache: CacheIn = None
        self._params: dict[str, Any] = {}
        self._budgets: tuple[Budget, ...] = ()
        self._is_view = False

    # ---- views -----------------------------------------------------------------------------

    def with_options(
        self,
        model: str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        *,
        budget: float | BudgetConfig | Mapping[str, Any] | None = None,
        **params: Unpack[ChatParams],
    ) -> LLMService:
        """A view with other defaults sharing this service's engine; closing it closes nothing.

        ``budget`` gives the view a USD budget of its own (a limit in USD, or a
        :class:`BudgetConfig` with a period), on top of any budget of the view it is
        made from and of the deployments: each agent role or tenant can have one.
        """
        own = _budget_of(budget, self._engine.budget_clock)
        view = object.__new__(LLMService)
        view._budgets = self._budgets if own is None else (*self._budgets, own)
        view._engine = self._engine
        view._model = model if model is not None else self._model
        view._priority = priority if priority is not None else self._priority
        view._timeout = timeout if timeout is not None else self._timeout
        view._cache = cache if cache is not None else self._cache
        view._params = _merged(self._params, params)
        check_chat_params(view._params)  # a bad default fails here, not at the first call
        view._is_view = True
        if view._priority is not None:
            self._engine.check_priority(view._priority)
        return view

    # ---- events ----------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], bool]:
        """Call ``listener(event)`` for every :mod:`llmrelay.events` event of this service
        (and of its views: they share one engine). Returns a function that removes it.

        A listener is called synchronously where the event happens; one that raises never
        breaks a call (counted as ``listener_errors``, logged once). With no listener (and
        the ``llmrelay`` logger below INFO) no event is built at all.
        """
        return self._engine.events.add(listener)

    def remove_listener(self, listener: Listener) -> bool:
        """Unregister ``listener``; whether it was registered."""
        return self._engine.events.remove(listener)

    @property
    def config(self) -> LLMServiceConfig:
        """The service's configuration."""
        return self._engine.config

    @property
    def metrics(self) -> ServiceMetrics:
        """The service's :class:`ServiceMetrics` (``snapshot()``, ``reset()``, ``prometheus()``)."""
        return self._engine.metrics

    def _args(
        self,
        model: str | None,
        priority: int | None,
        timeout: float | None,
        cache: CacheIn,
        params: Mapping[str, Any],
    ) -> tuple[str | None, int, float | None, CacheIn, dict[str, Any]]:
        return (
            model if model is not None else self._model,
            priority
            if priority is not None
            else (self._priority if self._priority is not None else Priority.NORMAL),
            timeout if timeout is not None else self._timeout,
            cache if cache is not None else self._cache,
            _merged(self._params, params) if self._params else dict(params),
        )

    # ---- chat ------------------------------------------------------------------------------

    async def achat(
        self,
        messages: MessagesIn,
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> ChatResponse:
        """Send a chat request; returns the response or raises one typed error."""
        m, p, t, c, kw = self._args(model, priority, timeout, cache, params)
        return await self._engine.chat(messages, m, p, t, c, kw, budgets=self._budgets)

    def chat(
        self,
        messages: MessagesIn,
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> ChatResponse:
        """The sync twin of :meth:`achat` (safe from many threads at once)."""
        m, p, t, c, kw = self._args(model, priority, timeout, cache, params)
        eng = self._engine
        prepared = eng.prepare(messages, m, p, c, kw, stream=False, budgets=self._budgets)
        hit = eng.memory_hit(prepared)
        if hit is not None:
            if prepared.trace is not None:
                prepared.trace.end(hit, None)
            return hit
        return eng.runner.run(eng.chat_prepared(prepared, t, memory_checked=True))

    def astream(
        self,
        messages: MessagesIn,
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> AsyncIterator[ChatChunk]:
        """Stream a chat response as :class:`ChatChunk` deltas (usage on the last one)."""
        m, p, t, c, kw = self._args(model, priority, timeout, cache, params)
        return self._engine.stream(messages, m, p, t, c, kw, budgets=self._budgets)

    def stream(
        self,
        messages: MessagesIn,
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        cache: CacheIn = None,
        **params: Unpack[ChatParams],
    ) -> Iterator[ChatChunk]:
        """The sync twin of :meth:`astream`."""
        m, p, t, c, kw = self._args(model, priority, timeout, cache, params)
        eng = self._engine
        return eng.runner.iterate(eng.stream(messages, m, p, t, c, kw))

    # ---- embeddings ------------------------------------------------------------------------

    async def aembed(
        self,
        inputs: str | Sequence[str],
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **params: Unpack[EmbedParams],
    ) -> EmbeddingResponse:
        """Embed one text or many; returns one vector per input, in order.

        ``params`` are the keys of :class:`EmbedParams`; anything else raises
        InvalidRequestError before anything is sent.
        """
        texts, checked = check_embed(inputs, params)
        m, p, t, _, _ = self._args(model, priority, timeout, None, {})
        return await self._engine.embed(texts, m, p, t, checked)

    def embed(
        self,
        inputs: str | Sequence[str],
        model: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **params: Unpack[EmbedParams],
    ) -> EmbeddingResponse:
        """The sync twin of :meth:`aembed`."""
        texts, checked = check_embed(inputs, params)
        m, p, t, _, _ = self._args(model, priority, timeout, None, {})
        return self._engine.runner.run(self._engine.embed(texts, m, p, t, checked))

    # ---- batch -----------------------------------------------------------------------------

    async def abatch(
        self,
        requests: Sequence[BatchItem],
        *,
        concurrency: int | None = None,
        priority: int | None = None,
        model: str | None = None,
        on_progress: Callable[[int, int, int], object] | None = None,
        **params: Unpack[ChatParams],
    ) -> list[ChatResponse | LLMRelayError]:
        """Run many chats; results in input order, a failure in its slot, never sinking the rest.

        Each request is a prompt string, a message list, or a dict with ``messages``
        and any of ``model``, ``priority``, ``timeout``, ``cache`` and parameters.
        The batch applies back-pressure: it never has more items in flight than the
        scheduler's queue and slots can hold (``concurrency`` caps that further), so it
        does not overflow the queue on its own (see :mod:`llmrelay._batch`).
        ``on_progress(done, failed, cached)`` is called after each item, on the
        service's loop; if it raises, the error is logged once and it is not called again.
        ``requests`` must be a list (or any iterable but a str, bytes or dict).
        """
        requests = _batch_requests(requests, concurrency)
        from llmrelay._batch import BatchRunner, batch_limit, check_progress

        progress = check_progress(on_progress)

        async def one(item: MessagesIn | Mapping[str, Any]) -> ChatResponse:
            if isinstance(item, Mapping):
                kw = dict(item)
                if "messages" not in kw:
                    raise InvalidRequestError(
                        "invalid batch item: a dict needs 'messages'", field="messages"
                    )
                msgs = kw.pop("messages")
                kw.setdefault("priority", priority)
                kw.setdefault("model", model)
                return await self.achat(msgs, **{**params, **kw})
            return await self.achat(item, model, priority=priority, **params)

        orch = self._engine.orchestrator
        runner: BatchRunner[MessagesIn | Mapping[str, Any]] = BatchRunner(
            one,
            limit=batch_limit(self._engine.config, concurrency, len(requests)),
            on_progress=progress,
            backoff=orch.backoff,
            sleep=orch._sleep,
            max_retries=self._engine.config.orchestrator.max_retries,
        )
        return await runner.run(requests)

    def batch(
        self,
        requests: Sequence[BatchItem],
        *,
        concurrency: int | None = None,
        priority: int | None = None,
        model: str | None = None,
        on_progress: Callable[[int, int, int], object] | None = None,
        **params: Unpack[ChatParams],
    ) -> list[ChatResponse | LLMRelayError]:
        """The sync twin of :meth:`abatch` (``on_progress`` runs on the service's loop thread)."""
        return self._engine.runner.run(
            self.abatch(
                requests,
                concurrency=concurrency,
                priority=priority,
                model=model,
                on_progress=on_progress,
                **params,
            )
        )

    # ---- file runs -------------------------------------------------------------------------

    async def arun_file(
        self,
        input: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        concurrency: int | None = None,
        progress: bool = True,
        plot: str | os.PathLike[str] | None = None,
    ) -> RunSummary:
        """Run every request of a JSONL file, one output line per input line; resumable.

        Each input line is ``{"id", "messages" | "prompt", "model"?, "priority"?,
        "timeout"?, "sample"?, "cache"?, <chat parameters>}``; each output line is
        ``{"id", "line", "response"}`` or ``{"id", "line", "error": {"type",
        "message", "field", ...}}``, appended and flushed as it lands (in completion
        order). Ids already in ``output`` are skipped, so a rerun resumes a run that was
        killed. ``progress`` draws a live bar (rich, or a plain line) and the summary
        on stderr. The view's defaults (model, cache mode...) apply to every line.
        Bad lines become error lines; a bad ``input``/``output``/``concurrency``
        raises InvalidRequestError before anything is sent. ``plot`` (a ``.png`` path,
        the ``plot`` extra: matplotlib) draws throughput and latency over the run.
        See :mod:`llmrelay._runner`.
        """
        from llmrelay._progress import RunProgress
        from llmrelay._runner import FileRunner

        _batch_requests([], concurrency)  # checks concurrency
        if not isinstance(progress, bool):
            raise InvalidRequestError(
                f"invalid progress={short(progress)}: must be True or False", field="progress"
            )
        self._engine.check_open()
        runner = FileRunner(
            self,
            input,
            output,
            concurrency=concurrency,
            progress=RunProgress() if progress else None,
            plot=plot,
        )
        return await runner.run()

    def run_file(
        self,
        input: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        concurrency: int | None = None,
        progress: bool = True,
        plot: str | os.PathLike[str] | None = None,
    ) -> RunSummary:
        """The sync twin of :meth:`arun_file` (Ctrl-C cancels it; finished lines are kept)."""
        return self._engine.runner.run(
            self.arun_file(input, output, concurrency=concurrency, progress=progress, plot=plot)
        )

    # ---- conversations ---------------------------------------------------------------------

    def conversation(
        self,
        system: str | None = None,
        model: str | None = None,
        priority: int | None = None,
        **params: Unpack[ChatParams],
    ) -> Conversation:
        """A :class:`Conversation` with this service: history, system prompt, trimming."""
        from llmrelay._conversation import Conversation

        return Conversation(self, system=system, model=model, priority=priority, **params)

    # ---- lifecycle -------------------------------------------------------------------------

    async def aclose(self, *, drain_s: float = 5.0) -> None:
        """Let in-flight calls finish (up to ``drain_s``), cancel the rest, close everything.

        On a view this does nothing: the parent owns the engine.
        """
        if self._is_view:
            return
        await self._engine.aclose(drain_s)
        if self._engine.shared is not None:
            # leased mode: what is left of this process's slices goes back to Redis
            await self._engine.shared.aclose()

    def close(self, *, drain_s: float = 5.0) -> None:
        """The sync twin of :meth:`aclose`."""
        if self._is_view:
            return
        closed = self._engine.closed
        self._engine.close_sync(drain_s)
        if self._engine.shared is not None and not closed:
            self._engine.shared.close()

    async def __aenter__(self) -> LLMService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> LLMService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = [p.name for p in self._engine.config.providers]
        view = " view" if self._is_view else ""
        return f"<LLMService{view} providers={names} closed={self._engine.closed}>"


def _check_shared(config: LLMServiceConfig) -> None:
    """Refuse what ``shared`` asks that is not built; say which state stays per process."""
    sc = config.shared
    if sc is None:
        return
    from llmrelay._shared import NOT_SHARED_YET

    unshared = [n for n in NOT_SHARED_YET if getattr(sc, n)]
    if unshared:
        _log.warning(
            "llmrelay: shared state on %s shares the rate limits%s; %s %s not shared by this"
            " version and stay per process (set %s to False to silence this)."
            " metrics.snapshot().shared['not_shared'] lists them",
            redact_url(sc.url),
            "" if sc.limits else " (off: limits=False)",
            ", ".join(unshared),
            "is" if len(unshared) == 1 else "are",
            "/".join(f"shared.{n}" for n in unshared),
        )
