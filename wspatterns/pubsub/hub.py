"""The hub: channels, and who in this process listens to each.

A :class:`Hub` has one interface and several backends. :class:`MemoryHub`
lives in one process; :class:`~wspatterns.pubsub.RedisHub` passes messages
through Redis, so servers in many processes share its channels.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeAlias

from ..errors import InvalidArgumentError

#: Called with ``(channel, message, id)`` for each message on a subscribed channel;
#: ``id`` is None unless the hub keeps history. It runs inside ``publish()`` or the
#: hub's reader, so it must neither block nor raise: put the message on a queue.
Deliver: TypeAlias = Callable[[str, str, str | None], None]


#: The kinds of hub a worker process can serve (see :func:`~wspatterns.pubsub.start_workers`).
HUBS = ("memory", "redis", "streams")


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
            raise InvalidArgumentError(
                f"{type(self).__name__} keeps no history: subscribe without since"
            )
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
