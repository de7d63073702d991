"""The server's side of the broadcast experiment: a process that broadcasts on a schedule.

It serves on 127.0.0.1 (any free port), prints its URL, broadcasts a stamped
message every ``1 / rate`` seconds with one of the :data:`STRATEGIES`, and
measures what that costs it in windows its parent opens and closes on stdin
(see :mod:`.child`)::

    python -m wspatterns.broadcast.server_process --strategy naive --size 64 --rate 10

:class:`~wspatterns.broadcast.processes.ServerProcess` starts and drives it
from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from websockets.asyncio.server import Server as PlainServer
from websockets.asyncio.server import serve as plain_serve

from ..runtime import serve as kit_serve
from ..runtime.processes import say
from .child import measure_on_command, raise_file_limit
from .measuring import resident_bytes, stamped_message
from .strategies import STRATEGIES, Strategy


class Broadcaster:
    """Broadcasts a stamped message every ``1 / rate`` seconds and measures the CPU it takes.

    A window opens at each :meth:`start`; :meth:`report` says what happened since.
    """

    def __init__(self, strategy: Strategy, size: int, rate: float, *, text: bool = False) -> None:
        self.strategy = strategy
        self.size = size
        self.text = text  # messages of text, not bytes: see stamped_message()
        self.period = 1 / rate
        self.broadcasts = 0
        self.busy = 0.0  # seconds spent inside strategy.broadcast()
        self.open = False
        self._task: asyncio.Task[None] | None = None
        self._wall = self._cpu = 0.0

    def start(self) -> None:
        """Broadcast (if paused) and open a new measuring window."""
        self.broadcasts, self.busy, self.open = 0, 0.0, True
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        if self._task is None:
            self._task = asyncio.create_task(self._broadcast_forever())

    def pause(self) -> None:
        """Stop broadcasting, even in the middle of a broadcast; the window closes."""
        self.open = False
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def report(self) -> dict[str, Any]:
        """What the window measured: broadcasts, the time one took on average, seconds, CPU
        load (CPU time / wall time), and the memory the process occupies at the end."""
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        each = self.busy / self.broadcasts if self.broadcasts else None
        return {
            "event": "report",
            "clients": len(self.strategy.clients),
            "broadcasts": self.broadcasts,
            "broadcast_ms": None if each is None else round(each * 1000, 3),
            "seconds": round(wall, 4),
            "cpu": round(cpu / wall, 4) if wall > 0 else None,
            "memory_mb": round(resident_bytes() / 2**20, 1),
        }

    async def _broadcast_forever(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            start = time.perf_counter()
            await self.strategy.broadcast(stamped_message(self.size, text=self.text))
            self.busy += time.perf_counter() - start
            self.broadcasts += 1
            # Keep to the schedule; after a broadcast that overran it, start again from now
            # rather than sending a burst to catch up.
            due = max(due + self.period, loop.time())
            await asyncio.sleep(due - loop.time())


async def run_server(strategy: str, size: int, rate: float, *, kit: bool, paused: bool) -> None:
    """Serve on 127.0.0.1, print the URL, broadcast, and obey commands on stdin until told to quit.

    With ``kit``, serve with the kit's ``serve()``, recording every frame; the report then
    also gives how many events were recorded. ``paused`` waits for ``start``.
    """
    way = STRATEGIES[strategy]()
    # No compression, as in upstream's experiment: the cost measured is the sending.
    if kit:
        kit_server = await kit_serve(way.handler, name=f"broadcast-{strategy}", compression=None)
        url = kit_server.url
    else:
        plain_server = await plain_serve(way.handler, "127.0.0.1", 0, compression=None)
        url = f"ws://127.0.0.1:{plain_server.sockets[0].getsockname()[1]}/"
    say(url)
    broadcaster = Broadcaster(way, size, rate)
    if not paused:
        broadcaster.start()

    def report() -> dict[str, Any]:
        figures = broadcaster.report()
        if kit:  # proof that recording was on: events recorded since the server started
            figures["recorded"] = kit_server.flow.recorded
        return figures

    try:
        await measure_on_command(broadcaster, report)
    finally:
        broadcaster.pause()
        if kit:
            await kit_server.stop()
        else:
            await close_plain_server(plain_server)


async def close_plain_server(server: PlainServer) -> None:
    """Close a websockets server, giving its connections at most 5 s to close."""
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5)


def main(argv: list[str] | None = None) -> int:
    """Run the server process as ``argv`` says; the exit code (2 for bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m wspatterns.broadcast.server_process",
        description="Serve on 127.0.0.1 (any free port), print the URL, and broadcast a "
        "stamped message every 1/rate s. Reads commands on stdin: start, stop (prints the "
        "report as JSON), quit; end of stdin, SIGTERM and SIGINT quit too.",
    )
    parser.add_argument("--strategy", choices=list(STRATEGIES), default="default")
    parser.add_argument("--kit", action="store_true", help="serve with wspatterns (recording)")
    parser.add_argument("--size", type=int, default=64, help="bytes per message (64)")
    parser.add_argument("--rate", type=float, default=10.0, help="broadcasts a second (10)")
    parser.add_argument("--paused", action="store_true", help="wait for 'start'")
    args = parser.parse_args(argv)
    if args.size < 0 or not args.rate > 0:
        parser.error("--size must be 0 or more and --rate more than 0")
    raise_file_limit()
    asyncio.run(run_server(args.strategy, args.size, args.rate, kit=args.kit, paused=args.paused))
    return 0


if __name__ == "__main__":
    sys.exit(main())
