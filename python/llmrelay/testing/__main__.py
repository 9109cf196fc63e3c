"""``python -m llmrelay.testing openai --port 0``: serve a fake provider until terminated.

The first line of stdout is the server's URL (``http://127.0.0.1:<port>``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from llmrelay.testing._fake import FakeProvider


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llmrelay.testing", description=__doc__)
    p.add_argument("protocol", choices=["openai", "anthropic", "ollama", "azure"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-s", type=float, default=0.0)
    p.add_argument("--stream-chunk-delay-s", type=float, default=0.0)
    p.add_argument("--model", default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument(
        "--no-control",
        action="store_true",
        help="close the control channel (POST /__llmrelay__/control) used by FakeProvider.spawn",
    )
    return p


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeProvider(
        args.protocol,
        host=args.host,
        port=args.port,
        latency_s=args.latency_s,
        stream_chunk_delay_s=args.stream_chunk_delay_s,
        model=args.model,
        api_key=args.api_key,
        control=not args.no_control,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(fake.url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
