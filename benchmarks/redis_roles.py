"""The processes of redis_fanout.py: a publisher and relays, fanning out through Redis.

A publisher publishes stamped messages on a Redis channel; relays, each a
server subscribed to that channel through a RedisHub, broadcast() every message
to their own clients. Each runs in a process of its own, and obeys its parent's
commands on stdin as the broadcast experiment's server process does (start,
stop, quit; see wspatterns.broadcast.child). The Redis URL comes from
$WSPATTERNS_HUB_REDIS_URL: a URL with a password must stay off the command
line, which every user of the machine can read::

    export WSPATTERNS_HUB_REDIS_URL=redis://:SECRET@127.0.0.1:PORT/0
    python benchmarks/redis_roles.py publisher --rate 10
    python benchmarks/redis_roles.py relay

PublisherProcess and RelayProcess start and drive them from Python, as the
kit's ServerProcess does its server, hand them the URL through their
environment, and always stop them. The kit's clients process holds their
clients, shared out over the relays' URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio
from websockets.asyncio.server import broadcast
from websockets.asyncio.server import serve as plain_serve
from websockets.typing import Data

from wspatterns.broadcast import BuiltIn, LatencyLog, Strategy
from wspatterns.broadcast.child import measure_on_command, raise_file_limit
from wspatterns.broadcast.measuring import resident_bytes
from wspatterns.broadcast.processes import AddressedProcess
from wspatterns.broadcast.server_process import Broadcaster, close_plain_server
from wspatterns.pubsub import URL_VARIABLE, RedisHub, redacted
from wspatterns.runtime.processes import say

#: The Redis channel the publisher and relays use unless told otherwise.
CHANNEL = "fanout"

#: This file: its processes run it by path, as a script (it is no module of the kit).
SCRIPT = Path(__file__).resolve()


# The publisher


class RedisPublisher(Strategy):
    """Broadcast by publishing on a Redis channel: the relays subscribed to it send it on.

    It has no clients of its own; ``client`` is a ``redis.asyncio`` client.
    """

    def __init__(self, client: redis.asyncio.Redis, channel: str) -> None:
        super().__init__()
        self.client = client
        self.channel = channel

    async def broadcast(self, message: Data) -> None:
        await self.client.publish(self.channel, message)


async def run_publisher(
    redis_url: str, channel: str, size: int, rate: float, *, paused: bool
) -> None:
    """Publish a stamped text message on ``channel`` every ``1 / rate`` s.

    Prints ``redis_url``, its password masked, once Redis answers, then obeys commands on
    stdin; the report's ``broadcast_ms`` is the time one publish takes. Raises redis-py's
    ConnectionError if Redis cannot be reached.
    """
    client = redis.asyncio.from_url(redis_url)
    try:
        await client.ping()
        say(redacted(redis_url))
        # Text: a RedisHub carries text, and the relays read the channel through one.
        publisher = Broadcaster(RedisPublisher(client, channel), size, rate, text=True)
        if not paused:
            publisher.start()
        try:
            await measure_on_command(publisher, publisher.report)
        finally:
            publisher.pause()
    finally:
        await client.aclose()


# The relays


class Relay:
    """Sends each message published on a Redis channel to all its clients with websockets'
    ``broadcast()``, and measures the hop: how late messages arrive from their publisher.

    Serve :attr:`room`'s handler and give :meth:`deliver` to a hub's ``subscribe()``. A
    window opens at each :meth:`start`; :meth:`report` says what happened since.
    """

    def __init__(self) -> None:
        self.room = BuiltIn()
        self.hop = LatencyLog(1)
        self.busy = 0.0  # seconds spent inside broadcast() while the window is open

    @property
    def open(self) -> bool:
        return self.hop.open

    def start(self) -> None:
        self.hop.start()
        self.busy = 0.0

    def pause(self) -> None:
        self.hop.pause()

    def deliver(self, channel: str, message: str, id: str | None = None) -> None:
        """Send ``message`` on (bytes: a binary frame, as the server process sends)."""
        data = message.encode()
        with contextlib.suppress(ValueError):  # a message without a stamp is sent, not timed
            self.hop.record(0, data)
        start = time.perf_counter()
        broadcast(self.room.clients, data)
        if self.hop.open:
            self.busy += time.perf_counter() - start

    def report(self) -> dict[str, Any]:
        """Messages relayed in the window, the hop's percentiles (ms), the time one
        ``broadcast()`` took, seconds, CPU load, and the memory the process occupies."""
        hop = self.hop.summary()
        messages = hop["messages"]
        return {
            "event": "report",
            "clients": len(self.room.clients),
            "messages": messages,
            **{f"hop_{name}": hop[name] for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms")},
            "broadcast_ms": round(self.busy / messages * 1000, 3) if messages else None,
            "seconds": hop["seconds"],
            "cpu": hop["cpu"],
            "memory_mb": round(resident_bytes() / 2**20, 1),
        }


async def run_relay(redis_url: str, channel: str) -> None:
    """Serve on 127.0.0.1, subscribe to ``channel`` through a RedisHub, print the URL, and
    relay every message to every client; obey commands on stdin.

    Raises HubUnavailable if Redis cannot be reached.
    """
    relay = Relay()
    server = await plain_serve(relay.room.handler, "127.0.0.1", 0, compression=None)
    try:
        async with RedisHub(redis_url, name="relay") as hub:
            await hub.subscribe(channel, relay.deliver)
            say(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
            await measure_on_command(relay, relay.report)
    finally:
        await close_plain_server(server)


# Driving them from Python


class RoleProcess(AddressedProcess):
    """A process running this file in one of its roles, with the Redis at ``redis_url``;
    ``url`` is its first line.

    The URL, password and all, reaches the process through its environment
    (``$WSPATTERNS_HUB_REDIS_URL``), never its command line, which every user can read.
    """

    def __init__(self, args: list[str], redis_url: str) -> None:
        super().__init__(args)
        self.env = {URL_VARIABLE: redis_url}

    def command(self) -> list[str]:
        """``python benchmarks/redis_roles.py ARGS``: this file runs by path, not with ``-m``."""
        # The child imports wspatterns as any script does, from where it is installed.
        return [sys.executable, str(SCRIPT), *self.args]


class PublisherProcess(RoleProcess):
    """Publishes stamped messages on ``channel`` of the Redis at ``redis_url``, from its own
    process; ``async with PublisherProcess(...) as publisher:``.

    The URL reaches the process through its environment. Entering waits until Redis
    answers it (``url`` is then ``redacted(redis_url)``). It starts paused: ``start()``
    publishes every ``1 / rate`` s and opens a measuring window, ``await stop()`` pauses and
    returns the window's report (``broadcast_ms``: one publish). Raises ProcessFailed.
    """

    role = "publisher"

    def __init__(
        self, redis_url: str, *, channel: str = CHANNEL, size: int = 64, rate: float = 10.0
    ) -> None:
        super().__init__(
            ["publisher", "--channel", channel, "--size", str(size), "--rate", str(rate)]
            + ["--paused"],
            redis_url,
        )


class RelayProcess(RoleProcess):
    """A relay in its own process: subscribed to ``channel`` of the Redis at ``redis_url``, it
    ``broadcast()``s every message to its clients; ``async with RelayProcess(...) as relay:``.

    The Redis URL reaches the process through its environment. Entering waits until it is
    subscribed; ``url`` is where it listens. ``start()`` opens a measuring window,
    ``await stop()`` returns its report (messages, the hop from the publisher: ``hop_p50_ms``,
    ``hop_p99_ms``…, the time one ``broadcast()`` took). Raises ProcessFailed.
    """

    role = "relay"

    def __init__(self, redis_url: str, *, channel: str = CHANNEL) -> None:
        super().__init__(["relay", "--channel", channel], redis_url)


def main(argv: list[str] | None = None) -> int:
    """Run the role named in ``argv`` (publisher or relay); the exit code."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/redis_roles.py",
        description="The processes of fan-out through Redis: a publisher and relays.",
    )
    roles = parser.add_subparsers(dest="role", required=True)
    publisher = roles.add_parser(
        "publisher",
        help="publish on a Redis channel; print the Redis URL, then a JSON report",
        description="Publish a stamped text message on CHANNEL every 1/rate s, once Redis "
        "answers (then print REDIS_URL, its password masked). Reads commands on stdin: start, "
        "stop (prints the report as JSON), quit; end of stdin, SIGTERM and SIGINT quit too.",
    )
    publisher.add_argument("--size", type=int, default=64, help="bytes per message (64)")
    publisher.add_argument("--rate", type=float, default=10.0, help="messages a second (10)")
    publisher.add_argument("--paused", action="store_true", help="wait for 'start'")
    relay = roles.add_parser(
        "relay",
        help="broadcast every message of a Redis channel; print the URL, then a JSON report",
        description="Serve on 127.0.0.1 (any free port), subscribe to CHANNEL through a "
        "RedisHub, print the URL, and broadcast() every message to every client. Reads "
        "commands on stdin as the publisher does; the report gives how late messages reached "
        "the relay from the publisher (the hop).",
    )
    for role in (publisher, relay):
        role.add_argument(
            "redis_url",
            nargs="?",
            default=os.environ.get(URL_VARIABLE),
            help=f"(${URL_VARIABLE}; keep a URL with a password there: every user can read "
            "a command line)",
        )
        role.add_argument("--channel", default=CHANNEL, help=f"({CHANNEL})")
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error(f"{args.role} needs a Redis URL: set {URL_VARIABLE}")
    raise_file_limit()
    if args.role == "publisher":
        if args.size < 0 or not args.rate > 0:
            parser.error("--size must be 0 or more and --rate more than 0")
        asyncio.run(
            run_publisher(args.redis_url, args.channel, args.size, args.rate, paused=args.paused)
        )
    else:
        asyncio.run(run_relay(args.redis_url, args.channel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
