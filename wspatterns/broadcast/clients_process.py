"""The clients' side of the broadcast experiment: a process of many clients timing messages.

It opens many clients to a broadcasting server (and, if asked, some that never
read), prints how many could connect, and measures how late stamped messages
reach them, as JSON lines::

    python -m wspatterns.broadcast.clients_process ws://127.0.0.1:PORT/ --count 100 --slow 1

Several URLs share the clients out in turn (the relays of one channel, say).
:class:`~wspatterns.broadcast.processes.ClientsProcess` starts and drives it
from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.uri import parse_uri

from ..runtime.processes import say, until_signal
from .child import measure_on_command, raise_file_limit
from .measuring import LatencyLog

#: Opening handshakes the clients process runs at once: enough to be quick, few enough
#: not to overflow the server's accept queue.
OPENING_AT_ONCE = 50

#: Seconds a client may take to connect, however many open at once.
OPEN_TIMEOUT = 30.0


async def open_slow_client(url: str, timeout: float) -> ClientConnection:
    """A client that never reads: it asks its kernel for the smallest receive buffer, and
    websockets reads at most one message for it, so what the server sends it piles up sooner.

    Raises TimeoutError if it cannot connect within ``timeout`` seconds, OSError if nobody
    listens at ``url``.
    """
    uri = parse_uri(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port)), timeout
        )
        return await connect(url, sock=sock, proxy=None, max_queue=1, open_timeout=timeout)
    except BaseException:
        sock.close()
        raise


async def run_clients(
    url: str | list[str], count: int, slow: int = 0, *, seconds: float | None, warmup: float = 0.5
) -> int:
    """Open ``count`` clients (and ``slow`` that never read), print progress as JSON lines.

    Several URLs share the clients out in turn. With ``seconds``, measure for that long
    after ``warmup`` and print the summary; without, obey ``start`` / ``stop`` / ``quit``
    lines on stdin. Returns the exit code: 1 if no client could connect.
    """
    urls = [url] if isinstance(url, str) else url
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def open_one(is_slow: bool, number: int) -> ClientConnection:
        url = urls[number % len(urls)]
        async with gate:
            if is_slow:
                return await open_slow_client(url, OPEN_TIMEOUT)
            return await connect(url, proxy=None, max_size=None, open_timeout=OPEN_TIMEOUT)

    opened = await asyncio.gather(
        *(open_one(False, number) for number in range(count)),
        *(open_one(True, number) for number in range(slow)),
        return_exceptions=True,
    )
    clients = [c for c in opened[:count] if isinstance(c, ClientConnection)]
    slow_clients = [c for c in opened[count:] if isinstance(c, ClientConnection)]
    errors = [c for c in opened if isinstance(c, BaseException)]
    say(
        {
            "event": "ready",
            "connected": len(clients),
            "slow": len(slow_clients),
            "failed": len(errors),
            "error": f"{type(errors[0]).__name__}: {errors[0]}" if errors else None,
        }
    )
    if not clients:
        print(f"no client could connect to {', '.join(urls)}", file=sys.stderr, flush=True)
        return 1

    log = LatencyLog(len(clients))
    closed = 0

    async def read(number: int, websocket: ClientConnection) -> None:
        nonlocal closed
        try:
            async for message in websocket:
                log.record(number, message)
        except ConnectionClosed:
            pass
        closed += 1

    def summary() -> dict[str, Any]:
        still_open = sum(1 for c in slow_clients if c.state is State.OPEN)
        return {**log.summary(), "closed": closed, "slow_open": still_open}

    readers = [asyncio.create_task(read(n, c)) for n, c in enumerate(clients)]
    try:
        if seconds is None:
            await measure_on_command(log, summary)
        else:
            await until_signal(measure_for(log, warmup, seconds))
            say(summary())
    finally:
        for reader in readers:
            reader.cancel()
        # No closing handshakes: a server stuck sending to a slow client would delay them.
        for websocket in clients + slow_clients:
            websocket.transport.abort()
    return 0


async def measure_for(log: LatencyLog, warmup: float, seconds: float) -> None:
    """Let ``warmup`` seconds pass, then open ``log``'s window for ``seconds``."""
    await asyncio.sleep(warmup)
    log.start()
    await asyncio.sleep(seconds)


def main(argv: list[str] | None = None) -> int:
    """Run the clients process as ``argv`` says; the exit code (1: nobody could connect)."""
    parser = argparse.ArgumentParser(
        prog="python -m wspatterns.broadcast.clients_process",
        description="Open COUNT clients to URL (in turn to each URL, if several) and measure "
        "how late messages arrive. With --seconds, measure that long and print a JSON "
        "summary; without, measure between 'start' and 'stop' lines on stdin.",
    )
    parser.add_argument("url", nargs="+")
    parser.add_argument("--count", type=int, default=10, help="clients that read (10)")
    parser.add_argument("--slow", type=int, default=0, help="clients that never read (0)")
    parser.add_argument("--seconds", type=float, help="measure this long, then exit")
    parser.add_argument("--warmup", type=float, default=0.5, help="before measuring (0.5 s)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.slow < 0:
        parser.error("--count must be 1 or more and --slow 0 or more")
    raise_file_limit()
    return asyncio.run(
        run_clients(args.url, args.count, args.slow, seconds=args.seconds, warmup=args.warmup)
    )


if __name__ == "__main__":
    sys.exit(main())
