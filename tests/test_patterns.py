import asyncio

import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.asyncio.server import serve as raw_serve

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

from .utils import MS


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
    await asyncio.sleep(20 * MS)
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
    await asyncio.sleep(20 * MS)
    assert server.errors == []
    assert not server._ws.handler_tasks  # the handler returned


async def test_consumer_and_producer_leave_no_task_behind():
    received, queue = [], asyncio.Queue()

    async def consume(message):
        received.append(message)

    server = await serve(consumer_and_producer(consume, queue.get))
    await asyncio.sleep(0)
    tasks = len(asyncio.all_tasks())
    async with connect(server) as websocket:
        await websocket.send("ping")
        queue.put_nowait("pong")
        assert await websocket.recv() == "pong"
        assert len(asyncio.all_tasks()) > tasks  # handler, consumer, producer...
    await asyncio.sleep(20 * MS)
    assert received == ["ping"]
    assert len(asyncio.all_tasks()) == tasks  # ...all gone once the client left


async def test_consumer_and_producer_let_an_error_in_consume_reach_the_server():
    async def consume(message):
        raise ValueError(f"cannot take {message!r}")

    server = await serve(consumer_and_producer(consume, asyncio.Event().wait))
    server._quiet = True
    async with connect(server) as websocket:
        await websocket.send("this")
        await websocket.wait_closed()
    assert websocket.close_code == 1011
    assert [type(report.exception) for report in server.errors] == [ValueError]


async def test_workers_run_side_by_side_and_finish_the_queue_when_the_client_leaves():
    busy, most, done = 0, 0, []

    async def consume(message):
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await asyncio.sleep(20 * MS)
        busy -= 1
        done.append(message)

    server = await serve(multiple_consumers(consume, count=3))
    await asyncio.sleep(0)
    tasks = len(asyncio.all_tasks())
    async with connect(server) as websocket:
        for number in range(9):
            await websocket.send(str(number))
    # The client is gone before the workers are done: they finish the queue.
    for _ in range(100):
        if len(done) == 9:
            break
        await asyncio.sleep(10 * MS)
    assert sorted(done) == [str(number) for number in range(9)]
    assert most == 3
    await asyncio.sleep(10 * MS)
    assert len(asyncio.all_tasks()) == tasks
    assert server.errors == []


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
    while len(connected) < 2:
        await asyncio.sleep(MS)
    second.transport.abort()  # no closing handshake
    await first.close()
    for _ in range(1000):
        if not connected:
            break
        await asyncio.sleep(MS)
    assert connected == set()
