"""The command line: run the kit's reference servers, or its measurements, from a terminal.

python -m wspatterns serve echo --port 8765
python -m wspatterns bench broadcast --clients 10 100 1000
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode

from .broadcast.strategies import STRATEGIES
from .browsers.page import answer_pages
from .errors import PortInUseError
from .lab import setup
from .patterns import PATTERNS
from .runtime import serve
from .runtime.handlers import name_of
from .settings import STOP_GRACE, Handler

ABOUT = {
    "echo": "sends every message back",
    "consumer": "prints every message it receives",
    "producer": "sends the time every second",
    "consumer-producer": "does both at once",
    "multiple-consumers": "four worker tasks take a second over each message, then print it",
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
    benching = commands.add_parser(
        "bench",
        help="measure something and print the table",
        description="Measure something the lessons measure, and print the table.",
    )
    benches = benching.add_subparsers(dest="bench", required=True, metavar="BENCH")
    broadcasting = benches.add_parser(
        "broadcast",
        help="how late a broadcast reaches its clients, for each strategy and number of clients",
        description="For each strategy and number of clients, run a broadcasting server and "
        "its clients in two processes, measure the latency of what they receive, and print "
        "one row per run.",
    )
    broadcasting.add_argument(
        "--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES),
        metavar="STRATEGY", help=f"any of: {' '.join(STRATEGIES)} (all)",
    )  # fmt: skip
    broadcasting.add_argument(
        "--clients", nargs="+", type=int, default=[10, 100, 1000], metavar="N",
        help="numbers of clients (10 100 1000)",
    )  # fmt: skip
    broadcasting.add_argument("--size", type=int, default=64, help="bytes per message (64)")
    broadcasting.add_argument("--rate", type=float, default=10.0, help="broadcasts a second (10)")
    broadcasting.add_argument("--seconds", type=float, default=2.0, help="to measure each run (2)")
    broadcasting.add_argument(
        "--slow-client", action="store_true", help="add a client that never reads"
    )
    commands.add_parser(
        "setup",
        help="install the lessons' kernel and settings in this environment's JupyterLab",
        description="Install the kernel 'Python (wspatterns)', make it the default, and turn "
        "off JupyterLab's news question, all under this Python's sys.prefix.",
    )
    args = parser.parse_args(argv)

    if args.command == "setup":
        for path in setup():
            print(f"wrote {path}")
        return 0
    if args.command == "bench":
        return _bench_broadcast(args)
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
    handler = PATTERNS[pattern]
    closing: set[asyncio.Task[None]] = set()  # connections to say "closed" of, once they are
    server = await serve(
        _announced(handler, closing), name=name_of(handler), host=host, port=port,
        process_request=answer_pages(pattern),
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"serving {pattern} on {server.url} (Ctrl+C to stop)", flush=True)
    page = "http://" + server.url.removeprefix("ws://")
    print(f"a browser client: open {page} in a browser", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        if closing:  # the last connections' lines come before "stopped"
            await asyncio.wait(closing, timeout=STOP_GRACE)
        print("stopped", flush=True)


def _announced(handler: Handler, closing: set[asyncio.Task[None]]) -> Handler:
    """``handler``, saying on stdout when each connection opens, and when it has closed.

    Each "closed" line waits in a task of ``closing`` for its connection to close.
    """

    async def say_closed(websocket: ServerConnection) -> None:
        await websocket.wait_closed()
        code = websocket.close_code or CloseCode.ABNORMAL_CLOSURE
        said = [str(code)]
        if code in set(CloseCode):
            said.append(CloseCode(code).name.lower().replace("_", " "))
        if websocket.close_reason:
            said.append(repr(websocket.close_reason))
        _say(websocket, f"closed: {' '.join(said)}")

    async def announced(websocket: ServerConnection) -> None:
        host, port, *_ = websocket.remote_address
        _say(websocket, f"connected from {host}:{port}")
        try:
            await handler(websocket)
        finally:  # websockets closes the connection once the handler returns: say it then
            task = asyncio.create_task(say_closed(websocket))
            closing.add(task)
            task.add_done_callback(closing.discard)

    announced.__name__ = name_of(handler)
    return announced


def _say(websocket: ServerConnection, what: str) -> None:
    """One line: the time, which client, what happened, and how many connections are open."""
    name = getattr(websocket, "name", "a client")
    count = len(websocket.server.connections)
    print(f"{time.strftime('%H:%M:%S')} {name} {what} ({count} open)", flush=True)


def _bench_broadcast(args: argparse.Namespace) -> int:
    """Run the broadcast sweep and print its table; 1 if a run failed, 2 for bad input."""
    from .broadcast.experiment import broadcast_experiment

    started = time.perf_counter()
    try:
        results = asyncio.run(
            broadcast_experiment(
                args.strategies,
                args.clients,
                size=args.size,
                rate=args.rate,
                seconds=args.seconds,
                slow_client=args.slow_client,
            )
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    print(results.to_string(index=False, float_format=lambda value: f"{value:.4g}"))
    print(f"({len(results)} runs in {time.perf_counter() - started:.0f} s)")
    return 0 if results["complete"].all() else 1
