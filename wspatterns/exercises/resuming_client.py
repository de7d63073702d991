"""The exercise on Redis Streams: a client that comes back after a disconnection and misses nothing.

Here you write a client, ``follow(url, channel, received)``, and the checker
is the server: a hub server on a :class:`~wspatterns.pubsub.StreamHub` that it
can cut a connection of, keep new connections waiting at the door, and restart
on the same port, publishing numbered messages all along.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from ..flow import Flow
from ..pubsub import Hub, StreamHub, hub_handler, start_redis
from ..runtime import Server, serve
from .harness import GRACE, in_time, until
from .report import Report

#: What a follow() is: ``async def follow(url, channel, received)``.
Follow = Callable[[str, str, list[Any]], Coroutine[Any, Any, None]]

FEED = "numbers"  # the channel check_resuming_client publishes on
PACE = 0.02  # seconds between two of its messages
# How long a client may take to come back after a restart: websockets' own
# `async for websocket in connect(url)`, left to its default delays, waits up to 5 s
# after a refused connection (a random part of WEBSOCKETS_BACKOFF_INITIAL_DELAY).
BACK = GRACE * 6


class HubServer:
    """A hub server the checker can cut a connection of, keep new ones waiting, and restart."""

    def __init__(self, hub: Hub) -> None:
        self.handler = hub_handler(hub)
        self.flow = Flow()  # one for both runs of the server
        self.door = asyncio.Event()  # while clear, a new connection waits to be served
        self.door.set()
        self.connections = 0
        self.server: Server | None = None

    async def start(self, port: int = 0) -> Server:
        """Serve the hub on ``port`` (0: any free one), counting connections as they come."""

        async def hub_server(websocket: ServerConnection) -> None:
            self.connections += 1
            await self.door.wait()
            await self.handler(websocket)

        # quiet: the report says what went wrong.
        self.server = await serve(
            hub_server, name="check follow", port=port, flow=self.flow, quiet=True
        )
        return self.server

    async def cut(self) -> None:
        """Close every connection as a server about to restart would (1012), and keep the door."""
        assert self.server is not None
        self.door.clear()
        for websocket in self.server.connections:
            await in_time(GRACE, websocket.close(CloseCode.SERVICE_RESTART, "service restart"))

    async def restart(self, meanwhile: Callable[[], Awaitable[None]]) -> None:
        """Stop; await ``meanwhile()`` while connecting is refused; start again on the same port."""
        assert self.server is not None
        port = self.server.port
        await self.stop()
        await meanwhile()
        await self.start(port)

    async def stop(self) -> None:
        self.door.set()
        if self.server is not None:
            await self.server.stop(timeout=GRACE / 2)

    def errors_sent(self) -> list[str]:
        """The errors the server answered to the client, in the protocol's {"error": ...}."""
        sent = [
            event.head.decode(errors="replace")
            for event in self.flow.events
            if event.kind == "message" and event.at == "server" and event.sender == "server"
        ]
        return list(dict.fromkeys(text for text in sent if text.startswith('{"error"')))


class ResumingCheck:
    """One run of check_resuming_client: publish, cut, restart, and note what follow() did."""

    def __init__(self, report: Report, follow: Follow, hub: Hub) -> None:
        self.report, self.follow, self.hub = report, follow, hub
        self.server = HubServer(hub)
        self.received: list[Any] = []
        self.published: list[int] = []
        self.away: list[int] = []  # published while follow() was not subscribed
        self.lost_at: str | None = None  # where it did not come back, if it did not
        self.due = 0  # how many of the published messages it should have received
        self.task: asyncio.Task[None]  # follow(), once run() has started it

    async def run(self) -> None:
        """Tell the story, then cancel follow() and add the report's lines."""
        server = await self.server.start()
        self.task = asyncio.create_task(self.follow(server.url, FEED, self.received))
        try:
            await self.story()
        finally:
            running = not self.task.done()
            stopped = await self.cancel()
            await self.server.stop()
        self.say_how_it_ended(running, stopped)
        self.say_what_it_received()

    async def story(self) -> None:
        if not await self.subscribed("start", GRACE * 3):
            return
        await self.publish(range(1, 11))
        await self.heard(10)
        # 1. The server closes the connection (1012), and publishes before letting it back.
        await self.server.cut()
        await until(lambda: self.hub.subscribers(FEED) == 0)
        await self.publish(range(11, 16), away=True)
        self.server.door.set()
        if not await self.subscribed("cut", GRACE * 3):
            return
        await self.publish(range(16, 23))
        await self.heard(22)
        # 2. The server restarts, publishing while connecting is refused.
        await self.server.restart(lambda: self.publish(range(23, 27), away=True))
        if not await self.subscribed("restart", BACK):
            return
        await self.publish(range(27, 31))
        await self.heard(30)

    async def publish(self, numbers: Iterable[int], *, away: bool = False) -> None:
        for number in numbers:
            await self.hub.publish(FEED, str(number))
            self.published.append(number)
            if away:
                self.away.append(number)
            await asyncio.sleep(PACE)

    async def subscribed(self, after: str, seconds: float) -> bool:
        """Wait until follow() is subscribed; note where it was lost if it does not come."""
        await until(lambda: self.hub.subscribers(FEED) > 0 or self.task.done(), seconds)
        if self.hub.subscribers(FEED) > 0:
            self.due = len(self.published)
            return True
        self.lost_at = after
        return False

    async def heard(self, number: int) -> None:
        await until(lambda: str(number) in self.received or self.task.done())
        self.due = len(self.published)

    async def cancel(self) -> bool:
        """Cancel follow(); whether it ended within GRACE."""
        self.task.cancel()
        await asyncio.wait([self.task], timeout=GRACE)
        if self.task.done() and not self.task.cancelled():
            self.task.exception()  # retrieved: the report tells it
        return self.task.done()

    def say_how_it_ended(self, running: bool, stopped: bool) -> None:
        if not running:
            error = None if self.task.cancelled() else self.task.exception()
            if error is None:
                self.report.add(
                    False,
                    f"follow() returned after receiving {len(self.received)} message(s): "
                    "it should run until it is cancelled.",
                )
            else:
                why = str(error).rstrip(".")
                self.report.add(
                    False, f"follow() raised {type(error).__name__}: {why}{_hint(error)}"
                )
        self.report.add(
            self.lost_at is None,
            "follow() came back after both disconnections: a close with 1012 (service "
            "restart), and a server restart that refused connections for a moment.",
            self.where_it_was_lost(),
        )
        if running:
            self.report.add(
                stopped,
                "follow() stopped when it was cancelled.",
                f"follow() was still running {GRACE:g} s after it was cancelled: let "
                "asyncio.CancelledError through (catch Exception, not BaseException).",
            )
        else:
            self.report.skip(
                "Whether follow() stopped when it was cancelled",
                "it had ended before it was cancelled",
            )

    def where_it_was_lost(self) -> str:
        if self.lost_at == "start":
            return (
                f"follow() did not subscribe to {FEED!r} within {GRACE * 3:g} s: connect "
                f'to the url and send {{"action": "subscribe", "channel": "{FEED}"}}.'
            )
        if self.lost_at == "cut" and self.server.connections > 1:
            return (
                "follow() connected again after the server closed its connection, but did "
                "not subscribe: subscribe on every new connection."
            )
        if self.lost_at == "cut":
            return (
                "follow() stopped after the first disconnection (the server closed the "
                "connection with 1012, service restart): reconnect whenever the connection "
                "closes."
            )
        within = "" if self.task.done() else f" within {BACK:g} s"
        return (
            f"follow() did not come back{within} after the server restarted: while the "
            "connection is refused, wait a moment and try again."
        )

    def say_what_it_received(self) -> None:
        if self.lost_at == "start" or not self.due:
            because = "follow() never subscribed while messages were published"
            self.report.skip("Whether follow() received every message", because)
            self.report.skip("Whether follow() received no message twice", because)
            return
        known = {str(number) for number in self.published}
        texts = [item for item in self.received if isinstance(item, str) and item in known]
        if len(texts) < len(self.received):
            stranger = next(item for item in self.received if item not in texts)
            self.report.add(
                False,
                f"received holds {stranger!r}, which is not one of the messages: append "
                'the "message" of each delivery, the text alone.',
            )
        due = [str(number) for number in self.published[: self.due]]
        missing = [int(text) for text in due if text not in texts]
        if not missing:
            while_there = "" if self.lost_at is None else " published while it was there"
            self.report.add(True, f"received all {len(due)} messages{while_there}.")
        elif set(missing) <= set(self.away):
            self.report.add(
                False,
                f"missed {len(missing)} messages, published while you were away "
                f'({_numbers(missing)}): subscribe again with "since", the id of the last '
                "message you got.",
            )
        else:
            self.report.add(
                False, f"missed {len(missing)} of {len(due)} messages ({_numbers(missing)})."
            )
        twice = sorted(int(text) for text, count in Counter(texts).items() if count > 1)
        if twice:
            self.report.add(
                False,
                f"received {len(twice)} messages more than once ({_numbers(twice)}): "
                '"since" must be the id of the LAST message you got.',
            )
        elif texts:
            self.report.add(True, "received no message twice.")
        else:
            self.report.skip(
                "Whether follow() received no message twice", "it received no message at all"
            )
        for error in self.server.errors_sent():
            self.report.add(False, f"The server answered {error}")


def _numbers(numbers: list[int], most: int = 6) -> str:
    shown = ", ".join(str(number) for number in numbers[:most])
    return shown + (", ..." if len(numbers) > most else "")


def _hint(error: BaseException) -> str:
    if isinstance(error, ConnectionClosed):
        return (
            ". Catch websockets.exceptions.ConnectionClosed, and connect again: inside "
            "`async for websocket in websockets.connect(url)`, catch it and `continue`."
        )
    if isinstance(error, OSError):
        return (
            ". The server was restarting: catch OSError (ConnectionRefusedError is one), "
            "wait a moment, and connect again; `async for websocket in "
            "websockets.connect(url)` does that for you."
        )
    return "."


async def check_resuming_client(follow: Follow) -> Report:
    """Check the exercise on Redis Streams: a client that comes back and misses nothing.

    ``follow(url, channel, received)`` must connect to the hub server at ``url``,
    subscribe to ``channel``, append the ``"message"`` of each delivery to
    ``received``, and whenever the connection drops connect again (trying again
    while it is refused) and subscribe with ``"since"``, the ``"id"`` of the last
    message it got; it runs until cancelled. The checker starts its own Redis and
    server, publishes 30 numbered messages, closes the connection once (1012,
    service restart) and restarts the server once, publishing while follow() is
    away; then it cancels follow().
    """
    report = Report("follow")
    if not inspect.iscoroutinefunction(follow):
        report.add(False, f"Pass your `async def follow(url, channel, received)`; got {follow!r}.")
        return report
    redis_server = await start_redis(name="check_resuming_client")
    try:
        async with StreamHub(redis_server.url, name="checker") as hub:
            await ResumingCheck(report, follow, hub).run()
    finally:
        redis_server.stop()
    return report
