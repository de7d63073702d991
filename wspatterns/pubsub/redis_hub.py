"""A hub whose channels are Redis pub/sub channels, so servers in many processes share them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio

from .. import reports
from ..errors import HubUnavailable, KitTimeoutError
from ..flow import Flow
from ..settings import DEFAULT, timeout_seconds
from .hub import Hub
from .redis_server import redacted

#: What redis-py raises when Redis is away: the hub waits and reconnects.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisHub(Hub):
    """A hub on Redis pub/sub: servers in many processes, on one Redis, share its channels.

    ``url`` is a Redis URL, such as ``broker.url`` (``broker = await start_redis()``),
    which carries the password of the kit's Redis; the hub shows it masked. This process
    subscribes in Redis to the channels that have a subscriber here, on one
    connection, read by one task. ``subscribe`` raises TimeoutError if Redis
    does not confirm within ``timeout`` seconds (``TIMEOUT`` when left out; None: never),
    which bounds the hub's other waits on Redis too.

    If Redis refuses the password (a URL without the kit's secret, say), ``publish`` and
    ``subscribe`` raise :class:`HubUnavailable` saying so and which URL to use instead.
    If Redis goes away, they raise :class:`HubUnavailable` too,
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
        timeout: float | None = DEFAULT,
        retry: float = 0.5,
        name: str = "hub",
        flow: Flow | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.timeout = timeout_seconds(timeout)
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
            self._link.add("open", detail=redacted(url))

    async def publish(self, channel: str, message: str) -> None:
        if self._link is not None:
            self._link.message("client", f"PUBLISH {channel} {message}")
        try:
            await self._redis.publish(channel, message)
        except REDIS_DOWN as exc:
            raise self._unavailable("publish", exc) from exc

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
                raise self._unavailable("subscribe", exc) from exc
            if self._reader is None:
                name = f"RedisHub {redacted(self.url)}"
                self._reader = asyncio.create_task(self._read(), name=name)
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(confirmed)
        except TimeoutError:
            raise KitTimeoutError(
                f"Redis at {redacted(self.url)} did not confirm the subscription to "
                f"{channel!r} within {self.timeout:g} s."
            ) from None
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
        if self._link is not None:
            self._link.add("end", None, detail="Redis unreachable")
        self._say(
            f"hub {self.name!r} lost its connection to Redis at {redacted(self.url)}. "
            f"Publishing and subscribing fail until it is back; trying again every "
            f"{self.retry:g} s."
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
            self._link.add("open", detail=redacted(self.url))
        self._say(
            # Not how long it was away: that depends on the machine's load, and lessons
            # show this line in outputs that must read the same on every run.
            f"hub {self.name!r} reconnected to Redis at {redacted(self.url)} and subscribed "
            f"again to {len(self._subscribers)} channel(s). {self._after_outage}",
            news=True,
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

    def _unavailable(self, what: str, exc: BaseException) -> HubUnavailable:
        where = redacted(self.url)
        # redis-py raises AuthenticationError for NOAUTH (no password given) and WRONGPASS.
        if isinstance(exc, redis.AuthenticationError):
            return HubUnavailable(
                f"could not {what}: Redis at {where} refused the password: use broker.url "
                "(it carries the secret; broker = await start_redis())"
            )
        # Why exactly (refused, reset, closed) depends on when the question was asked;
        # the chained exception keeps it for whoever wants it.
        return HubUnavailable(
            f"could not {what}: Redis at {where} is unreachable; try again once it is back"
        )

    def _say(self, text: str, *, news: bool = False) -> None:
        self.problems.append(text)
        reports.show(reports.ErrorReport(self.name, None, None, text, news=news))
