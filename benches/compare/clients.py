"""The clients under comparison, each behind one small interface.

Every client sends the same chat request to the same server and reads the reply's text:
``call()`` one non-streamed chat, ``stream()`` one streamed chat returning the
``perf_counter`` time its first content chunk arrived. ``available()`` lists the clients
importable in this interpreter (LiteLLM lives only in the isolated benchmark venv).
"""

from __future__ import annotations

import abc
import asyncio
import importlib.util
import json
import os
import time
from collections.abc import Callable
from typing import Any

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Hello, benchmark! Please answer briefly."}]
PAYLOAD = {"model": MODEL, "messages": MESSAGES}

# LiteLLM: offline and quiet (read at import time, so set before it is imported)
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOG", "ERROR")
os.environ.setdefault("LITELLM_TELEMETRY", "False")


class Client(abc.ABC):
    """One client; subclasses implement ``start``, ``call`` and ``stream``."""

    name = "?"

    @abc.abstractmethod
    async def start(self, url: str) -> None:
        """Connect to the fake server at ``url``."""

    @abc.abstractmethod
    async def call(self) -> str:
        """One chat request; returns the reply text."""

    @abc.abstractmethod
    async def stream(self) -> float:
        """One streamed request; returns the seconds to the first chunk."""

    async def close(self) -> None:  # noqa: B027 - most clients hold nothing to close
        """Release what ``start`` opened (nothing, unless a client overrides it)."""


# ---- the physical floor: a hand-written asyncio HTTP/1.1 client --------------------------


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fut: asyncio.Future[bytes] | None = None
        self.first_at = 0.0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        if not self.first_at:
            self.first_at = time.perf_counter()
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0 or self.fut is None:
            return
        head = bytes(buf[:end]).lower()
        i = head.find(b"content-length:")
        if i >= 0:
            j = head.find(b"\r\n", i)
            total = end + 4 + int(head[i + 15 : j if j >= 0 else len(head)])
            if len(buf) < total:
                return
            body = bytes(buf[end + 4 : total])
            del buf[:total]
        else:  # chunked: done at the terminal chunk
            k = buf.find(b"\r\n0\r\n\r\n", end)
            if k < 0:
                return
            raw = bytes(buf[end + 4 : k + 2])
            del buf[: k + 7]
            parts, pos = [], 0
            while pos < len(raw):
                eol = raw.index(b"\r\n", pos)
                size = int(raw[pos:eol], 16)
                parts.append(raw[eol + 2 : eol + 2 + size])
                pos = eol + 4 + size
            body = b"".join(parts)
        fut, self.fut = self.fut, None
        if not fut.done():
            fut.set_result(body)


class BareAsyncio(Client):
    """Keep-alive HTTP/1.1 on asyncio's protocol API: a pool of idle connections."""

    name = "bare asyncio"

    async def start(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.idle: list[_Conn] = []
        self.all: list[_Conn] = []
        self.head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
            "content-type: application/json\r\nauthorization: Bearer x\r\n"
        ).encode()

    async def _request(self, payload: dict[str, Any]) -> tuple[bytes, float]:
        conn = self.idle.pop() if self.idle else None
        if conn is None or conn.lost:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
            self.all.append(conn)
        body = json.dumps(payload).encode()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        conn.fut, conn.first_at = fut, 0.0
        assert conn.transport is not None
        conn.transport.write(b"%scontent-length: %d\r\n\r\n%s" % (self.head, len(body), body))
        data = await fut
        first = conn.first_at
        self.idle.append(conn)
        return data, first

    async def call(self) -> str:
        data, _ = await self._request(PAYLOAD)
        return str(json.loads(data)["choices"][0]["message"]["content"])

    async def stream(self) -> float:
        data, first = await self._request({**PAYLOAD, "stream": True})
        text = "".join(
            json.loads(ev[6:])["choices"][0]["delta"].get("content") or ""
            for ev in data.split(b"\n\n")
            if ev.startswith(b"data: {")
        )
        assert text
        return first

    async def close(self) -> None:
        for c in self.all:
            if c.transport is not None:
                c.transport.close()


# ---- raw httpx -----------------------------------------------------------------------------


class RawHttpx(Client):
    """``httpx.AsyncClient``, the chat JSON written by hand."""

    name = "httpx"

    async def start(self, url: str) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            base_url=url,
            headers={"authorization": "Bearer x"},
            limits=httpx.Limits(max_connections=2048, max_keepalive_connections=2048),
            timeout=60.0,
        )

    async def call(self) -> str:
        r = await self.client.post(
            "/v1/chat/completions",
            content=json.dumps(PAYLOAD).encode(),
            headers={"content-type": "application/json"},
        )
        return str(r.json()["choices"][0]["message"]["content"])

    async def stream(self) -> float:
        first = 0.0
        body = json.dumps({**PAYLOAD, "stream": True}).encode()
        async with self.client.stream(
            "POST",
            "/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        ) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content") and not first:
                        first = time.perf_counter()
        return first

    async def close(self) -> None:
        await self.client.aclose()


# ---- the official openai SDK ---------------------------------------------------------------


class OpenAISDK(Client):
    name = "openai SDK"

    async def start(self, url: str) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)

    async def call(self) -> str:
        r = await self.client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        return str(r.choices[0].message.content)

    async def stream(self) -> float:
        first = 0.0
        s = await self.client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        async for ch in s:
            if ch.choices and ch.choices[0].delta.content and not first:
                first = time.perf_counter()
        return first

    async def close(self) -> None:
        await self.client.close()


# ---- LiteLLM -------------------------------------------------------------------------------


def quiet_litellm() -> Any:
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    return litellm


class LiteLLM(Client):
    """``litellm.acompletion`` with an explicit ``api_base``."""

    name = "LiteLLM"

    async def start(self, url: str) -> None:
        self.litellm = quiet_litellm()
        self.kw = {"model": f"openai/{MODEL}", "api_base": f"{url}/v1", "api_key": "x"}

    async def call(self, **extra: Any) -> str:
        r = await self.litellm.acompletion(messages=MESSAGES, **self.kw, **extra)
        return str(r.choices[0].message.content)

    async def stream(self) -> float:
        first = 0.0
        s = await self.litellm.acompletion(messages=MESSAGES, stream=True, **self.kw)
        async for ch in s:
            if ch.choices and ch.choices[0].delta.content and not first:
                first = time.perf_counter()
        return first


class LiteLLMRouter(Client):
    """``litellm.Router.acompletion`` over one deployment."""

    name = "LiteLLM Router"

    async def start(self, url: str) -> None:
        litellm = quiet_litellm()
        params = {"model": f"openai/{MODEL}", "api_base": f"{url}/v1", "api_key": "x"}
        self.router = litellm.Router(model_list=[{"model_name": MODEL, "litellm_params": params}])

    async def call(self) -> str:
        r = await self.router.acompletion(model=MODEL, messages=MESSAGES)
        return str(r.choices[0].message.content)

    async def stream(self) -> float:
        first = 0.0
        s = await self.router.acompletion(model=MODEL, messages=MESSAGES, stream=True)
        async for ch in s:
            if ch.choices and ch.choices[0].delta.content and not first:
                first = time.perf_counter()
        return first


# ---- llmrelay ------------------------------------------------------------------------------


def llmrelay_config(url: str, *, deployments: int = 1, cache: Any = None, **kw: Any) -> Any:
    """One (or N identical) OpenAI deployments at ``url``; cache and dedup off unless given."""
    from llmrelay import (
        CacheConfig,
        DedupConfig,
        LLMServiceConfig,
        OrchestratorConfig,
        ProviderConfig,
    )

    rate_limit = kw.pop("rate_limit", None)
    providers = [
        ProviderConfig(
            name=f"openai{i}" if i else "openai",
            kind="openai",
            base_url=f"{url}/v1",
            api_key="x",
            models=[MODEL],
            rate_limit=rate_limit if i == 0 else None,
        )
        for i in range(deployments)
    ]
    return LLMServiceConfig(
        providers=providers,
        default_model=f"openai/{MODEL}" if deployments == 1 else MODEL,
        cache=cache if cache is not None else CacheConfig(enabled=False),
        dedup=DedupConfig(enabled=False),
        orchestrator=OrchestratorConfig(
            max_concurrency=2048, max_queue_size=100_000, adaptive_concurrency=False
        ),
        **kw,
    )


def rust_transport_factory() -> Callable[[Any], Any] | None:
    """``ProviderConfig -> RustTransport()`` when the Rust transport is importable, else None."""
    try:
        from llmrelay._transport import RustTransport  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return lambda _provider: RustTransport()


async def default_is_rust(url: str) -> bool:
    """Whether LLMService's default transport is already the Rust one (then an explicit
    RustTransport variant would measure the same thing twice): one call with spies on
    ``RustTransport.submit`` (the byte-level path) and ``handle_async_request`` (the httpx
    shim, and older versions) tells, without reaching into private names."""
    try:
        from llmrelay._transport import RustTransport  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    seen: list[int] = []
    originals = {
        name: getattr(RustTransport, name)
        for name in ("submit", "handle_async_request")
        if hasattr(RustTransport, name)
    }

    def spying(original: Any) -> Any:
        def spy(self: Any, *args: Any) -> Any:
            seen.append(1)
            return original(self, *args)

        return spy

    for name, original in originals.items():
        setattr(RustTransport, name, spying(original))
    try:
        client = LLMRelay()
        await client.start(url)
        try:
            await client.call()
        finally:
            await client.close()
    finally:
        for name, original in originals.items():
            setattr(RustTransport, name, original)
    return bool(seen)


class LLMRelay(Client):
    """``LLMService.achat`` / ``astream`` with the cache off, so every call reaches the server."""

    name = "llmrelay"

    def __init__(
        self, transport: str | Callable[[Any], Any] | None = None, name: str = "", **config: Any
    ) -> None:
        self.transport = transport
        self.config = config
        self.name = name or self.name

    async def start(self, url: str) -> None:
        from llmrelay import LLMService

        self.svc = LLMService(llmrelay_config(url, **self.config), transport=self.transport)

    async def call(self) -> str:
        r = await self.svc.achat(MESSAGES)
        return r.text

    async def stream(self) -> float:
        first = 0.0
        async for ch in self.svc.astream(MESSAGES):
            if ch.text and not first:
                first = time.perf_counter()
        return first

    async def close(self) -> None:
        await self.svc.aclose()


def _variants() -> dict[str, Callable[[], Client]]:
    """Every client by name, built only when asked for (so a process measuring one client
    imports only that client's library)."""
    out: dict[str, Callable[[], Client]] = {
        "bare asyncio": BareAsyncio,
        "httpx": RawHttpx,
        "openai SDK": OpenAISDK,
        "LiteLLM": LiteLLM,
        "LiteLLM Router": LiteLLMRouter,
        "llmrelay": LLMRelay,
        # the pure-httpx transport, to show what the default (Rust) transport buys
        "llmrelay (httpx transport)": lambda: LLMRelay("httpx", "llmrelay (httpx transport)"),
    }

    def rust() -> Client:
        factory = rust_transport_factory()
        assert factory is not None
        return LLMRelay(factory, "llmrelay (RustTransport)")

    out["llmrelay (RustTransport)"] = rust
    return out


def make(name: str) -> Client:
    """The client called ``name``."""
    return _variants()[name]()


def names(default_rust: bool) -> list[str]:
    """The comparison's clients importable here, in a fixed order."""
    have = {m: importlib.util.find_spec(m) is not None for m in ("openai", "litellm", "llmrelay")}
    out = ["bare asyncio", "httpx"]
    if have["openai"]:
        out.append("openai SDK")
    if have["litellm"]:
        out += ["LiteLLM", "LiteLLM Router"]
    if have["llmrelay"]:
        out.append("llmrelay")
        if default_rust:
            out.append("llmrelay (httpx transport)")
        elif rust_transport_factory() is not None:
            out.append("llmrelay (RustTransport)")
    return out


def available(default_rust: bool) -> list[Client]:
    """The comparison's clients (see ``names``), built."""
    return [make(n) for n in names(default_rust)]
