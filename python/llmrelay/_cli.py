"""The ``llmrelay`` command: ``demo``, ``chat``, ``providers``, ``cache stats|clear``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from llmrelay.errors import LLMRelayError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmrelay", description="One API over many LLM providers.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="push a mixed workload through a real LLMService")
    d.add_argument("--requests", type=int, default=600, help="how many calls (default 600)")
    d.add_argument("--seed", type=int, default=7, help="seed of the workload and the faults")
    d.add_argument("--no-ollama", action="store_true", help="never use a local Ollama")
    d.add_argument("--plain", action="store_true", help="no live display (for logs and CI)")
    c = sub.add_parser("chat", help="send one prompt to the configured provider")
    c.add_argument("prompt")
    c.add_argument("--model", default=None)
    c.add_argument("--stream", action="store_true")
    sub.add_parser("providers", help="the provider registry and model capabilities")
    cache = sub.add_parser("cache", help="inspect or clear a disk cache")
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument("--path", default=os.environ.get("LLMRELAY_CACHE_DIR"))
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
            return _chat(args.prompt, args.model, args.stream)
        if args.command == "providers":
            return _providers()
        return _cache(args.action, args.path)
    except LLMRelayError as e:
        print(f"llmrelay: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


def _chat(prompt: str, model: str | None, stream: bool) -> int:
    from llmrelay._service import LLMService

    with LLMService() as svc:
        if stream:
            for chunk in svc.stream(prompt, model):
                print(chunk.text, end="", flush=True)
            print()
        else:
            r = svc.chat(prompt, model)
            print(r.text)
            ms = r.latency_s * 1000
            info = f"[{r.provider}/{r.model} {r.usage.total_tokens} tokens {ms:.0f} ms]"
            print(info, file=sys.stderr)
    return 0


def _providers() -> int:
    from llmrelay.providers import get_provider, list_providers

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
            print(f"    {name:<28} ctx {window!s:>8}  {' '.join(caps)}")
    return 0


def _cache(action: str, path: str | None) -> int:
    from llmrelay import _core

    if not path:
        print("llmrelay: give --path or set LLMRELAY_CACHE_DIR", file=sys.stderr)
        return 2
    disk = _core.DiskCache(path)
    try:
        if not disk.enabled:
            print(f"llmrelay: cache at {path} unavailable: {disk.error}", file=sys.stderr)
            return 1
        if action == "clear":
            disk.clear()
            print(f"cleared {path}")
        else:
            for k, v in sorted(disk.stats().items()):
                print(f"{k:<24} {v}")
    finally:
        disk.close()
    return 0
