"""Reference handlers for the patterns the lessons teach, written as a learner would write them.

Each pattern is a function that takes the business logic, ``consume(message)``
and/or ``produce()``, and returns a plain ``async def handler(websocket)``:
serve it with :func:`wspatterns.serve`, or with websockets directly. A
learner's own handler can stand wherever one of these does.

    server = await serve(consumer(print_message))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data

from .errors import InvalidArgumentError
from .settings import Handler

#: The business logic a consumer hands each message to.
Consume: TypeAlias = Callable[[Data], Awaitable[None]]
#: The business logic a producer asks for the next message.
Produce: TypeAlias = Callable[[], Awaitable[Data]]


async def echo(websocket: ServerConnection) -> None:
    """Send every message back to the client that sent it, until the client leaves."""
    async for message in websocket:
        await websocket.send(message)


def consumer(consume: Consume) -> Handler:
    """A handler that awaits ``consume(message)`` for each message, until the client leaves."""

    async def consumer_handler(websocket: ServerConnection) -> None:
        # The loop ends when the client closes the connection.
        async for message in websocket:
            await consume(message)

    return consumer_handler


def producer(produce: Produce) -> Handler:
    """A handler that sends whatever ``produce()`` returns, until the client leaves."""

    async def producer_handler(websocket: ServerConnection) -> None:
        while True:
            message = await produce()
            try:
                await websocket.send(message)
            except ConnectionClosed:  # the client left: nobody to produce for
                break

    return producer_handler


def consumer_and_producer(consume: Consume, produce: Produce) -> Handler:
    """A handler that consumes and produces at once, and stops both when either ends."""
    consumer_handler, producer_handler = consumer(consume), producer(produce)

    async def handler(websocket: ServerConnection) -> None:
        # A Handler returns an awaitable: create_task() takes coroutines only, ensure_future() both.
        consuming = asyncio.ensure_future(consumer_handler(websocket))
        producing = asyncio.ensure_future(producer_handler(websocket))
        # When one side finishes (usually: the client left), cancel the other,
        # which asyncio.gather would leave running.
        done, pending = await asyncio.wait(
            [consuming, producing], return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # an error in consume() or produce() reaches the server, not a log

    return handler


def multiple_consumers(consume: Consume, count: int = 4, maxsize: int | None = None) -> Handler:
    """A handler that queues messages for ``count`` workers running ``consume`` side by side.

    At most ``maxsize`` messages wait for a worker (``count`` unless told; 0: no bound), so
    when the workers fall behind the handler stops reading and the client's ``send()`` waits.
    When the client leaves, even if its connection drops, the workers finish what is queued,
    then stop; if a worker fails, or the handler is cancelled, they all stop at once.
    """
    if count < 1:
        raise InvalidArgumentError(f"count must be at least 1 worker; got {count}.")
    bound = count if maxsize is None else maxsize

    async def workers_handler(websocket: ServerConnection) -> None:
        queue: asyncio.Queue[Data] = asyncio.Queue(bound)

        async def worker() -> None:
            while True:
                message = await queue.get()
                try:
                    await consume(message)
                finally:
                    queue.task_done()

        async with asyncio.TaskGroup() as group:
            team = [group.create_task(worker()) for _ in range(count)]
            try:
                async for message in websocket:
                    await queue.put(message)
            finally:
                # However the loop ended (a close, or a drop that made it raise), finish what
                # the client sent; unless this task is being cancelled (a worker failed, the
                # server is shutting down): no worker would take what is queued, and join()
                # would wait for ever.
                this = asyncio.current_task()
                if this is not None and not this.cancelling():
                    await queue.join()
                for task in team:
                    task.cancel()

    return workers_handler


def registration(connected: set[ServerConnection]) -> Handler:
    """A handler that keeps each connection in ``connected`` while it is open, and nothing else.

    Whoever holds the set can then send to every client, e.g. with ``broadcast(connected, ...)``.
    """

    async def register(websocket: ServerConnection) -> None:
        connected.add(websocket)
        try:
            await websocket.wait_closed()
        finally:  # however the connection ends
            connected.remove(websocket)

    return register


# Business logic for running the patterns from a terminal.


async def show(message: Data) -> None:
    """Print a message as it arrives."""
    print(f"received {message!r}", flush=True)


async def show_slowly(message: Data) -> None:
    """Take a second over each message, then print it."""
    await asyncio.sleep(1)
    await show(message)


async def tick() -> str:
    """Wait a second, then tell the time."""
    await asyncio.sleep(1)
    return time.strftime("%H:%M:%S")


#: The handlers ``python -m wspatterns serve NAME`` can run, by name.
PATTERNS: dict[str, Handler] = {
    "echo": echo,
    "consumer": consumer(show),
    "producer": producer(tick),
    "consumer-producer": consumer_and_producer(show, tick),
    "multiple-consumers": multiple_consumers(show_slowly),
}
