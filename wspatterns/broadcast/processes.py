"""The parent's side of the broadcast experiment: start its processes, drive them, stop them.

As upstream websockets measures a broadcast, the server and its clients run in
processes of their own, so that neither the notebook's kernel nor the clients
slow the server down::

    measured = await measure("queue", 100, seconds=2)
    measured.clients["p99_ms"]

:func:`measure` is one such run; :class:`ServerProcess` and :class:`ClientsProcess`
are its two processes, for set-ups of your own. Each is always stopped when its
``async with`` block ends, even after an error or a cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple, Self

from ..errors import ProcessFailed
from ..runtime.processes import ChildProcess
from .strategies import check_strategy


class AddressedProcess(ChildProcess):
    """A process whose first line is a URL: entering starts it and waits for that line, kept
    in ``url``. Leaving stops it (killing it after an error). Raises :class:`ProcessFailed`."""

    module = "wspatterns.broadcast.server_process"
    report = "report"

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self.url = ""

    async def __aenter__(self) -> Self:
        await self.launch()
        try:
            self.url = await self.read(30, "URL")
        except BaseException:
            await self.close(grace=0)
            raise
        return self


class ServerProcess(AddressedProcess):
    """A broadcasting server in its own process; ``async with ServerProcess(...) as server:``.

    ``server.url`` is where it listens. It starts paused: ``start()`` broadcasts and opens a
    measuring window, ``await stop()`` pauses and returns the window's report. Leaving the
    block stops the process (killing it after an error). Raises ValueError for an unknown
    ``strategy``, :class:`ProcessFailed` if the process dies or stops answering.
    """

    role = "server"
    report = "report"  # broadcasts, cpu, memory_mb

    def __init__(
        self, strategy: str, *, size: int = 64, rate: float = 10.0, kit: bool = False
    ) -> None:
        check_strategy(strategy)
        args = ["--strategy", strategy, "--size", str(size), "--rate", str(rate), "--paused"]
        super().__init__(args + (["--kit"] if kit else []))
        self.strategy, self.kit = strategy, kit


class ClientsProcess(ChildProcess):
    """``count`` clients of ``url`` (plus ``slow`` that never read) in their own process.

    A list of URLs shares the clients out in turn. Entering waits until they are connected
    (``ready`` says how many could); ``start()`` opens a measuring window, ``await stop()``
    returns its summary (messages, p50/p95/p99/max latency in ms). Raises :class:`ProcessFailed`.
    """

    module = "wspatterns.broadcast.clients_process"
    role = "clients"
    report = "summary"  # messages, fewest, p50_ms, p95_ms, p99_ms, max_ms, closed, slow_open

    def __init__(self, url: str | list[str], count: int, *, slow: int = 0) -> None:
        urls = [url] if isinstance(url, str) else url
        super().__init__([*urls, "--count", str(count), "--slow", str(slow)])
        self.count, self.slow = count, slow
        self.ready: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        await self.launch()
        try:
            # Opening takes longer the more clients there are.
            self.ready = await self.read_json(30 + (self.count + self.slow) / 20, "ready line")
        except BaseException:
            await self.close(grace=0)
            raise
        return self


class Measurement(NamedTuple):
    """What one run measured: how many clients connected, what they saw, what the server did."""

    ready: dict[str, Any]  # connected, slow, failed, error (the first one)
    clients: dict[str, Any]  # messages, fewest, p50_ms, p95_ms, p99_ms, max_ms, closed, slow_open
    server: dict[str, Any]  # clients, broadcasts, broadcast_ms, seconds, cpu, memory_mb


async def measure(
    strategy: str,
    clients: int,
    *,
    size: int = 64,
    rate: float = 10.0,
    seconds: float = 2.0,
    slow: int = 0,
    kit: bool = False,
    phase: Callable[[str], None] | None = None,
) -> Measurement:
    """One run: a server process broadcasting with ``strategy`` to a clients process.

    Warms up, then measures for ``seconds``; ``phase(text)`` hears what is happening.
    Raises :class:`ProcessFailed` if either process dies or stops answering; both are
    gone when this returns or raises, even when cancelled.
    """
    tell = phase or (lambda _: None)
    tell("starting the server")
    async with ServerProcess(strategy, size=size, rate=rate, kit=kit) as server:
        tell(f"connecting {clients} clients" + (f" and {slow} slow" if slow else ""))
        try:
            async with ClientsProcess(server.url, clients, slow=slow) as audience:
                if not audience.ready["connected"]:
                    raise ProcessFailed(f"no client could connect: {audience.ready['error']}")
                tell("warming up")
                server.start()
                await asyncio.sleep(max(0.5, 2 / rate))
                tell(f"measuring for {seconds:g} s")
                server.start()  # a new window: the warm-up does not count
                audience.start()
                await asyncio.sleep(seconds)
                summary = await audience.stop()
                report = await server.stop()
        except ProcessFailed as exc:
            # The clients fail when their server dies: then the server's fate is the news.
            raise ProcessFailed(await server.gone() or str(exc)) from None
        tell("stopping")
    return Measurement(audience.ready, summary, report)
