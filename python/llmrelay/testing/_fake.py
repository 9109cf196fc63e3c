"""``FakeProvider``: one fake server speaking one provider's wire protocol on 127.0.0.1.

Run it on the current event loop (``async with FakeProvider("openai") as fake``), on a
background thread with its own loop for synchronous code (``with fake.run_in_thread()``), or
as a subprocess (``FakeProvider.spawn("openai")``). Script replies with ``script``, inject
faults with ``inject``, read what it received from ``requests``. Every method is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import msgspec

from llmrelay.errors import ConfigError
from llmrelay.testing._anthropic import AnthropicDialect
from llmrelay.testing._azure import AzureDialect
from llmrelay.testing._control import CONTROL_PATH, handle_control
from llmrelay.testing._dialect import Dialect, Exchange
from llmrelay.testing._faults import FaultKind, FaultPlan
from llmrelay.testing._ollama import OllamaDialect
from llmrelay.testing._openai import OpenAIDialect
from llmrelay.testing._ratelimit import RateLimitInfo, WindowLimit
from llmrelay.testing._recorded import RecordedRequest
from llmrelay.testing._script import (
    BodyPredicate,
    EmbeddingScript,
    ScriptedChat,
    ScriptMatch,
    parse_tool_calls,
    pick_script,
)
from llmrelay.testing._server import HttpRequest, HttpServer, Responder
from llmrelay.testing._spawn import SpawnedFake, spawn

__all__ = ["FakeProvider", "Protocol", "RecordedRequest"]

Protocol = Literal["openai", "anthropic", "ollama", "azure"]
_S = TypeVar("_S", ScriptedChat, EmbeddingScript)
_DIALECTS: dict[str, type[Dialect]] = {
    "openai": OpenAIDialect,
    "anthropic": AnthropicDialect,
    "ollama": OllamaDialect,
    "azure": AzureDialect,
}
_decode = msgspec.json.decode
# faults answered with the provider's error of the same name
_ERROR_FAULTS = frozenset(
    {"rate_limit", "server_error", "unavailable", "overloaded", "context_length", "auth"}
)


def _non_negative(name: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r}: must be a finite number >= 0")
    if value < 0:
        raise ConfigError(f"{name}={value!r}: must be >= 0")
    return float(value)


class FakeProvider:
    """A fake OpenAI, Anthropic, Ollama or Azure OpenAI server on ``host:port`` (``port=0``:
    any free port).

    ``latency_s`` delays every answer; ``stream_chunk_delay_s`` separates stream events;
    ``model`` fixes the model name reported (default: echo the requested one); ``api_key``,
    when set, is the only key accepted; ``embedding_dims`` sizes default embeddings;
    ``clock`` (seconds, default ``time.monotonic``) times requests and rate-limit windows.
    ``control`` opens the control channel (``POST /__llmrelay__/control``) through which a
    fake run as a process is scripted from another (see :meth:`spawn`).
    """

    def __init__(
        self,
        protocol: Protocol,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        stream_chunk_delay_s: float = 0.0,
        model: str | None = None,
        api_key: str | None = None,
        embedding_dims: int = 8,
        clock: Callable[[], float] | None = None,
        control: bool = False,
    ) -> None:
        dialect = _DIALECTS.get(protocol)
        if dialect is None:
            raise ConfigError(f"protocol={protocol!r}: must be one of {', '.join(_DIALECTS)}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"port={port!r}: must be an int in 0..65535")
        if not isinstance(embedding_dims, int) or embedding_dims < 1:
            raise ConfigError(f"embedding_dims={embedding_dims!r}: must be an int >= 1")
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigError(f"model={model!r}: must be a non-empty str or None")
        self.protocol: Protocol = protocol
        self.host = host
        self.latency_s = _non_negative("latency_s", latency_s)
        self.stream_chunk_delay_s = _non_negative("stream_chunk_delay_s", stream_chunk_delay_s)
        self.model = model
        self.api_key = api_key
        self.embedding_dims = embedding_dims
        self.control = control
        self._port = port
        self._clock = clock or time.monotonic
        self._dialect = dialect()
        self._routes = self._dialect.routes()
        self._server = HttpServer(self._handle)
        # re-entrant: a script's match predicate may read the fake (e.g. ``fake.requests``)
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._chat_scripts: deque[ScriptedChat] = deque()
        self._embedding_scripts: deque[EmbeddingScript] = deque()
        self._matching_scripts = 0  # queued scripts with a match= (else: first in, first out)
        self._faults = FaultPlan()
        self._static_limits: RateLimitInfo | None = None
        self._window: WindowLimit | None = None
        self._ids = itertools.count(1)
        # Anthropic's emulated prompt cache: the hashes of the prefixes written to it
        self._prompt_cache: set[str] = set()
        # signs the thinking blocks a fake hands out, to check they come back intact
        self._signing_key = secrets.token_bytes(16)

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind and serve on the running loop; returns self."""
        if self._server.running:
            raise RuntimeError("this FakeProvider is already running")
        await self._server.start(self.host, self._port)
        return self

    async def stop(self) -> None:
        """Close the listener and every connection, cancelling hanging handlers."""
        await self._server.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[Self]:
        """Serve from a background thread with its own event loop, for synchronous code."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())

        thread = threading.Thread(target=main, name=f"llmrelay-fake-{self.protocol}", daemon=True)
        thread.start()
        ready.wait()
        try:
            if failure:
                raise failure[0]
            yield self
        finally:
            if not failure:
                loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    @classmethod
    def spawn(
        cls,
        protocol: Protocol,
        *,
        port: int = 0,
        latency_s: float = 0.0,
        stream_chunk_delay_s: float = 0.0,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
    ) -> SpawnedFake:
        """Run a fake in a subprocess (``python -m llmrelay.testing``); close() the handle."""
        return spawn(
            protocol,
            port=port,
            latency_s=latency_s,
            stream_chunk_delay_s=stream_chunk_delay_s,
            model=model,
            api_key=api_key,
            timeout_s=timeout_s,
        )

    # addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._server.running:
            raise RuntimeError("the FakeProvider is not running: start() it first")
        return self._server.port

    @property
    def url(self) -> str:
        """``http://host:port``, the server's root."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The SDK's ``base_url``: OpenAI's ends in ``/v1``, the others' is the root."""
        return f"{self.url}/v1" if self.protocol == "openai" else self.url

    @property
    def models(self) -> list[str]:
        """The models listed by the models endpoint."""
        return [self.model or self._dialect.default_model]

    @property
    def default_model(self) -> str:
        return self._dialect.default_model

    # scripting and faults --------------------------------------------------------------------

    def script(
        self,
        reply: str | None = None,
        *,
        tool_calls: Sequence[Mapping[str, Any]] | None = None,
        finish_reason: Literal["stop", "length", "tool_calls"] | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        embedding_dims: int | None = None,
        embeddings: Sequence[Sequence[float]] | None = None,
        times: int = 1,
        match: BodyPredicate | Mapping[str, Any] | None = None,
        reasoning: str | None = None,
        redacted: bool = False,
        cached_tokens: int | None = None,
        cache_write_tokens: int | None = None,
    ) -> None:
        """Queue the next reply (``times`` copies); unscripted requests get the default echo.

        ``reasoning`` is the model's reasoning: Anthropic's signed ``thinking`` block
        (sent when the request enables ``thinking``; ``redacted=True``: a
        ``redacted_thinking`` block), OpenAI-compatible ``reasoning_content``, Ollama's
        ``message.thinking``; its tokens count as ``reasoning_tokens``.
        ``cached_tokens`` / ``cache_write_tokens`` report prompt-cache reads / writes
        instead of the emulated ones.

        Chat replies (``reply`` and/or ``tool_calls``, optional ``finish_reason`` and token
        counts) and embedding replies (``embedding_dims`` or fixed ``embeddings``) are queued
        separately and consumed in order by chat and embedding requests respectively.

        ``match`` makes the reply conditional: a callable called with the request's JSON
        body (truthy: it matches), or a mapping with any of ``path`` (the request path),
        ``model`` (the body's model) and ``body`` (such a callable), all of which must hold.
        A request takes the first queued reply that matches it, else the first one without
        ``match``, else the default echo. :meth:`assert_all_consumed` checks that none is
        left over.
        """
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ConfigError(f"times={times!r}: must be an int >= 1")
        chat_given = reply is not None or tool_calls is not None
        embed_given = embedding_dims is not None or embeddings is not None
        if chat_given == embed_given:
            raise ConfigError(
                "script(): give a chat reply (reply= and/or tool_calls=) or an embedding reply"
                " (embedding_dims= or embeddings=), not both or neither"
            )
        for name, value in (
            ("prompt_tokens", prompt_tokens),
            ("completion_tokens", completion_tokens),
            ("cached_tokens", cached_tokens),
            ("cache_write_tokens", cache_write_tokens),
        ):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name}={value!r}: must be an int >= 0")
        if finish_reason not in (None, "stop", "length", "tool_calls"):
            raise ConfigError(
                f"finish_reason={finish_reason!r}: must be stop, length or tool_calls"
            )
        if reply is not None and not isinstance(reply, str):
            raise ConfigError(f"reply={reply!r}: must be a str")
        if reasoning is not None and not isinstance(reasoning, str):
            raise ConfigError(f"reasoning={reasoning!r}: must be a str")
        matcher = ScriptMatch.parse(match)
        if chat_given:
            chat = ScriptedChat(
                reply,
                parse_tool_calls(tool_calls or ()),
                finish_reason,
                prompt_tokens,
                completion_tokens,
                matcher,
                reasoning,
                bool(redacted),
                cached_tokens,
                cache_write_tokens,
            )
            with self._lock:
                self._chat_scripts.extend([chat] * times)
                self._matching_scripts += times if matcher is not None else 0
            return
        if embedding_dims is not None and (
            not isinstance(embedding_dims, int) or embedding_dims < 1
        ):
            raise ConfigError(f"embedding_dims={embedding_dims!r}: must be an int >= 1")
        vectors = None
        if embeddings is not None:
            try:
                vectors = tuple(tuple(float(x) for x in v) for v in embeddings)
            except (TypeError, ValueError):
                raise ConfigError(f"embeddings={embeddings!r}: must be lists of floats") from None
        item = EmbeddingScript(embedding_dims, vectors, matcher)
        with self._lock:
            self._embedding_scripts.extend([item] * times)
            self._matching_scripts += times if matcher is not None else 0

    @property
    def pending_scripts(self) -> list[str]:
        """What is still queued: one description per scripted reply, chat replies first."""
        with self._lock:
            chats = [s.describe() for s in self._chat_scripts]
            return chats + [s.describe() for s in self._embedding_scripts]

    def assert_all_consumed(self) -> None:
        """Raise ``AssertionError`` listing every scripted reply no request has taken."""
        left = self.pending_scripts
        if left:
            lines = "\n".join(f"  - {d}" for d in left)
            raise AssertionError(
                f"{self!r}: {len(left)} scripted repl{'y' if len(left) == 1 else 'ies'}"
                f" not consumed:\n{lines}"
            )

    def inject(
        self,
        fault: FaultKind,
        *,
        times: int | None = None,
        ratio: float | None = None,
        seed: int | None = None,
        **args: Any,
    ) -> None:
        """Make requests fail: the next ``times`` ones, a seeded ``ratio`` of them, or all.

        Faults and their arguments:

        - ``rate_limit(retry_after=1.0, message=None)``: 429 with ``retry-after`` (whole
          seconds, rounded up) and ``retry-after-ms``; ``retry_after=None`` sends neither.
        - ``server_error`` (500), ``unavailable`` (503), ``overloaded`` (Anthropic 529,
          others 503), ``auth`` (401), each with ``message=None`` (the provider's default).
        - ``context_length(limit=128000)``: 400 with the provider's context-length error.
        - ``reset``: read the request, then close the socket with a TCP reset.
        - ``hang``: never answer; ends when the client closes or the fake stops.
        - ``cut_stream(after=1, abrupt=False)``: send ``after`` stream events, then end the
          body and close the connection without the protocol's end marker (``abrupt``: reset
          instead); a non-streamed reply is cut in the middle of its body.
        - ``malformed_json``: 200 with truncated JSON (or a broken first stream event).
        - ``wrong_content_type``: 200 ``text/html`` (a proxy's error page).
        - ``slow(delay_s=1.0)``: answer normally after an extra delay.
        """
        self._faults.add(fault, times, ratio, seed, args)

    def clear_faults(self) -> None:
        """Drop every injected fault."""
        self._faults.clear()

    def set_rate_limit_headers(
        self,
        *,
        limit_requests: int | None = None,
        remaining_requests: int | None = None,
        reset_requests_s: float | None = None,
        limit_tokens: int | None = None,
        remaining_tokens: int | None = None,
        reset_tokens_s: float | None = None,
    ) -> None:
        """Send these rate-limit values, in the provider's header format, on every response.

        Call with no arguments to stop. (Ollama has no rate-limit headers; it sends none.)
        """
        info = RateLimitInfo(
            limit_requests,
            remaining_requests,
            reset_requests_s,
            limit_tokens,
            remaining_tokens,
            reset_tokens_s,
        )
        with self._lock:
            self._static_limits = None if info == RateLimitInfo() else info

    def set_rate_limit(
        self, *, requests_per_minute: int | None = None, tokens_per_minute: int | None = None
    ) -> None:
        """Enforce a limit (429 beyond it, with ``retry-after``) and report it in headers.

        Windows are fixed minutes of the fake's clock. Call with no arguments to remove it.
        """
        window = None
        if requests_per_minute is not None or tokens_per_minute is not None:
            window = WindowLimit(requests_per_minute, tokens_per_minute, self._clock)
        with self._lock:
            self._window = window

    # the request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the log of requests received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def reset(self) -> None:
        """Forget received requests, queued scripts, faults and rate-limit settings."""
        with self._lock:
            self._requests.clear()
            self._chat_scripts.clear()
            self._embedding_scripts.clear()
            self._matching_scripts = 0
            self._static_limits = None
            self._window = None
            self._prompt_cache.clear()
        self._faults.clear()

    # used by the dialects --------------------------------------------------------------------

    def _next_id(self) -> int:
        return next(self._ids)

    def _next_chat_script(self, path: str, body: Any) -> ScriptedChat | None:
        if not self._chat_scripts:
            return None
        return self._take(self._chat_scripts, path, body)

    def _next_embedding_script(self, path: str, body: Any) -> EmbeddingScript | None:
        if not self._embedding_scripts:
            return None
        return self._take(self._embedding_scripts, path, body)

    def _take(self, queue: deque[_S], path: str, body: Any) -> _S | None:
        with self._lock:
            if not queue:
                return None
            if not self._matching_scripts:
                return queue.popleft()
            i = pick_script(queue, path, body)
            if i is None:
                return None
            script = queue[i]
            del queue[i]
            if script.match is not None:
                self._matching_scripts -= 1
            return script

    def _count_completion(self, tokens: int) -> None:
        window = self._window
        if window is not None:
            window.add_tokens(tokens)

    # dispatch --------------------------------------------------------------------------------

    async def _handle(self, request: HttpRequest, responder: Responder) -> None:
        if self.control and request.path == CONTROL_PATH:
            return await handle_control(self, request, responder)
        dialect = self._dialect
        body = request.body
        parsed: Any = None
        if body:
            try:
                parsed = _decode(body)
            except msgspec.DecodeError:
                parsed = None
        n = next(self._ids)
        request_id = dialect.request_id(n)
        record = RecordedRequest(
            request.method, request.path, request.headers, parsed, self._clock(), body
        )
        with self._lock:
            self._requests.append(record)
            static = self._static_limits
        headers = [(dialect.request_id_header, request_id)]
        if static is not None:
            headers.extend(dialect.rate_limit_headers(static))
        ex = Exchange(self, request, responder, parsed, request_id, headers)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        methods = dialect.route(self._routes, request.path)
        if methods is None:
            return await dialect.send_error(
                ex, "not_found", None, method=request.method, path=request.path
            )
        handler = methods.get(request.method)
        if handler is None:
            return await dialect.send_error(ex, "method_not_allowed")
        refused = dialect.check(ex)
        if refused is not None:
            return await dialect.send_error(ex, refused[0], refused[1])
        fault = self._faults.pick() if self._faults else None
        if fault is not None:
            kind = fault.kind
            if kind == "slow":
                await asyncio.sleep(fault.args["delay_s"])
            elif kind == "reset":
                return responder.abort()
            elif kind == "hang":
                return await responder.hang()
            elif kind in _ERROR_FAULTS:
                return await self._send_fault(ex, kind, fault.args, len(body))
            else:
                ex.fault = fault
        window = self._window
        if request.method == "POST":
            if not isinstance(parsed, dict):
                return await dialect.send_error(
                    ex, "invalid_request", "The request body is not a valid JSON object."
                )
            if window is not None:
                wait = window.admit((len(body) + 3) // 4)
                ex.headers.extend(dialect.rate_limit_headers(window.info()))
                if wait is not None:
                    return await dialect.send_error(ex, "rate_limit", retry_after=wait)
        await handler(ex)

    async def _send_fault(
        self, ex: Exchange, kind: str, args: dict[str, Any], body_len: int
    ) -> None:
        dialect = self._dialect
        if kind == "context_length":
            limit = args["limit"]
            tokens = max(limit + 1, (body_len + 3) // 4)
            return await dialect.send_error(ex, "context_length", None, limit=limit, tokens=tokens)
        if kind == "rate_limit":
            return await dialect.send_error(
                ex, "rate_limit", args["message"], retry_after=args["retry_after"]
            )
        await dialect.send_error(ex, kind, args["message"])  # type: ignore[arg-type]

    def __repr__(self) -> str:
        where = self.url if self._server.running else "stopped"
        return f"FakeProvider({self.protocol!r}, {where})"
