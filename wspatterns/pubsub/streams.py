"""A hub on Redis Streams: it keeps what was published, so a client that comes back catches up.

:class:`StreamHub` is a :class:`~wspatterns.pubsub.Hub` like
:class:`~wspatterns.pubsub.RedisHub` (servers in many processes, on one Redis,
share its channels), but each channel is a Redis stream that keeps the last
``maxlen`` messages, each under the id Redis gave it. :func:`~wspatterns.pubsub.hub_handler`
sends that id with every delivery; a client whose connection dropped subscribes
again with ``"since"``, the id of the last message it got, and receives what it
missed, then the new messages: none lost, none twice::

    broker = await start_redis()
    hub = StreamHub(broker.url)
    server = await serve(hub_handler(hub), max_size=MAX_MESSAGE_SIZE)

How it keeps that promise. One task per hub, the reader, asks Redis for what is
new on every stream that has a subscriber here (XREAD, from the last id it
handed out on each stream, its *position*) and hands each entry to the
channel's subscribers. A subscribe with ``since`` takes the stream's position at
that moment as its boundary: it reads the entries after ``since`` up to the
boundary (XRANGE) and delivers them, while what the reader hands out meanwhile,
all of it after the boundary, is kept aside; it delivers that next and joins
the live subscribers without an ``await`` in between, so that nothing falls
between replay and live, and nothing is in both. A client that comes from
another server may be ahead of this one's reader: the subscribe first waits
for the reader to pass its ``since``.

Limits, each a choice:

* A ``since`` older than the oldest entry kept gets every entry kept: what
  ``maxlen`` trimmed is gone, and the client cannot tell.
* A ``since`` newer than anything in the stream gets the new messages only.
* The kit's Redis keeps nothing on disk: after it restarts, the streams start empty.
* The replay reaches the client through the same ``deliver`` as live messages:
  :func:`~wspatterns.pubsub.hub_handler` drops a client for which more than
  ``outbox_size`` messages (1000) or ``outbox_bytes`` bytes (1 MiB) would wait, so a
  replay longer than that drops it, as soon as it goes over.
* Subscribing again to a channel one is subscribed to replays nothing.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias, cast

from redis.typing import KeyT, StreamIdT

from ..flow import Flow
from ..settings import DEFAULT
from .hub import Deliver
from .redis_hub import REDIS_DOWN, RedisHub
from .redis_server import redacted

#: The key of a channel's stream in Redis is this prefix and the channel's name.
PREFIX = "wspatterns:"

# How many entries one XREAD or XRANGE returns at most.
BATCH = 1000

# The largest part of a stream id Redis accepts: ids are two unsigned 64-bit numbers.
_LARGEST = 2**64 - 1

#: A stream entry as this hub's client returns it: ``(id, fields)``, all str, as it
#: decodes responses. redis-py types its replies for every protocol and decoding at
#: once, so each reply is cast to what it is here where it arrives.
Entry: TypeAlias = tuple[str, dict[str, str]]


class StreamHub(RedisHub):
    """A hub on Redis Streams, with history: ``subscribe(channel, deliver, since=id)``.

    ``url`` is a Redis URL, such as ``broker.url`` (``broker = await start_redis()``).
    ``publish`` appends to the channel's stream, trimmed to about ``maxlen`` entries
    (Redis trims in whole blocks, so a few more may stay). Each delivery carries its
    stream id. A channel's first subscriber in this process may hear its first messages
    up to ``poll`` seconds late: the reader waits that long for news on the
    streams it reads before it asks again, the new one included.

    If Redis refuses the password or goes away, ``publish`` and ``subscribe`` raise
    :class:`~wspatterns.pubsub.HubUnavailable` saying which; after an outage the hub
    says so and comes back as :class:`~wspatterns.pubsub.RedisHub` does; the reader then goes on
    from where it was in each stream. With ``flow=``, its traffic with Redis is
    recorded as a connection between ``name`` and ``"redis"``.
    """

    history = True
    _after_outage = "It goes on from where it was in each stream: nothing Redis kept is lost."

    def __init__(
        self,
        url: str,
        *,
        maxlen: int = 10_000,
        poll: float = 0.1,
        timeout: float | None = DEFAULT,
        retry: float = 0.5,
        name: str = "hub",
        flow: Flow | None = None,
    ) -> None:
        super().__init__(url, timeout=timeout, retry=retry, name=name, flow=flow)
        self.maxlen = maxlen
        self.poll = poll
        # For each channel with a subscriber here: the id of the last entry the
        # reader handed out (or, before it handed out any, the stream's last id).
        self._positions: dict[str, str] = {}
        self._wanted = asyncio.Event()  # set when there are streams to read
        self._closing = False
        self._moved = asyncio.Event()  # set, and replaced, each time the reader moves on

    async def publish(self, channel: str, message: str) -> None:
        if self._link is not None:
            self._link.message("client", f"XADD {channel} {message}")
        try:
            await self._redis.xadd(
                PREFIX + channel, {"message": message}, maxlen=self.maxlen, approximate=True
            )
        except REDIS_DOWN as exc:
            raise self._unavailable("publish", exc) from exc

    async def subscribe(self, channel: str, deliver: Deliver, since: str | None = None) -> None:
        """Call ``deliver(channel, message, id)`` for each message on ``channel`` from now on.

        With ``since``, first for each message after that id still in the stream.
        Raises HubUnavailable if Redis cannot be reached or does not answer
        within ``timeout`` seconds.
        """
        async with self._changing:
            if deliver in self._subscribers.get(channel, ()):
                return  # subscribed already: nothing more, and nothing twice
            try:
                async with asyncio.timeout(self.timeout):
                    await self._join(channel, deliver, since)
            except REDIS_DOWN as exc:  # TimeoutError among them
                raise self._unavailable("subscribe", exc) from exc
            finally:
                if not self._subscribers.get(channel):  # it failed, and nobody else is here
                    self._subscribers.pop(channel, None)
                    self._positions.pop(channel, None)

    async def close(self) -> None:
        # On Python 3.11, redis-py can swallow the reader's cancellation (its
        # commands use asyncio.wait_for): the reader also stops on this flag.
        self._closing = True
        self._positions.clear()
        self._wanted.set()
        await super().close()

    async def _join(self, channel: str, deliver: Deliver, since: str | None) -> None:
        listeners = self._subscribers.setdefault(channel, set())
        if channel not in self._positions:
            self._positions[channel] = await self._last_id(channel)
            self._wanted.set()
            if self._reader is None:
                name = f"StreamHub {redacted(self.url)}"
                self._reader = asyncio.create_task(self._read(), name=name)
        missed = [] if since is None else await self._catch_up(channel, deliver, since)
        # No await from here on: the reader cannot hand out anything in between.
        for message, id in missed:
            deliver(channel, message, id)
        listeners.add(deliver)

    async def _catch_up(
        self, channel: str, deliver: Deliver, since: str
    ) -> list[tuple[str, str | None]]:
        """Deliver what the stream has after ``since``; return what the reader handed out meanwhile.

        The replay ends at the stream's position when it starts, its boundary;
        what the reader hands out while it runs comes after that.
        """
        wanted = parse_id(since)
        if wanted > parse_id(await self._last_id(channel)):
            return []  # ahead of the stream (Redis restarted empty?): the new messages only
        # A client coming from another server may be ahead of this one's reader.
        while parse_id(self._positions[channel]) < wanted:
            await self._moved.wait()
        missed: list[tuple[str, str | None]] = []

        def keep(channel: str, message: str, id: str | None) -> None:
            missed.append((message, id))

        listeners = self._subscribers[channel]
        listeners.add(keep)  # a stand-in, while the replay runs
        try:
            await self._replay(channel, deliver, since, boundary=self._positions[channel])
        finally:
            listeners.discard(keep)
        return missed

    async def _last_id(self, channel: str) -> str:
        """The id of the newest entry in ``channel``'s stream; ``0-0`` if it has none."""
        newest = cast(list[Entry], await self._redis.xrevrange(PREFIX + channel, count=1))
        return newest[0][0] if newest else "0-0"

    async def _replay(self, channel: str, deliver: Deliver, since: str, boundary: str) -> None:
        """Deliver the entries after ``since`` and up to ``boundary`` that the stream still has."""
        start = _after(parse_id(since))
        while start <= parse_id(boundary):
            first = f"{start[0]}-{start[1]}"
            if self._link is not None:
                self._link.message("client", f"XRANGE {channel} {first} {boundary}")
            entries = cast(
                list[Entry],
                await self._redis.xrange(PREFIX + channel, min=first, max=boundary, count=BATCH),
            )
            for id, fields in entries:
                self._hand(channel, id, fields, deliver)
            if len(entries) < BATCH:
                break
            start = _after(parse_id(entries[-1][0]))

    async def _last_subscriber_left(self, channel: str) -> None:
        self._positions.pop(channel, None)

    async def _read(self) -> None:
        while not self._closing:
            if not self._positions:
                self._wanted.clear()
                await self._wanted.wait()
                continue
            streams: dict[KeyT, StreamIdT] = {
                PREFIX + channel: id for channel, id in self._positions.items()
            }
            try:
                reply = await self._redis.xread(
                    streams, count=BATCH, block=max(1, round(self.poll * 1000))
                )
            except REDIS_DOWN as exc:
                await self._reconnect(exc)
                continue
            for key, entries in cast(list[tuple[str, list[Entry]]], reply):  # [[key, entries]]
                self._hand_out(key.removeprefix(PREFIX), entries)
            moved, self._moved = self._moved, asyncio.Event()
            moved.set()

    def _hand_out(self, channel: str, entries: list[Entry]) -> None:
        """Deliver what the reader read, moving the stream's position past each entry."""
        for id, fields in entries:
            position = self._positions.get(channel)
            # Not if the channel lost its subscribers while Redis answered, nor
            # what a new first subscriber's position is already past.
            if position is None or parse_id(id) <= parse_id(position):
                continue
            self._positions[channel] = id
            self._hand(channel, id, fields, self._deliver)

    def _hand(self, channel: str, id: str, fields: dict[str, str], deliver: Deliver) -> None:
        message = fields.get("message")
        if message is None:
            return  # not an entry of ours
        if self._link is not None:
            self._link.message("server", f"{channel} {id}: {message}")
        deliver(channel, message, id)

    async def _subscribe_again(self) -> None:
        # Once Redis answers, the reader goes on from its positions.
        await self._redis.ping()


def parse_id(id: str) -> tuple[int, int]:
    """A stream id as numbers that compare as Redis orders them: ``"5-2"`` → ``(5, 2)``."""
    milliseconds, _, sequence = id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _after(id: tuple[int, int]) -> tuple[int, int]:
    """The smallest id after ``id``."""
    milliseconds, sequence = id
    if sequence < _LARGEST:
        return milliseconds, sequence + 1
    return milliseconds + 1, 0
