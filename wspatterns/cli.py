"""The command line: run the kit's reference servers from a terminal, for any client to reach.

python -m wspatterns serve echo --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .errors import PortInUseError
from .patterns import PATTERNS
from .runtime import serve

ABOUT = {
    "echo": "sends every message back",
    "consumer": "prints every message it receives",
    "producer": "sends the time every second",
    "consumer-producer": "does both at once",
    "workers": "four workers take a second over each message, then print it",
}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m wspatterns",
        description="Run the wspatterns reference servers outside a notebook.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serving = commands.add_parser(
        "serve",
        help="serve a reference pattern until Ctrl+C",
        description="Serve a reference pattern until Ctrl+C; prints the URL to connect to "
        "(from a browser, wscat, or `python -m websockets URL`).",
        epilog="patterns: " + "; ".join(f"{name}: {what}" for name, what in ABOUT.items()),
    )
    serving.add_argument("pattern", choices=sorted(PATTERNS), help="which handler to serve")
    serving.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serving.add_argument("--port", type=int, default=8765, help="port, 0 for any free one (8765)")
    args = parser.parse_args(argv)

    try:
        asyncio.run(_serve_until_stopped(args.pattern, args.host, args.port))
    except PortInUseError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        print("Choose another one with --port, or --port 0 for any free port.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _serve_until_stopped(pattern: str, host: str, port: int) -> None:
    server = await serve(PATTERNS[pattern], host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"serving {pattern} on {server.url} (Ctrl+C to stop)", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        print("stopped", flush=True)
