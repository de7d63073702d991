"""Six ways to send one message to many clients.

A strategy keeps the clients a server has and sends them a message::

    room = STRATEGIES["queue"]()
    server = await serve(room.handler)
    await room.broadcast("hello, everyone")

The six are the ones upstream websockets compares in ``experiments/broadcast``:
its own ``broadcast()``, awaiting ``send()`` to each client in turn, a task per
client, ``asyncio.wait`` over those tasks, a queue and a relay task per client,
and a chain of futures each client's relay follows. They differ in what one
client that stops reading does to the others.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data

from ..errors import InvalidArgumentError
from ..patterns import registration


async def send_quietly(websocket: ServerConnection, message: Data) -> None:
    """Send ``message`` to one client; if that client has left, there is nobody to tell."""
    try:
        await websocket.send(message)
    except ConnectionClosed:
        pass


class Strategy:
    """A way to broadcast: serve ``handler``, then ``await broadcast(message)`` sends to everyone.

    ``clients`` holds the open connections. Subclasses say how a message reaches them.
    """

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self._register = registration(self.clients)

    async def handler(self, websocket: ServerConnection) -> None:
        """Keep ``websocket`` in ``clients`` until it closes."""
        await self._register(websocket)

    async def broadcast(self, message: Data) -> None:
        """Send ``message`` to every client in ``clients``, each strategy its own way."""
        raise NotImplementedError


class BuiltIn(Strategy):
    """websockets' ``broadcast()``: writes to every open client at once and never waits.

    A client that stops reading is not waited for; what it does not read piles up in its
    write buffer for as long as it does not read (once that buffer is full, websockets 17's
    keepalive ping waits behind it and never times out).
    """

    async def broadcast(self, message: Data) -> None:
        broadcast(self.clients, message)


class InTurn(Strategy):
    """``await send()`` to each client in turn: a client that stops reading holds up the rest."""

    async def broadcast(self, message: Data) -> None:
        for websocket in list(self.clients):  # a copy: clients may leave while we await
            await send_quietly(websocket, message)


class TaskPerClient(Strategy):
    """A ``send()`` task per client, and return at once: tasks pile up behind a slow client."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: set[asyncio.Task[None]] = set()

    async def broadcast(self, message: Data) -> None:
        for websocket in self.clients:
            task = asyncio.create_task(send_quietly(websocket, message))
            self.tasks.add(task)  # asyncio itself keeps only a weak reference to a task
            task.add_done_callback(self.tasks.discard)


class WaitForAll(Strategy):
    """A ``send()`` task per client, then wait for all of them: as slow as the slowest client."""

    async def broadcast(self, message: Data) -> None:
        if self.clients:  # asyncio.wait() refuses an empty set
            sends = [asyncio.create_task(send_quietly(ws, message)) for ws in self.clients]
            await asyncio.wait(sends)


class QueuePerClient(Strategy):
    """A queue per client, emptied by that client's relay task: a slow client's queue grows."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[ServerConnection, asyncio.Queue[Data]] = {}

    async def handler(self, websocket: ServerConnection) -> None:
        queue = self.queues[websocket] = asyncio.Queue()
        relay = asyncio.create_task(self.relay(websocket, queue))
        try:
            await super().handler(websocket)
        finally:
            del self.queues[websocket]
            relay.cancel()

    async def relay(self, websocket: ServerConnection, queue: asyncio.Queue[Data]) -> None:
        """Send ``websocket`` what arrives in its ``queue``, in order, until cancelled."""
        while True:
            await send_quietly(websocket, await queue.get())

    async def broadcast(self, message: Data) -> None:
        for queue in self.queues.values():
            queue.put_nowait(message)


#: A link of FutureChain's chain: it resolves to a message and the link after it.
Link: TypeAlias = "asyncio.Future[tuple[Data, Link]]"


class FutureChain(Strategy):
    """Publish into a chain of futures that each client's relay task follows at its own pace.

    Each future holds a message and the next future; a slow client's relay keeps the
    chain from where it is, so everything published since stays in memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self._next: Link | None = None

    @property
    def next(self) -> Link:
        """The future the next message will be published into."""
        if self._next is None:  # made here, on the running loop, not in __init__
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    async def handler(self, websocket: ServerConnection) -> None:
        relay = asyncio.create_task(self.relay(websocket, self.next))
        try:
            await super().handler(websocket)
        finally:
            relay.cancel()

    async def relay(self, websocket: ServerConnection, future: Link) -> None:
        """Send ``websocket`` each message of the chain from ``future`` on, until cancelled."""
        while True:
            # shield(): cancelling this relay must not cancel the future the others wait on.
            message, future = await asyncio.shield(future)
            await send_quietly(websocket, message)

    async def broadcast(self, message: Data) -> None:
        published, self._next = self.next, asyncio.get_running_loop().create_future()
        published.set_result((message, self._next))


#: The strategies by the names upstream's experiment gives them.
STRATEGIES: dict[str, type[Strategy]] = {
    "default": BuiltIn,
    "naive": InTurn,
    "task": TaskPerClient,
    "wait": WaitForAll,
    "queue": QueuePerClient,
    "pubsub": FutureChain,
}


def check_strategy(strategy: str) -> None:
    """Raise ValueError, naming the strategies there are, unless ``strategy`` is one of them."""
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(
            f"unknown broadcast strategy {strategy!r}; the strategies are: {', '.join(STRATEGIES)}."
        )
