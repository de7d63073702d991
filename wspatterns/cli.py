"""The command line: run the kit's reference servers, or its measurements, from a terminal.

python -m wspatterns serve echo --port 8765
python -m wspatterns bench broadcast --clients 10 100 1000
python -m wspatterns student-copy DEST
python -m wspatterns grade SUBMISSION... [--out grades]
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode

from .broadcast.strategies import STRATEGIES
from .browsers.page import answer_pages
from .errors import PortInUseError, WSPatternsError
from .lab import setup
from .patterns import PATTERNS
from .runtime import serve
from .runtime.handlers import name_of
from .settings import STOP_GRACE, Handler
from .teaching.catalog import LESSONS

ABOUT = {
    "echo": "sends every message back",
    "consumer": "prints every message it receives",
    "producer": "sends the time every second",
    "consumer-producer": "does both at once",
    "multiple-consumers": "four worker tasks take a second over each message, then print it",
}

#: Broadcasts a second ``bench broadcast`` accepts. Below 0.1, a run's warm-up (two
#: broadcasts) alone takes over 20 s; above 10,000, the schedule is finer than the event
#: loop's timers (about a millisecond) and the server just broadcasts as fast as it can.
RATES = (0.1, 10_000.0)

#: File descriptors each of the bench's processes needs besides one socket per client:
#: standard streams, the event loop's, the listening socket, pipes to the parent.
FD_RESERVE = 32


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
    serving.add_argument(
        "--host", type=_host, default="127.0.0.1",
        help="address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)",
    )  # fmt: skip
    serving.add_argument("--port", type=_port, default=8765, help="port, 0 for any free one (8765)")
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
        "--clients", nargs="+", type=_clients, default=[10, 100, 1000], metavar="N",
        help="numbers of clients (10 100 1000)",
    )  # fmt: skip
    broadcasting.add_argument("--size", type=_size, default=64, help="bytes per message (64)")
    broadcasting.add_argument(
        "--rate", type=_rate, default=10.0,
        help=f"broadcasts a second, {RATES[0]:g} to {RATES[1]:,g} (10)",
    )  # fmt: skip
    broadcasting.add_argument(
        "--seconds", type=_seconds, default=2.0, help="to measure each run (2)"
    )
    broadcasting.add_argument(
        "--slow-client", action="store_true", help="add a client that never reads"
    )
    commands.add_parser(
        "setup",
        help="install the lessons' kernel and settings in this environment's JupyterLab",
        description="Install the kernel 'Python (wspatterns)', make it the default, and turn "
        "off JupyterLab's news question, all under this Python's sys.prefix.",
    )
    copying = commands.add_parser(
        "student-copy",
        help="write the lessons as a class receives them, without our solutions",
        description="Write the lessons to DEST (a new or empty folder) as a class receives "
        "them: no solutions/, no cell that loads our solution, the exercises' outputs cleared.",
    )
    copying.add_argument("dest", type=Path, help="the folder to write (new or empty)")
    copying.add_argument("--lessons", type=Path, default=LESSONS, help="the lessons to copy")
    grading = commands.add_parser(
        "grade",
        help="grade submitted notebooks with the exercises' own checkers",
        description="Run each submission's answers through the exercises' checkers, each in "
        "a kernel of its own with a time limit, and write a row per student to "
        "OUT/grades.csv and OUT/grades.html.",
    )
    grading.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION",
                         help="a notebook, or a folder of one student's notebooks")  # fmt: skip
    grading.add_argument("--out", type=Path, default=Path("grades"), help="where to write (grades)")
    grading.add_argument("--lessons", type=Path, default=LESSONS, help="the lessons handed out")
    grading.add_argument("--jobs", type=_jobs, help="answers graded at once (as many as cores)")
    grading.add_argument("--time-limit", type=_seconds, default=120.0,
                         help="seconds for each answer, its checker included (120)")  # fmt: skip
    args = parser.parse_args(argv)

    if args.command in ("student-copy", "grade"):
        return _teach(args, copying if args.command == "student-copy" else grading)
    if args.command == "setup":
        for path in setup():
            print(f"wrote {path}")
        return 0
    if args.command == "bench":
        problem = _bench_problem(args)
        if problem:
            broadcasting.error(problem)
        return _bench_broadcast(args)
    try:
        asyncio.run(_serve_until_stopped(args.pattern, args.host, args.port))
    except _CannotListen as exc:
        serving.error(str(exc))
    except PortInUseError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        print("Choose another one with --port, or --port 0 for any free port.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _teach(args: argparse.Namespace, command: argparse.ArgumentParser) -> int:
    from .teaching import grade, student_copy, write_gradebook  # pandas, kernels: only here

    try:
        if args.command == "student-copy":
            written = student_copy(args.dest, args.lessons)
            print(f"wrote {len(written)} notebooks to {args.dest}, without solutions/")
            return 0
        start = time.monotonic()
        table = grade(args.submissions, lessons=args.lessons, jobs=args.jobs,
                      time_limit=args.time_limit)  # fmt: skip
    except (OSError, ValueError) as error:
        command.error(str(error))
    csv, page = write_gradebook(table, args.out)
    took = time.monotonic() - start
    print(f"graded {len(table)} submissions in {took:.0f} s: wrote {csv} and {page}")
    return 0


class _CannotListen(WSPatternsError, OSError):
    """The address or port given cannot be listened on; the message says which and why."""


async def _serve_until_stopped(pattern: str, host: str, port: int) -> None:
    handler = PATTERNS[pattern]
    closing: set[asyncio.Task[None]] = set()  # connections to say "closed" of, once they are
    try:
        server = await serve(
            _announced(handler, closing), name=name_of(handler), host=host, port=port,
            process_request=answer_pages(pattern),
        )  # fmt: skip
    except PortInUseError:
        raise
    except OSError as exc:
        raise _CannotListen(_why_not(host, port, exc)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    here, elsewhere = _where(host, server.port)
    if elsewhere is not None:
        print(_exposed(host, server.port), file=sys.stderr, flush=True)
    print(f"serving {pattern} on ws://{here}/ (Ctrl+C to stop){_also('ws', elsewhere)}", flush=True)
    print(
        f"a browser client: open http://{here}/ in a browser{_also('http', elsewhere)}", flush=True
    )
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


# What the command line accepts, checked before anything starts: argparse's types, whose
# ArgumentTypeError becomes one line after the usage, and exit code 2.


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: give a number from 0 to 65535 (0: any free one)"
        )
    return port


def _host(text: str) -> str:
    try:
        _addresses_of(text)
    except (OSError, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise argparse.ArgumentTypeError(
            f"no address found for {text!r} ({why}): give an address of this machine, "
            "such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    return text


def _clients(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"clients must be whole numbers; got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"clients must be 1 or more in each run; got {count}")
    return count


def _size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = -1
    if size < 0:
        raise argparse.ArgumentTypeError(
            f"size must be a whole number of bytes, 0 or more; got {text!r}"
        )
    return size


def _rate(text: str) -> float:
    low, high = RATES
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not low <= rate <= high:  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"rate must be {low:g} to {high:,g} broadcasts a second; got {text!r} (below, the "
            "warm-up alone takes over 20 s; above, the event loop's timers cannot keep time)"
        )
    return rate


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"jobs must be a whole number, 1 or more; got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"seconds must be a number more than 0; got {text!r}")
    return seconds


def _bench_problem(args: argparse.Namespace) -> str | None:
    """Why the bench asked for cannot finish here, in one line; None if it can."""
    if args.rate * args.seconds < 1:
        return (
            f"--seconds {args.seconds:g} at --rate {args.rate:g} measures less than one "
            f"broadcast: give --seconds {math.ceil(1 / args.rate)} or more, or a higher --rate"
        )
    # Each client is one socket in the server's process and one in the clients' process;
    # each process raises its own limit to the hard one (broadcast/child.py).
    import resource  # not on Windows, where the bench's processes do not run anyway

    clients = max(args.clients) + (1 if args.slow_client else 0)
    needed = clients + FD_RESERVE
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and needed > hard:
        return (
            f"{clients:,} clients need {needed:,} open files in each of the bench's two "
            f"processes (a socket per client in the server's and in the clients', and "
            f"{FD_RESERVE} for Python), but this system allows a process {hard:,} "
            f"(`ulimit -Hn`): raise it with `ulimit -n {needed}` (as root above that limit, "
            f"or with a nofile line in /etc/security/limits.conf), or run at most "
            f"{max(hard - FD_RESERVE, 0):,} clients"
        )
    ports = _local_ports()
    if ports is not None and clients > ports:
        return (
            f"{clients:,} clients of one server on this machine need {clients:,} local ports, "
            f"but the system hands out {ports:,} "
            "(/proc/sys/net/ipv4/ip_local_port_range): run at most that many clients"
        )
    return None


def _local_ports() -> int | None:
    """How many ports the system picks from for outgoing connections (Linux), or None."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return None
    return high - low + 1


# Where a server listens, said so that a browser can open it


def _addresses_of(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a server on ``host`` listens on ("" is every interface, as for asyncio)."""
    found = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in found]


def _where(host: str, port: int) -> tuple[str, list[str] | None]:
    """Where a browser on this machine reaches a server on ``host``, as ``host:port``; and
    where one on another machine does: None if nowhere (the loopback only), else a list
    (empty when it is ``host`` itself)."""
    addresses = _addresses_of(host)
    if all(address.is_loopback for address in addresses):
        return _joined(host, port), None
    every = {address.version for address in addresses if address.is_unspecified}
    if not every:  # one address of this machine's, the same from here and from elsewhere
        return _joined(host, port), []
    here = "127.0.0.1" if 4 in every else "::1"
    import psutil

    others = {
        address
        for snics in psutil.net_if_addrs().values()
        for snic in snics
        if snic.family in (socket.AF_INET, socket.AF_INET6)
        and (address := ipaddress.ip_address(snic.address.partition("%")[0])).version in every
        and not (address.is_loopback or address.is_link_local)
    }
    ordered = sorted(others, key=lambda address: (address.version, address))
    return _joined(here, port), [_joined(str(address), port) for address in ordered]


def _joined(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _also(scheme: str, elsewhere: list[str] | None) -> str:
    """What to add to a URL printed for this machine, for the other machines that can reach it."""
    if not elsewhere:
        return ""
    return "; from other machines: " + ", ".join(f"{scheme}://{each}/" for each in elsewhere)


def _exposed(host: str, port: int) -> str:
    """The one line that warns of a server other machines can reach."""
    every = {address.version for address in _addresses_of(host) if address.is_unspecified}
    if every:
        shown, only = host or repr(host), " IPv6" if every == {6} else ""
        where = (
            f"--host {shown} listens on every{only} interface: anyone who can reach this machine"
        )
    else:
        where = f"--host {host} is reachable from other machines: anyone who can reach it"
    return (
        f"warning: {where} can connect to port {port}, with no password "
        "(--host 127.0.0.1 keeps it to this machine)"
    )


def _why_not(host: str, port: int, exc: OSError) -> str:
    """What to tell of a server that could not listen on ``host`` and ``port``."""
    if exc.errno == errno.EADDRNOTAVAIL:
        why = os.strerror(exc.errno)
        return f"argument --host: {host} is not an address of this machine ({why})"
    if exc.errno == errno.EACCES:
        return (
            f"argument --port: port {port} needs more privileges than you have "
            f"({exc.strerror}); ports below 1024 are for root: try 8765, or 0 for any free one"
        )
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}"
