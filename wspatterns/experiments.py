"""Experiments the lessons run to show where a pattern bends: one short call each.

Each experiment starts its own servers and clients with the kit, bounds every
wait, cleans up after itself, and returns numbers (or a DataFrame) for the
lesson to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterable
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NamedTuple

from .flow import Flow, Side
from .runtime import Server, connect, serve
from .settings import Handler
from .waiting import wait_until

if TYPE_CHECKING:
    import pandas

# Lesson 03b, multiple consumers: how fast a team of workers consumes a batch.


def ideal_rate(workers: int, consume_time: float) -> float:
    """Messages per second ``workers`` workers reach at best, when each message takes
    ``consume_time`` seconds to consume and they never wait for a message."""
    return workers / consume_time


#: The team sizes lesson 03b compares.
WORKER_COUNTS = (1, 2, 4, 8, 16)

#: What lesson 03b's handler factories look like: ``make_handler(consume, count)``.
MakeWorkersHandler = Callable[[Callable[[Any], Awaitable[None]], int], Handler]


async def workers_experiment(
    make_handler: MakeWorkersHandler,
    counts: Iterable[int] = WORKER_COUNTS,
    *,
    messages: int = 16,
    consume_time: float = 0.05,
    timeout: float | None = None,
) -> pandas.DataFrame:
    """Time how long ``make_handler(consume, count)`` takes to consume a batch, for each count.

    ``consume`` sleeps ``consume_time`` seconds, like business logic waiting on a database.
    Returns one row per count: seconds, messages/s, and the ideal rate. Raises TimeoutError,
    saying how many messages were consumed, if a batch takes longer than ``timeout`` seconds
    (by default twice what one worker needs, plus 2 s).
    """
    import pandas

    if messages < 1 or consume_time <= 0:
        raise ValueError(
            f"need at least 1 message and a positive consume_time; got {messages} "
            f"and {consume_time}."
        )
    limit = 2 * messages * consume_time + 2 if timeout is None else timeout
    rows = []
    for count in counts:
        seconds = await _time_one_batch(make_handler, count, messages, consume_time, limit)
        rows.append((count, seconds, messages / seconds, ideal_rate(count, consume_time)))
    return pandas.DataFrame(rows, columns=["workers", "seconds", "messages/s", "ideal messages/s"])


async def _time_one_batch(
    make_handler: MakeWorkersHandler, count: int, messages: int, consume_time: float, limit: float
) -> float:
    """Seconds from the first message sent to the last one consumed, the client staying on."""
    consumed, all_done = 0, asyncio.Event()

    async def consume(message: Any) -> None:
        nonlocal consumed
        await asyncio.sleep(consume_time)
        consumed += 1
        if consumed == messages:
            all_done.set()

    loop = asyncio.get_running_loop()
    async with serve(make_handler(consume, count), name="workers-experiment") as server:
        async with connect(server, name="batch") as websocket:
            start = loop.time()  # the clock asyncio.sleep() runs on
            for number in range(messages):
                await websocket.send(str(number))
            try:
                async with asyncio.timeout(limit):
                    await all_done.wait()
            except TimeoutError:
                raise TimeoutError(
                    f"with {count} worker(s), only {consumed} of {messages} messages were "
                    f"consumed within {limit:g} s: does every worker take messages from "
                    "the queue and await consume() on each?"
                ) from None
            return loop.time() - start


# Lesson 03, consumer and producer: clients that come and go, and the tasks they leave behind.


async def come_and_go(server: Server, clients: int) -> None:
    """Connect ``clients`` kit clients to ``server``, one after another; each opens and leaves.

    Each waits for its closing handshake, so when this returns every one of them has gone.
    """
    for _ in range(clients):
        async with connect(server):
            pass


async def still_running(function: Callable[..., Any], *, settle: float = 0.25) -> int:
    """How many tasks on the running event loop are running coroutine ``function`` (by name).

    Tasks about to end get up to ``settle`` seconds to do so, so what is counted is the tasks
    that stay: zero for a handler that stops both halves when its client leaves.
    """
    name = getattr(function, "__name__", None) or str(function)

    def count() -> int:
        return sum(
            getattr(task.get_coro(), "__name__", None) == name for task in asyncio.all_tasks()
        )

    with contextlib.suppress(TimeoutError):
        await wait_until(lambda: count() == 0, settle)
    return count()


# Lesson 02, producer: waiting for handlers to end, and finding where a producer stalled.


class Pause(NamedTuple):
    """The longest pause in the messages one end sent or received: what came before, how long."""

    before: int  # messages before the pause
    bytes_before: int  # their payload bytes
    seconds: float  # from the last message before the pause to the first one after it
    after: int  # messages after the pause


def longest_pause(flow: Flow, at: Side = "server", way: str = "sent") -> Pause:
    """Find the longest pause between two messages the ``at`` end recorded as ``way``.

    ``at`` is "server" or "client", ``way`` "sent" or "received"; messages of every
    connection in ``flow`` count. Raises ValueError if that end recorded fewer than two.
    """
    if at not in ("server", "client") or way not in ("sent", "received"):
        raise ValueError(
            f'at must be "server" or "client" and way "sent" or "received"; got {at!r}, {way!r}.'
        )
    sending = way == "sent"
    messages = [
        event
        for event in flow.events
        if event.kind == "message" and event.at == at and (event.sender == at) == sending
    ]
    if len(messages) < 2:
        raise ValueError(
            f"the {at} {way} {len(messages)} message(s) in this flow; a pause needs two."
        )
    gaps = [later.time - earlier.time for earlier, later in pairwise(messages)]
    longest = max(range(len(gaps)), key=gaps.__getitem__)
    before = messages[: longest + 1]
    return Pause(
        len(before),
        sum(event.size for event in before),
        gaps[longest] / 1e9,
        len(messages) - len(before),
    )


# Lesson 04, registration and broadcast: waiting for the server to notice, and a client that
# stops reading.


def limit_os_buffers(client: Any, server: Server, size: int = 64 * 1024) -> None:
    """Cap what the operating system buffers between ``server`` and kit ``client`` at ``size``.

    Sets the client's receive buffer and the server's send buffer for that one connection
    (Linux keeps twice ``size``; other systems round it), so that messages the client does
    not read pile up in the server's own buffer after about the same amount on any machine.
    Call it right after connecting. Raises ValueError if ``server`` has no connection from
    that client.
    """
    server.check_running()
    name = client.name
    ends = server.connections_of(name)
    if not ends:
        raise ValueError(f"server {server.name!r} has no connection from {name!r}.")
    for end in ends:
        end.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    client.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
