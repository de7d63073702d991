"""Tests for wspatterns.experiments."""

import asyncio

import pytest
from websockets.exceptions import ConnectionClosedOK

from wspatterns import connect, serve, serve_in_thread
from wspatterns.experiments import (
    come_and_go,
    ideal_rate,
    longest_pause,
    still_running,
    wait_for_handlers,
    workers_experiment,
)
from wspatterns.patterns import workers

from .utils import MS, echo

# Lesson 03b, multiple consumers: workers_experiment.


async def test_workers_experiment_times_one_batch_per_count_of_workers():
    rates = await workers_experiment(workers, (1, 4), messages=8, consume_time=10 * MS)
    assert list(rates.columns) == ["workers", "seconds", "messages/s", "ideal messages/s"]
    assert list(rates["workers"]) == [1, 4]
    assert list(rates["ideal messages/s"]) == [ideal_rate(1, 10 * MS), ideal_rate(4, 10 * MS)]
    assert (rates["messages/s"] * rates["seconds"]).round(6).tolist() == [8, 8]
    # Each worker sleeps through its messages one after another: the ideal is a ceiling.
    assert (rates["messages/s"] <= rates["ideal messages/s"]).all()


async def test_workers_experiment_says_how_many_messages_a_broken_handler_consumed():
    def forgetful(consume, count):
        async def handler(websocket):
            async for message in websocket:
                if message == "0":  # consumes the first message, drops the rest
                    await consume(message)

        return handler

    with pytest.raises(TimeoutError, match="only 1 of 4 messages were consumed"):
        await workers_experiment(forgetful, (2,), messages=4, consume_time=MS, timeout=200 * MS)


async def test_workers_experiment_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="at least 1 message"):
        await workers_experiment(workers, messages=0)


# Lesson 03, consumer and producer: come_and_go and still_running.


def _newsroom(wait_for_first: bool):
    """A consumer-and-producer handler whose producer waits for news that never comes."""
    never = asyncio.Event()

    async def consumer_half(websocket):
        async for _ in websocket:
            pass

    async def producer_half(websocket):
        await never.wait()

    async def handler(websocket):
        if not wait_for_first:
            await asyncio.gather(consumer_half(websocket), producer_half(websocket))
            return
        halves = [asyncio.create_task(half(websocket)) for half in (consumer_half, producer_half)]
        _, pending = await asyncio.wait(halves, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    return handler, consumer_half, producer_half


async def test_come_and_go_opens_and_closes_one_connection_per_client():
    opened = []

    async def handler(websocket):
        opened.append(websocket)
        await websocket.wait_closed()

    server = await serve(handler)
    await come_and_go(server, 3)
    assert len(opened) == 3
    assert server.connections == set()
    assert [end.received for end in server.flow.totals] == [0] * 6


async def test_still_running_counts_the_producers_gather_leaves_behind():
    handler, consumer_half, producer_half = _newsroom(wait_for_first=False)
    server = await serve(handler)
    await come_and_go(server, 3)
    assert await still_running(producer_half, settle=100 * MS) == 3
    assert await still_running(consumer_half, settle=100 * MS) == 0
    await server.stop(timeout=50 * MS)  # cancels the three handlers, and says so
    assert "3 handler(s)" in server.errors[-1].summary
    assert await still_running(producer_half, settle=100 * MS) == 0


async def test_still_running_finds_nothing_once_the_other_half_is_cancelled():
    handler, consumer_half, producer_half = _newsroom(wait_for_first=True)
    server = await serve(handler)
    await come_and_go(server, 3)
    # settle is generous: the count is taken as soon as it reaches zero.
    assert await still_running(producer_half, settle=2000 * MS) == 0
    assert await still_running(consumer_half) == 0
    await server.stop(timeout=50 * MS)
    assert server.errors == []


# Lesson 02, producer: wait_for_handlers and longest_pause.


async def test_wait_for_handlers_returns_once_a_producer_trips_on_the_closed_connection():
    news = asyncio.Queue()

    async def producer(websocket):
        while True:
            await websocket.send(await news.get())

    server = await serve(producer)
    news.put_nowait("one")
    async with connect(server) as websocket:
        assert await websocket.recv() == "one"
    assert server.errors == []  # the client left, but the handler is waiting for news
    news.put_nowait("two")
    await wait_for_handlers(server)
    assert [type(report.exception) for report in server.errors] == [ConnectionClosedOK]


async def test_wait_for_handlers_says_how_many_handlers_still_run():
    release = asyncio.Event()

    async def stuck(websocket):
        await release.wait()

    server = await serve(stuck)
    await wait_for_handlers(server)  # none yet: returns at once
    async with connect(server), connect(server):
        with pytest.raises(TimeoutError, match=r"2 handler\(s\) of server 'stuck'"):
            await wait_for_handlers(server, timeout=50 * MS)
        release.set()
        await wait_for_handlers(server)
    assert server.errors == []


async def test_wait_for_handlers_refuses_a_server_on_another_loop():
    server = await asyncio.to_thread(serve_in_thread, echo)
    with pytest.raises(ValueError, match="serve_in_thread"):
        await wait_for_handlers(server)


async def test_longest_pause_counts_what_came_before_the_longest_silence():
    go_on = asyncio.Event()

    async def two_bursts(websocket):
        for size in (1, 2, 3):
            await websocket.send(b"x" * size)
        await go_on.wait()
        for size in (4, 5):
            await websocket.send(b"x" * size)

    server = await serve(two_bursts)
    async with connect(server) as websocket:
        for _ in range(3):
            await websocket.recv()
        await asyncio.sleep(100 * MS)  # the silence, far longer than sending a message
        go_on.set()
        for _ in range(2):
            await websocket.recv()
    sent = longest_pause(server.flow, "server", "sent")
    assert (sent.before, sent.bytes_before, sent.after) == (3, 6, 2)
    assert sent.seconds > 0
    received = longest_pause(server.flow, "client", "received")
    assert (received.before, received.bytes_before, received.after) == (3, 6, 2)


async def test_longest_pause_needs_two_messages_and_plain_words():
    server = await serve(echo)
    async with connect(server) as websocket:
        await websocket.send("only one")
        await websocket.recv()
    with pytest.raises(ValueError, match="the server sent 1 message"):
        longest_pause(server.flow, "server", "sent")
    with pytest.raises(ValueError, match='way "sent" or "received"'):
        longest_pause(server.flow, "server", "out")
