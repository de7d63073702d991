"""Publish–subscribe: a hub that passes messages on channels, and a handler that speaks JSON to it.

A :class:`Hub` has one interface and two backends. :class:`MemoryHub` lives in
one process; :class:`RedisHub` passes messages through Redis pub/sub, so
servers in many processes share its channels. The handler cannot tell them
apart::

    hub = MemoryHub()                     # or RedisHub(start_redis().url)
    server = await serve(hub_handler(hub), max_size=MAX_MESSAGE_SIZE)

The protocol: a client sends text frames holding one JSON object each.

* ``{"action": "subscribe", "channel": "news"}`` is answered ``{"subscribed": "news"}``;
* ``{"action": "unsubscribe", "channel": "news"}`` is answered ``{"unsubscribed": "news"}``;
* ``{"action": "publish", "channel": "news", "message": "hello"}`` is not answered:
  every subscriber of ``news``, the sender too if it is one, gets
  ``{"channel": "news", "message": "hello"}``.

A hub that keeps history (:attr:`Hub.history`, a Redis Streams hub) also
numbers what it delivers, ``{"channel": "news", "message": "hello", "id": "1700000000000-0"}``,
and accepts ``"since": ID`` in a subscribe: the messages published after that
id are delivered first, then the new ones, none twice.

The answer to a subscribe comes before any message of that channel, the
replayed ones included. Once ``{"subscribed": ...}`` arrives, the
subscription is in place: whatever is published after it, from any client of
any server on the hub, is delivered. Subscribing or unsubscribing twice is
harmless. A channel name is 1 to 64 characters of ASCII letters, digits and
``-_.:``; a message is a string.

What goes wrong, and what the server does; everybody else is served as before:

* malformed JSON, something other than an object, an unknown action, a
  missing or invalid channel, a message that is not a string: the server
  answers ``{"error": "what was wrong and how to fix it"}`` and keeps serving;
* ``max_errors`` such mistakes on one connection: closed with 1008 (policy violation);
* a binary frame: closed with 1003 (unsupported data);
* a message larger than the server's ``max_size``: websockets itself closes
  with 1009 (message too big); pass ``max_size=`` to ``serve`` (websockets'
  default is 1 MiB, :data:`MAX_MESSAGE_SIZE` suits this protocol);
* a publish or subscribe while the hub cannot reach Redis: ``{"error": ...}``
  saying so (it is not counted as the client's mistake); the hub reconnects
  by itself and subscribes again to every channel it had;
* a client that does not read what it is sent, until ``outbox_size``
  messages wait for it: unsubscribed from everything at once, then closed
  with 1008, so it cannot hold up the hub or fill the server's memory.

When a client leaves, however it leaves, its subscriptions are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import redis.asyncio
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from . import errors
from .flow import Flow
from .runtime import TIMEOUT

Handler = Callable[[ServerConnection], Awaitable[None]]

#: Called with ``(channel, message, id)`` for each message on a subscribed channel;
#: ``id`` is None unless the hub keeps history. It runs inside ``publish()`` or the
#: hub's reader, so it must neither block nor raise: put the message on a queue.
Deliver = Callable[[str, str, str | None], None]

#: A ``max_size`` for servers of :func:`hub_handler`: 64 KiB per message.
MAX_MESSAGE_SIZE = 64 * 1024

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# A Redis stream entry id, like 1700000000000-0.
MESSAGE_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
ACTIONS = ("subscribe", "unsubscribe", "publish")


# The hub and its backends


class HubUnavailable(ConnectionError):
    """The hub cannot reach what carries its messages (Redis); the text says which."""


class Hub(ABC):
    """Channels, and who in this process listens to each.

    ``await hub.subscribe(channel, deliver)`` makes ``deliver(channel, message)``
    run for every message published on ``channel`` from then on, until
    ``await hub.unsubscribe(channel, deliver)``. ``await hub.publish(channel,
    message)`` sends. ``await hub.close()`` (or leaving ``async with hub:``) ends it.
    """

    #: Whether ``subscribe(..., since=id)`` can deliver what was published before.
    history = False

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Deliver]] = {}
        # One change at a time, so that a subscribe() that returns is in place
        # even while another one to the same channel is still being set up.
        self._changing = asyncio.Lock()

    @abstractmethod
    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every subscriber of ``channel``."""

    async def subscribe(self, channel: str, deliver: Deliver, since: str | None = None) -> None:
        """From now on, call ``deliver(channel, message, id)`` for each message on ``channel``.

        ``since`` (an id a hub with :attr:`history` delivered) asks for the messages
        published after it first; a hub without history raises ValueError.
        """
        if since is not None and not self.history:
            raise ValueError(f"{type(self).__name__} keeps no history: subscribe without since")
        async with self._changing:
            if channel not in self._subscribers:
                await self._first_subscriber(channel)
                self._subscribers[channel] = set()
            self._subscribers[channel].add(deliver)

    async def unsubscribe(self, channel: str, deliver: Deliver) -> None:
        """Stop calling ``deliver`` for ``channel``; does nothing if it was not subscribed."""
        async with self._changing:
            listeners = self._subscribers.get(channel)
            if listeners is None or deliver not in listeners:
                return
            listeners.remove(deliver)
            if not listeners:
                del self._subscribers[channel]
                await self._last_subscriber_left(channel)

    def subscribers(self, channel: str) -> int:
        """How many subscribers ``channel`` has in this process."""
        return len(self._subscribers.get(channel, ()))

    @property
    def channels(self) -> set[str]:
        """The channels that have a subscriber in this process."""
        return set(self._subscribers)

    async def close(self) -> None:
        """Forget every subscriber and release what the hub holds."""
        self._subscribers.clear()

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        count = sum(len(listeners) for listeners in self._subscribers.values())
        return f"<{type(self).__name__} {len(self._subscribers)} channels, {count} subscribers>"

    # For the backends

    def _deliver(self, channel: str, message: str, id: str | None = None) -> None:
        """Hand a message that arrived on ``channel`` to its subscribers in this process."""
        for deliver in list(self._subscribers.get(channel, ())):
            deliver(channel, message, id)

    async def _first_subscriber(self, channel: str) -> None:
        """``channel`` is about to get its first subscriber in this process."""
        return None  # nothing to set up in one process

    async def _last_subscriber_left(self, channel: str) -> None:
        """``channel`` has just lost its last subscriber in this process."""
        return None


class MemoryHub(Hub):
    """A hub inside one process: ``publish`` hands the message to each subscriber at once."""

    async def publish(self, channel: str, message: str) -> None:
        self._deliver(channel, message)


#: What redis-py raises when Redis cannot be reached.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisHub(Hub):
    """A hub on Redis pub/sub: servers in many processes, on one Redis, share its channels.

    ``url`` is a Redis URL, such as ``start_redis().url``. This process
    subscribes in Redis to the channels that have a subscriber here, on one
    connection, read by one task. ``subscribe`` raises TimeoutError if Redis
    does not confirm within ``timeout`` seconds.

    If Redis goes away, ``publish`` and ``subscribe`` raise :class:`HubUnavailable`,
    and the hub says so (under the next cell in a notebook, on stderr elsewhere):
    it tries again every ``retry`` seconds, and once Redis answers it subscribes
    again to every channel it had and says that too. ``connected`` tells which;
    ``problems`` keeps what it said. What was published meanwhile is lost:
    pub/sub keeps nothing.

    With ``flow=``, the hub records its traffic with Redis into that flow, as a
    connection between ``name`` and ``"redis"``: each publish it sends, each
    message Redis delivers, and the link going down and coming back.
    """

    #: What the report of a reconnection says about messages published during the outage.
    _after_outage = "What was published while it was away did not reach its clients."

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT,
        retry: float = 0.5,
        name: str = "hub",
        flow: Flow | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.timeout = timeout
        self.retry = retry
        self.name = name
        self.connected = True  # as far as this hub knows
        self.problems: list[str] = []
        self._redis = redis.asyncio.from_url(url, decode_responses=True)
        self._pubsub = self._redis.pubsub()
        self._reader: asyncio.Task[None] | None = None
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._link = None
        if flow is not None:
            self._link = flow.end(flow.new_connection(), "redis", name, "client")
            self._link.add("open", detail=url)

    async def publish(self, channel: str, message: str) -> None:
        if self._link is not None:
            self._link.message("client", f"PUBLISH {channel} {message}")
        try:
            await self._redis.publish(channel, message)
        except REDIS_DOWN as exc:
            raise self._unavailable("publish") from exc

    async def close(self) -> None:
        await super().close()
        if self._reader is not None:
            self._reader.cancel()
            # Bounded: redis-py may hold on to a cancellation for its socket timeout.
            await asyncio.wait({self._reader}, timeout=self.timeout)
        with contextlib.suppress(*REDIS_DOWN):
            await self._pubsub.aclose()
        with contextlib.suppress(*REDIS_DOWN):
            await self._redis.aclose()

    def __repr__(self) -> str:
        state = "" if self.connected else ", Redis unreachable"
        return super().__repr__()[:-1] + state + ">"

    async def _first_subscriber(self, channel: str) -> None:
        # Redis confirms SUBSCRIBE on the subscribing connection, which only
        # the reader reads; waiting for that confirmation is what makes a
        # publish() that follows, from any connection, reach this process.
        confirmed = self._confirmed[channel] = asyncio.get_running_loop().create_future()
        try:
            try:
                await self._pubsub.subscribe(channel)
            except REDIS_DOWN as exc:
                raise self._unavailable("subscribe") from exc
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name=f"RedisHub {self.url}")
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(confirmed)
        finally:
            self._confirmed.pop(channel, None)

    async def _last_subscriber_left(self, channel: str) -> None:
        # With Redis away there is nothing to tell it; the channel's messages,
        # if Redis sends any after coming back, find no subscriber here.
        with contextlib.suppress(*REDIS_DOWN):
            await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        while True:
            try:
                event = await self._pubsub.get_message(timeout=None)
            except REDIS_DOWN as exc:
                await self._reconnect(exc)
                continue
            self._handle(event)

    def _handle(self, event: dict[str, Any] | None) -> None:
        if event is None:
            return
        if event["type"] == "message":
            if self._link is not None:
                self._link.message("server", f"{event['channel']}: {event['data']}")
            self._deliver(event["channel"], event["data"])
        elif event["type"] == "subscribe":
            confirmed = self._confirmed.get(event["channel"])
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _reconnect(self, exc: BaseException) -> None:
        """Redis went away: say so, try again every ``retry`` s, say when it is back."""
        self.connected = False
        lost = time.monotonic()
        if self._link is not None:
            self._link.add("end", None, detail="Redis unreachable")
        self._say(
            f"hub {self.name!r} lost its connection to Redis at {self.url}. Publishing and "
            f"subscribing fail until it is back; trying again every {self.retry:g} s."
        )
        while True:
            await asyncio.sleep(self.retry)
            try:
                await self._subscribe_again()
            except REDIS_DOWN:
                continue
            break
        self.connected = True
        if self._link is not None:
            self._link.add("open", detail=self.url)
        self._say(
            f"hub {self.name!r} reconnected to Redis at {self.url} after "
            f"{time.monotonic() - lost:.1f} s and subscribed again to "
            f"{len(self._subscribers)} channel(s). {self._after_outage}"
        )

    async def _subscribe_again(self) -> None:
        """Reconnect, and return once Redis confirmed every channel that has a subscriber here."""
        await self._pubsub.connect()  # redis-py sends SUBSCRIBE again for every channel it had
        forgotten = set(self._pubsub.channels) - set(self._subscribers)
        if forgotten:  # their last subscriber left while Redis was away
            await self._pubsub.unsubscribe(*forgotten)
        waiting = set(self._subscribers)
        async with asyncio.timeout(self.timeout):
            while waiting:
                event = await self._pubsub.get_message(timeout=self.timeout)
                self._handle(event)
                if event is not None and event["type"] == "subscribe":
                    waiting.discard(event["channel"])

    def _unavailable(self, what: str) -> HubUnavailable:
        # Why exactly (refused, reset, closed) depends on when the question was asked;
        # the chained exception keeps it for whoever wants it.
        return HubUnavailable(
            f"could not {what}: Redis at {self.url} is unreachable; try again once it is back"
        )

    def _say(self, text: str) -> None:
        self.problems.append(text)
        errors.show(errors.ErrorReport(self.name, None, None, text))


# The handler


class BadRequest(ValueError):
    """A client's message the server cannot act on; its text goes back to the client."""


class Request(NamedTuple):
    """One client request: ``message`` only for publish, ``since`` only for subscribe."""

    action: str
    channel: str
    message: str | None = None
    since: str | None = None


def parse_request(text: str) -> Request:
    """The request in one text frame; raises BadRequest saying what is wrong."""
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON ({exc}); send an object like {_EXAMPLE}") from None
    if not isinstance(request, dict):
        raise BadRequest(f"expected a JSON object like {_EXAMPLE}, got {type(request).__name__}")
    action = request.get("action")
    if action not in ACTIONS:
        raise BadRequest(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    channel = request.get("channel")
    if channel is None:
        raise BadRequest(f"{action} needs a channel, like {_EXAMPLE}")
    if not isinstance(channel, str) or not CHANNEL_NAME.fullmatch(channel):
        raise BadRequest(
            f"invalid channel {channel!r}: 1 to 64 letters, digits and -_.: (like 'news')"
        )
    if action == "subscribe":
        since = request.get("since")
        if since is not None and not (isinstance(since, str) and MESSAGE_ID.fullmatch(since)):
            raise BadRequest(
                f'invalid "since" {since!r}: the "id" of a message you received, '
                'like "1700000000000-0"'
            )
        return Request(action, channel, since=since)
    if action == "unsubscribe":
        return Request(action, channel)
    message = request.get("message")
    if not isinstance(message, str):
        raise BadRequest(f'publish needs a "message" that is a string, got {message!r}')
    if not _is_unicode(message):  # JSON can spell half of a surrogate pair: "\\ud800"
        raise BadRequest("the message is not valid Unicode (a lone surrogate?)")
    return Request(action, channel, message)


_EXAMPLE = '{"action": "subscribe", "channel": "news"}'


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def hub_handler(hub: Hub, *, max_errors: int = 10, outbox_size: int = 1000) -> Handler:
    """A handler that lets its clients subscribe and publish on ``hub`` (protocol: module docs).

    A connection is closed with 1008 after ``max_errors`` bad messages, or when
    ``outbox_size`` messages are waiting for it to read them.
    """

    async def pubsub_handler(websocket: ServerConnection) -> None:
        outbox: asyncio.Queue[str] = asyncio.Queue()
        subscribed: set[str] = set()
        dropping: asyncio.Task[None] | None = None
        held: list[str] | None = None  # while a subscribe is under way: what arrives meanwhile

        def deliver(channel: str, message: str, id: str | None) -> None:
            delivery = {"channel": channel, "message": message}
            if id is not None:
                delivery["id"] = id
            if held is not None:
                held.append(json.dumps(delivery))
            else:
                queue(json.dumps(delivery))

        def queue(text: str) -> None:
            nonlocal dropping
            if outbox.qsize() < outbox_size:
                outbox.put_nowait(text)
            elif dropping is None:
                dropping = asyncio.create_task(drop_slow_client())

        async def drop_slow_client() -> None:
            await leave()  # first, so that nothing more piles up for it
            reason = f"too slow: {outbox_size} messages were waiting"
            await websocket.close(CloseCode.POLICY_VIOLATION, reason)

        async def leave() -> None:
            while subscribed:
                await hub.unsubscribe(subscribed.pop(), deliver)

        async def send_outbox() -> None:
            while True:
                await websocket.send(await outbox.get())

        async def answer(reply: dict[str, Any]) -> None:
            await websocket.send(json.dumps(reply))

        async def act(request: Request) -> None:
            nonlocal held
            channel = request.channel
            if request.action == "subscribe":
                subscribed.add(channel)  # before awaiting: leave() must know of it
                # The answer goes first, then what arrived meanwhile (a replay among it).
                held = meanwhile = []
                try:
                    try:
                        await hub.subscribe(channel, deliver, request.since)
                    except BaseException:
                        subscribed.discard(channel)
                        raise
                    await answer({"subscribed": channel})
                finally:
                    held = None
                    for text in meanwhile:
                        queue(text)
            elif request.action == "unsubscribe":
                subscribed.discard(channel)
                await hub.unsubscribe(channel, deliver)
                await answer({"unsubscribed": channel})
            else:
                await hub.publish(channel, request.message)

        sending = asyncio.create_task(send_outbox())
        errors = 0
        try:
            async for frame in websocket:
                if isinstance(frame, bytes):
                    reason = "send text frames holding JSON objects"
                    await websocket.close(CloseCode.UNSUPPORTED_DATA, reason)
                    return
                try:
                    request = parse_request(frame)
                    if request.since is not None and not hub.history:
                        raise BadRequest(
                            f'this server keeps no history ({type(hub).__name__}): '
                            'subscribe without "since"'
                        )
                except BadRequest as exc:
                    errors += 1
                    await answer({"error": str(exc)})
                    if errors >= max_errors:
                        reason = f"{errors} bad messages; see the errors sent before"
                        await websocket.close(CloseCode.POLICY_VIOLATION, reason)
                        return
                    continue
                try:
                    await act(request)
                except HubUnavailable as exc:  # not the client's mistake: not counted
                    await answer({"error": str(exc)})
        except ConnectionClosed:
            pass  # the client left, or websockets closed it (1009 for a message too big)
        finally:
            await leave()
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            if dropping is not None:
                with contextlib.suppress(Exception):
                    await dropping

    return pubsub_handler
