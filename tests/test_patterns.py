import asyncio

import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.asyncio.server import serve as raw_serve
from websockets.exceptions import ConnectionClosedError

from wspatterns import connect, serve
from wspatterns.patterns import (
    PATTERNS,
    consumer,
    consumer_and_producer,
    echo,
    multiple_consumers,
    producer,
    registration,
)
from wspatterns.runtime.handlers import check_handler
from wspatterns.waiting import wait_for_handler, wait_for_handlers

from .utils import BOUND, eventually


async def test_echo_is_a_plain_websockets_handler():
    async with raw_serve(echo, "127.0.0.1", 0) as server:  # no kit involved
        port = server.sockets[0].getsockname()[1]
        async with raw_connect(f"ws://127.0.0.1:{port}/", proxy=None) as websocket:
            for message in ["text", b"\x00binary", ""]:
                await websocket.send(message)
                assert await websocket.recv() == message


def test_every_pattern_is_a_handler_websockets_can_call():
    for handler in PATTERNS.values():
        check_handler(handler)


async def test_consumer_hands_each_message_over_and_ends_with_the_client():
    received = []

    async def consume(message):
        received.append(message)

    server = await serve(consumer(consume))
    async with connect(server) as websocket:
        for message in ["one", "two", b"three"]:
            await websocket.send(message)
    await wait_for_handlers(server, BOUND)  # the client left: the handler ends
    assert received == ["one", "two", b"three"]
    assert server.connections == set() and server.errors == []


async def test_producer_sends_what_it_produces_and_stops_quietly_when_the_client_leaves():
    queue = asyncio.Queue()
    for number in range(3):
        queue.put_nowait(f"news {number}")

    server = await serve(producer(queue.get))
    async with connect(server) as websocket:
        assert [await websocket.recv() for _ in range(3)] == ["news 0", "news 1", "news 2"]
    queue.put_nowait("nobody is listening")  # the producer's send() finds the client gone
    await wait_for_handlers(server, BOUND)  # so the handler returns...
    assert server.errors == []  # ...without an error


async def test_consumer_and_producer_leave_no_task_behind():
    received, queue = [], asyncio.Queue()

    async def consume(message):
        received.append(message)

    server = await serve(consumer_and_producer(consume, queue.get))
    before = asyncio.all_tasks()
    async with connect(server) as websocket:
        await websocket.send("ping")
        queue.put_nowait("pong")
        assert await websocket.recv() == "pong"
        assert len(asyncio.all_tasks() - before) >= 3  # handler, consumer, producer...
    await wait_for_handlers(server, BOUND)
    assert received == ["ping"]
    await eventually(lambda: asyncio.all_tasks() <= before, "every task of the connection to end")


async def test_consumer_and_producer_let_an_error_in_consume_reach_the_server():
    async def consume(message):
        raise ValueError(f"cannot take {message!r}")

    server = await serve(consumer_and_producer(consume, asyncio.Event().wait), quiet=True)
    async with connect(server) as websocket:
        await websocket.send("this")
        await websocket.wait_closed()
    assert websocket.close_code == 1011
    assert [type(report.exception) for report in server.errors] == [ValueError]


async def test_workers_run_side_by_side_and_finish_the_queue_when_the_client_leaves():
    busy, most, done = 0, 0, []
    release = asyncio.Event()

    async def consume(message):
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await release.wait()  # a slow consume, as slow as the test wants
        busy -= 1
        done.append(message)

    server = await serve(multiple_consumers(consume, count=3))
    before = asyncio.all_tasks()
    async with connect(server) as websocket:
        for number in range(9):
            await websocket.send(str(number))
    # The client is gone before the workers are done: three consume at once, and the
    # handler is still there to finish the queue.
    await eventually(lambda: busy == 3, "three workers consuming at once")
    assert done == [] and len(server.handler_tasks()) == 1
    release.set()
    await eventually(lambda: len(done) == 9, "the workers to finish the queue")
    assert sorted(done) == [str(number) for number in range(9)]
    assert most == 3
    await wait_for_handlers(server, BOUND)
    await eventually(lambda: asyncio.all_tasks() <= before, "the workers to end")
    assert server.errors == []


async def test_workers_finish_the_queue_when_the_connection_drops_then_the_handler_says_so():
    release, done = asyncio.Event(), []

    async def consume(message):
        await release.wait()
        done.append(message)

    server = await serve(multiple_consumers(consume, count=2, maxsize=8), quiet=True)
    websocket = await connect(server)
    for number in range(6):
        await websocket.send(str(number))
    await asyncio.wait_for(await websocket.ping(), BOUND)  # the server has read all six
    websocket.transport.abort()  # the network fails: no closing handshake
    await eventually(lambda: not server.connections, "the server to see the connection drop")
    assert done == [] and server.errors == []  # two messages in hand, four queued
    release.set()
    await wait_for_handler(server, websocket, BOUND)
    assert sorted(done) == [str(number) for number in range(6)]
    [report] = server.errors  # then async for's ConnectionClosedError, in the TaskGroup's group
    assert [type(error) for error in report.exception.exceptions] == [ConnectionClosedError]


async def test_a_worker_that_fails_with_messages_queued_ends_the_handler_at_once():
    fail, queued = asyncio.Event(), 0

    async def consume(message):
        await fail.wait()
        raise ValueError(message)

    async def counted(websocket):
        nonlocal queued
        async for message in websocket:
            yield message
            queued += 1  # the handler asks for the next message: it has queued this one

    handler = multiple_consumers(consume, count=1, maxsize=8)

    async def watched(websocket):
        await handler(counted(websocket))

    server = await serve(watched, quiet=True)
    async with connect(server) as websocket:
        for message in ["boom", "one", "two", "three"]:
            await websocket.send(message)
        await eventually(lambda: queued == 4, "the handler to queue four messages")
        fail.set()  # the only worker fails; three messages wait that nobody will take
        await wait_for_handler(server, websocket, BOUND)  # join() did not wait for them
    [report] = server.errors
    assert [type(error) for error in report.exception.exceptions] == [ValueError]


def test_workers_need_at_least_one():
    async def consume(message):
        pass

    with pytest.raises(ValueError, match="at least 1 worker"):
        multiple_consumers(consume, count=0)


async def test_registration_keeps_open_connections_and_forgets_them_however_they_end():
    connected = set()
    server = await serve(registration(connected))
    first = await connect(server)
    second = await connect(server)
    await eventually(lambda: len(connected) == 2, "both clients registered")
    second.transport.abort()  # no closing handshake
    await first.close()
    await eventually(lambda: not connected, "both clients forgotten")
