"""Batches: many chats with back-pressure, a progress callback, results in input order.

A batch never overflows the scheduler's queue on its own. It runs at most
:func:`batch_limit` items at once: what the smallest deployment can always hold
(its guaranteed slots plus half its queue by default, the whole queue at most
when ``concurrency=`` asks for more). Traffic from outside the batch can still
fill the queue; an item refused with ``QueueFullError`` then waits for another
item of the batch to finish and tries again (each completion frees room), or,
when no other item is in flight, backs off like a retry (the orchestrator's
backoff, at most ``max_retries`` times) before its slot reports the error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from llmrelay._types import ChatResponse
from llmrelay.errors import InvalidRequestError, LLMRelayError, QueueFullError

if TYPE_CHECKING:
    from llmrelay._config import LLMServiceConfig

__all__ = ["BatchRunner", "ProgressCallback", "batch_limit", "check_progress"]

log = logging.getLogger("llmrelay")

ProgressCallback = Callable[[int, int, int], object]
"""``on_progress(done, failed, cached)``: items finished, how many of them failed, how many
were answered from the cache. Called after each item, on the service's event loop."""

_Item = TypeVar("_Item")
_NONE: object = object()
Result = ChatResponse | LLMRelayError


def batch_limit(config: LLMServiceConfig, concurrency: int | None, n: int) -> int:
    """How many items of a batch of ``n`` run at once (see the module docstring)."""
    oc = config.orchestrator
    floor: int | None = None
    for p in config.providers:
        limit = p.max_concurrency or oc.max_concurrency
        guaranteed = min(oc.min_concurrency, limit) if oc.adaptive_concurrency else limit
        floor = guaranteed if floor is None else min(floor, guaranteed)
    floor = floor or 1
    most = floor + oc.max_queue_size
    wanted = floor + oc.max_queue_size // 2 if concurrency is None else concurrency
    return max(1, min(n, most, wanted))


def check_progress(on_progress: ProgressCallback | None) -> ProgressCallback | None:
    """``on_progress`` validated: None or a callable."""
    if on_progress is not None and not callable(on_progress):
        raise InvalidRequestError(
            f"invalid on_progress={on_progress!r}: must be a callable(done, failed, cached)",
            field="on_progress",
        )
    return on_progress


class BatchRunner(Generic[_Item]):
    """Runs ``call`` over items with ``limit`` workers; one failure never sinks the rest."""

    def __init__(
        self,
        call: Callable[[_Item], Awaitable[ChatResponse]],
        *,
        limit: int,
        on_progress: ProgressCallback | None,
        backoff: Callable[[int, LLMRelayError], float],
        sleep: Callable[[float], Awaitable[None]],
        max_retries: int,
    ) -> None:
        self._call = call
        self._limit = limit
        self._on_progress = on_progress
        self._backoff = backoff
        self._sleep = sleep
        self._max_retries = max_retries
        self._running = 0  # items started and not finished
        self._parked = 0  # of those, items waiting for another item to finish
        self._tick: asyncio.Future[None] | None = None
        self.done = 0
        self.failed = 0
        self.cached = 0

    async def run(self, items: Sequence[_Item]) -> list[Result]:
        """Every item's response or error, in input order."""
        results: list[Result | None] = [None] * len(items)
        todo = iter(range(len(items)))

        async def worker() -> None:
            for i in todo:
                results[i] = await self._one(items[i])

        workers = min(self._limit, len(items))
        await asyncio.gather(*(worker() for _ in range(workers)))
        out: list[Result] = []
        for r in results:
            assert r is not None
            out.append(r)
        return out

    async def each(
        self,
        items: Iterable[_Item],
        on_result: Callable[[_Item, Result], object],
        *,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        """Run every item ``items`` yields (lazily, in order) and hand each result to
        ``on_result`` as it lands, in completion order. Once ``stopped()`` is true no
        new item starts; the ones in flight finish. ``on_result`` runs on the loop; an
        error it raises cancels every other worker and propagates."""
        todo = iter(items)

        async def worker() -> None:
            while not stopped():
                item = next(todo, _NONE)
                if item is _NONE:
                    return
                on_result(item, await self._one(item))  # type: ignore[arg-type]

        workers = [asyncio.ensure_future(worker()) for _ in range(self._limit)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            # one worker failed (or the run was cancelled): stop the others before
            # returning, so nothing runs on after the caller has moved on
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise

    async def _one(self, item: _Item) -> Result:
        self._running += 1
        try:
            result = await self._admitted(item)
        finally:
            self._running -= 1
            self._wake()
        self._progress(result)
        return result

    async def _admitted(self, item: _Item) -> Result:
        backoffs = 0
        while True:
            try:
                return await self._call(item)
            except QueueFullError as e:
                if self._running - self._parked > 1:
                    await self._park()  # another item's end frees room: try again then
                    continue
                backoffs += 1
                if backoffs > self._max_retries:
                    return e
                await self._sleep(self._backoff(backoffs, e))
            except LLMRelayError as e:
                return e
            except Exception as e:  # a bug must not sink the batch either
                err = LLMRelayError(f"{type(e).__name__}: {e}")
                err.__cause__ = e
                return err

    async def _park(self) -> None:
        tick = self._tick
        if tick is None or tick.done():
            tick = self._tick = asyncio.get_running_loop().create_future()
        self._parked += 1
        try:
            await tick
        finally:
            self._parked -= 1

    def _wake(self) -> None:
        tick, self._tick = self._tick, None
        if tick is not None and not tick.done():
            tick.set_result(None)

    def _progress(self, result: Result) -> None:
        self.done += 1
        if isinstance(result, ChatResponse):
            self.cached += result.cached
        else:
            self.failed += 1
        callback = self._on_progress
        if callback is None:
            return
        try:
            callback(self.done, self.failed, self.cached)
        except Exception:
            # a broken progress bar must not sink the batch: say so once, stop calling it
            self._on_progress = None
            log.warning(
                "llmrelay: the batch's on_progress callback raised; it is not called again"
                " for this batch (the batch goes on)",
                exc_info=True,
            )
