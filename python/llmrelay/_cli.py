"""The ``llmrelay`` command: ``demo``, ``chat``, ``run``, ``providers``, ``cache stats|clear``.

``main(argv)`` returns the exit code: 0 done, 1 the provider call or the cache
failed (``run``: some lines are error lines), 2 a bad setting or argument, 130
``run`` interrupted by Ctrl-C (rerun it to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrelay.errors import (
    AllProvidersFailedError,
    CircuitOpenError,
    LLMRelayError,
    ProviderError,
)

if TYPE_CHECKING:
    from llmrelay._service import LLMService

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmrelay", description="One API over many LLM providers.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="push a mixed workload through a real LLMService")
    d.add_argument("--requests", type=int, default=600, help="how many calls (default 600)")
    d.add_argument("--seed", type=int, default=7, help="seed of the workload and the faults")
    d.add_argument("--no-ollama", action="store_true", help="never use a local Ollama")
    d.add_argument("--plain", action="store_true", help="no live display (for logs and CI)")
    c = sub.add_parser(
        "chat",
        help="send one prompt to the configured provider",
        description="Send one prompt. The config is --config, else LLMRELAY_CONFIG, else the "
        "provider variables (OPENAI_API_KEY, ANTHROPIC_API_KEY, OLLAMA_HOST). Exit code 2: "
        "a bad setting or argument; 1: the provider call failed.",
    )
    c.add_argument("prompt")
    c.add_argument("--model", default=None, help="'<provider>/<model>' or a model name")
    c.add_argument("--config", default=None, help="a TOML config file (instead of LLMRELAY_CONFIG)")
    c.add_argument("--system", default=None, help="a system prompt")
    c.add_argument("--temperature", type=float, default=None)
    c.add_argument("--max-tokens", type=int, default=None, dest="max_tokens")
    c.add_argument("--stream", action="store_true")
    r = sub.add_parser(
        "run",
        help="run every request of a JSONL file into an output JSONL file (resumable)",
        description="One request per input line ({'id', 'messages' or 'prompt', 'model', "
        "'priority', 'sample', chat parameters...}), one output line per input line, in "
        "completion order. A rerun skips the ids already in the output. Ctrl-C stops "
        "starting new lines and lets the ones in flight finish; a second Ctrl-C abandons "
        "them. Exit code 0: every line answered; 1: some are error lines; 2: a bad setting "
        "or argument; 130: interrupted.",
    )
    r.add_argument("input", help="the input JSONL file")
    r.add_argument("-o", "--output", required=True, help="the output JSONL file (appended)")
    r.add_argument("--config", default=None, help="a TOML config file (instead of LLMRELAY_CONFIG)")
    r.add_argument("--model", default=None, help="the model of lines that name none")
    r.add_argument("--concurrency", type=int, default=None, help="lines in flight at most")
    r.add_argument(
        "--cache-mode",
        default=None,
        choices=["read_write", "read_only", "write_only", "replay"],
        help="the cache mode of every line (default: the config's CacheConfig.mode)",
    )
    r.add_argument("--no-progress", action="store_true", help="no live progress display")
    r.add_argument(
        "--plot", default=None, help="write throughput and latency to this PNG (needs matplotlib)"
    )
    sub.add_parser("providers", help="the provider registry and model capabilities")
    cache = sub.add_parser("cache", help="inspect or clear a disk cache")
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument(
        "--path",
        default=os.environ.get("LLMRELAY_CACHE_DIR"),
        help="the cache directory (default: LLMRELAY_CACHE_DIR)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from llmrelay._demo import run_demo

            return asyncio.run(
                run_demo(
                    requests=args.requests,
                    seed=args.seed,
                    use_ollama=not args.no_ollama,
                    live=not args.plain and sys.stdout.isatty(),
                )
            )
        if args.command == "chat":
            return _chat(args)
        if args.command == "run":
            return asyncio.run(_run(args))
        if args.command == "providers":
            return _providers()
        return _cache(args.action, args.path)
    except LLMRelayError as e:
        print(f"llmrelay: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


def _chat(args: argparse.Namespace) -> int:
    from llmrelay._config import LLMServiceConfig
    from llmrelay._service import LLMService

    config = LLMServiceConfig.from_toml(args.config) if args.config else None
    messages: list[dict[str, str]] = []
    if args.system is not None:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": args.prompt})
    params: dict[str, Any] = {}
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    with LLMService(config) as svc:
        try:
            if args.stream:
                for chunk in svc.stream(messages, args.model, **params):
                    print(chunk.text, end="", flush=True)
                print()
            else:
                r = svc.chat(messages, args.model, **params)
                print(r.text)
                ms = r.latency_s * 1000
                info = f"[{r.provider}/{r.model} {r.usage.total_tokens} tokens {ms:.0f} ms]"
                print(info, file=sys.stderr)
        except (ProviderError, AllProvidersFailedError, CircuitOpenError) as e:
            print(f"llmrelay: {type(e).__name__}: {e}", file=sys.stderr)
            for line in _tried(svc, e):
                print(f"  tried {line}", file=sys.stderr)
            return 1
    return 0


async def _run(args: argparse.Namespace) -> int:
    from llmrelay._cachekey import CacheControl
    from llmrelay._config import LLMServiceConfig
    from llmrelay._progress import RunProgress
    from llmrelay._runner import FileRunner
    from llmrelay._service import LLMService

    config = LLMServiceConfig.from_toml(args.config) if args.config else None
    if args.concurrency is not None and args.concurrency < 1:
        print("llmrelay: --concurrency must be >= 1", file=sys.stderr)
        return 2
    async with LLMService(config) as svc:
        view = svc.with_options(
            model=args.model,
            cache=CacheControl(mode=args.cache_mode) if args.cache_mode else None,
        )
        runner = FileRunner(
            view,
            args.input,
            args.output,
            concurrency=args.concurrency,
            progress=RunProgress(live=not args.no_progress),
            plot=args.plot,
        )
        task = asyncio.ensure_future(runner.run())
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            if not runner.stopping:
                runner.stop()
                print(
                    "\nllmrelay: stopping: no new lines; waiting for the ones in flight"
                    " (Ctrl-C again to abandon them)",
                    file=sys.stderr,
                )
            else:
                task.cancel()

        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform
            loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            summary = await task
        except asyncio.CancelledError:
            summary = runner.summary
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


def _tried(svc: LLMService, err: LLMRelayError) -> list[str]:
    """Where a failed call went: ``deployment/model at <base URL>`` per attempt."""
    places: list[tuple[str | None, str | None]]
    if isinstance(err, AllProvidersFailedError):
        places = [(a.provider, a.model) for a in err.attempts]
    elif isinstance(err, ProviderError):
        places = [(err.provider, err.model)]
    else:
        places = [(getattr(err, "deployment", None), None)]
    out: list[str] = []
    for name, model in places:
        if name is None:
            continue
        try:
            url = svc._engine.pool.get(name).base_url
        except LLMRelayError:
            continue
        line = f"{name}/{model} at {url}" if model else f"{name} at {url}"
        if line not in out:
            out.append(line)
    return out


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _providers() -> int:
    from llmrelay._pricing import PRICES_AS_OF, PriceBook
    from llmrelay.providers import get_provider, list_providers

    book = PriceBook()
    print(
        f"prices: USD per million tokens (input / cached input / cache write / output),"
        f" as of {PRICES_AS_OF}; override them with LLMServiceConfig.pricing"
    )
    for kind in list_providers():
        reg = get_provider(kind)
        print(f"{reg.kind}  (default {reg.default_base_url}; key {reg.api_key_env or '-'})")
        for name, info in sorted(reg.models.items()):
            caps = [
                cap
                for cap in ("tools", "vision", "json_mode", "streaming")
                if getattr(info, cap, None)
            ]
            window = info.context_window or "?"
            price = book.price(kind, kind, name)
            cost = (
                "price ?"
                if price is None
                else "$ "
                + " / ".join(
                    _usd(v)
                    for v in (price.input, price.cached_input, price.cache_write, price.output)
                )
            )
            print(f"    {name:<28} ctx {window!s:>8}  {' '.join(caps):<32} {cost}")
    return 0


#: DiskCache.stats() keys that count events of the process that has the cache open
_PER_PROCESS = ("hits", "misses", "expired", "evictions", "oversize", "corrupt", "errors")


def _cache(action: str, path: str | None) -> int:
    from llmrelay import _core

    if not path:
        print("llmrelay: give --path or set LLMRELAY_CACHE_DIR", file=sys.stderr)
        return 2
    where = Path(path)
    if not where.exists():
        print(f"llmrelay: no cache at {path}: the path does not exist", file=sys.stderr)
        return 1
    if not where.is_dir() or not (where / "db").is_file():
        print(f"llmrelay: no cache at {path}: not an llmrelay disk cache", file=sys.stderr)
        return 1
    disk = _core.DiskCache(path)
    try:
        if not disk.enabled:
            error = disk.error or "unknown error"
            if "in use" in error or "acquire lock" in error:
                print(
                    f"llmrelay: the cache at {path} is held by a running service (one process "
                    "opens a disk cache at a time); stop it first, or read its figures from "
                    "that service's metrics.snapshot().cache",
                    file=sys.stderr,
                )
            else:
                print(f"llmrelay: cache at {path} unavailable: {error}", file=sys.stderr)
            return 1
        if action == "clear":
            disk.clear()
            print(f"cleared {path}")
            return 0
        stats = disk.stats()
        print(f"{'path':<12} {path}")
        print(f"{'entries':<12} {stats.get('entries', 0)}")
        print(f"{'bytes':<12} {stats.get('bytes', 0)}")
        found = {k: stats[k] for k in ("recovered", "corrupt") if stats.get(k)}
        if found:
            print(f"{'on open':<12} " + ", ".join(f"{k} {v}" for k, v in found.items()))
        print(
            f"{', '.join(_PER_PROCESS)}: unknown here: each process counts its own lookups "
            "and none are stored on disk; a service reports them in metrics.snapshot().cache"
        )
    finally:
        disk.close()
    return 0
