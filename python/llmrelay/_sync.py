"""The loop thread behind the sync API.

Sync methods run the same coroutines as the async ones, on one private event
loop in a daemon thread, so any number of threads can call them at once. The
loop starts on first use and stops on ``close()``; after ``os.fork`` a child
starts its own.

No sync call can outlive the loop: every wait of a calling thread is on a
future the runner tracks, and ``stop()`` cancels whatever is still pending once
the loop has stopped, so a thread blocked in ``chat``/``stream`` when another
thread closes the service gets ``LLMRelayError`` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from llmrelay.errors import LLMRelayError

__all__ = ["LoopThread"]

T = TypeVar("T")
_END = object()
#: How long ``stop()`` waits for the loop thread to end.
_JOIN_S = 5.0


async def _cancel_rest() -> None:
    """Cancel every other task of the running loop and wait (bounded) for them to end."""
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in rest:
        t.cancel()
    if rest:
        await asyncio.wait(rest, timeout=1.0)


def _closed_error() -> LLMRelayError:
    return LLMRelayError("the service is closed")


class LoopThread:
    """A private event loop running in a daemon thread."""

    def __init__(self, name: str = "llmrelay-sync") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed_pid = 0  # the process in which stop() ran (a forked child may start anew)
        #: each sync call's future and its coroutine, until it is done
        self._pending: dict[concurrent.futures.Future[Any], Coroutine[Any, Any, Any]] = {}

    def after_fork_in_child(self) -> None:
        """Forget the parent's loop and thread (they do not exist in a forked child)."""
        self._lock = threading.Lock()
        self._loop, self._thread, self._pid = None, None, 0
        self._pending = {}

    @property
    def closed(self) -> bool:
        """Whether ``stop()`` ran in this process."""
        return self._closed_pid == os.getpid()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use (and again in a forked child)."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self.closed:
                raise _closed_error()
            if self._loop is None or self._pid != os.getpid():
                ready = threading.Event()
                new_loop = asyncio.new_event_loop()

                def main() -> None:
                    asyncio.set_event_loop(new_loop)
                    new_loop.call_soon(ready.set)
                    new_loop.run_forever()

                self._thread = threading.Thread(target=main, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop, self._pid = new_loop, os.getpid()
            return self._loop

    @property
    def started(self) -> bool:
        """Whether the loop thread is running in this process."""
        return self._loop is not None and self._pid == os.getpid()

    def in_loop_thread(self) -> bool:
        """Whether the caller is the loop thread itself (where blocking would deadlock)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def _submit(
        self, coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop
    ) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on ``loop`` as a tracked future (closed: LLMRelayError)."""
        with self._lock:
            if self.closed or loop is not self._loop:
                coro.close()
                raise _closed_error()
            try:
                fut = asyncio.run_coroutine_threadsafe(coro, loop)
            except RuntimeError:  # the loop is closed
                coro.close()
                raise _closed_error() from None
            self._pending[fut] = coro
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: concurrent.futures.Future[Any]) -> None:
        self._pending.pop(fut, None)

    def _wait(self, fut: concurrent.futures.Future[T]) -> T:
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            if self.closed:
                raise LLMRelayError("the service was closed while the call was waiting") from None
            raise LLMRelayError("the call was cancelled on the service's loop") from None
        except BaseException:
            fut.cancel()
            raise

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result in the calling thread."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("the sync API cannot be called from its own loop thread")
        try:
            loop = self.loop
        except LLMRelayError:
            coro.close()
            raise
        return self._wait(self._submit(coro, loop))

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator on the loop, yielding its items in the calling thread."""
        loop = self.loop

        async def step() -> Any:
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return _END

        try:
            while True:
                item = self._wait(self._submit(step(), loop))
                if item is _END:
                    return
                yield item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not self.closed and loop.is_running():
                # closed meanwhile: the loop is gone and the stream with it
                with contextlib.suppress(LLMRelayError):
                    self._wait(self._submit(aclose(), loop))

    def stop(self) -> None:
        """Stop the loop, join its thread and fail every call still waiting (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            same_process = self._pid == os.getpid()
            self._loop, self._thread = None, None
            self._closed_pid = os.getpid()
            pending = list(self._pending.items())
            self._pending.clear()
        if loop is not None and same_process:
            if loop.is_running() and thread is not threading.current_thread():
                # tasks still on the loop (calls stopped at close) end cancelled, their
                # clean-up run, instead of being destroyed pending with the loop
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(_cancel_rest(), loop).result(_JOIN_S)
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(loop.stop)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=_JOIN_S)
        for fut, coro in pending:
            fut.cancel()  # their threads wake with LLMRelayError (see _wait)
            if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == "CORO_CREATED":
                coro.close()  # scheduled, never started: the stopped loop will not run it
        if loop is not None and same_process and not loop.is_running() and not loop.is_closed():
            loop.close()
