"""Tests for wspatterns.broadcasting: the six strategies in this process, the two processes."""

import asyncio
import contextlib
import json
import signal
import sys
import time
from asyncio.subprocess import PIPE

import psutil
import pytest
from redis import asyncio as redis_asyncio
from websockets.asyncio.client import connect as plain_connect

from wspatterns import connect, serve
from wspatterns.broadcasting import (
    CHANNEL,
    STRATEGIES,
    BuiltIn,
    ClientsProcess,
    LatencyLog,
    ProcessFailed,
    PublisherProcess,
    QueuePerClient,
    RelayProcess,
    ServerProcess,
    TaskPerClient,
    check_method,
    latency_ns,
    open_slow_client,
    percentile,
    send_quietly,
    stamped_message,
)
from wspatterns.experiments import still_running
from wspatterns.redis_server import start_redis

from .utils import MS

BROADCASTING = [sys.executable, "-m", "wspatterns.broadcasting"]


async def until(condition, what: str) -> None:
    """Wait until ``condition()`` is true, a bounded while."""
    try:
        async with asyncio.timeout(5_000 * MS):
            while not condition():
                await asyncio.sleep(5 * MS)
    except TimeoutError:
        raise AssertionError(f"waited too long for {what}") from None


def server_side(room, client):
    """The connection in ``room`` that is the other end of ``client``."""
    (connection,) = [ws for ws in room.clients if ws.remote_address[1] == client.local_address[1]]
    return connection


async def room_with_clients(method: str, count: int):
    room = STRATEGIES[method]()
    server = await serve(room.handler, name=f"room-{method}")
    clients = [await connect(server) for _ in range(count)]
    await until(lambda: len(room.clients) == count, "every client registered")
    return room, server, clients


# The strategies


@pytest.mark.parametrize("method", list(STRATEGIES))
async def test_every_strategy_reaches_every_open_client(method):
    room, server, clients = await room_with_clients(method, 3)
    await room.broadcast("first")
    await room.broadcast(b"second")
    for client in clients:
        assert [await client.recv(), await client.recv()] == ["first", b"second"]
    assert server.errors == []


@pytest.mark.parametrize("method", list(STRATEGIES))
async def test_every_strategy_goes_on_when_a_client_has_left(method):
    room, server, clients = await room_with_clients(method, 3)
    leaving, *staying = clients
    await leaving.close()
    await until(lambda: len(room.clients) == 2, "the departed client unregistered")
    await room.broadcast("after the departure")
    for client in staying:
        assert await client.recv() == "after the departure"
    assert server.errors == []
    if method in ("queue", "pubsub"):  # the departed client's relay task is gone too
        assert await still_running(STRATEGIES[method].relay) == 2


@pytest.mark.parametrize("method", ["default", "naive", "task", "wait"])
async def test_a_connection_that_closed_but_is_still_registered_is_skipped(method):
    room, server, clients = await room_with_clients(method, 3)
    stale = server_side(room, clients[0])
    await clients[0].close()
    await stale.wait_closed()
    await until(lambda: len(room.clients) == 2, "the closed client unregistered")
    room.clients.add(stale)  # as if the broadcast came before the handler noticed
    await room.broadcast("to the living")
    for client in clients:
        if client.state.name == "OPEN":
            assert await client.recv() == "to the living"
    assert server.errors == []


async def test_sending_to_a_client_that_left_is_not_an_error():
    room, _, clients = await room_with_clients("naive", 1)
    websocket = server_side(room, clients[0])
    await clients[0].close()
    await websocket.wait_closed()
    await send_quietly(websocket, "nobody is listening")


async def test_future_chain_relays_start_from_the_next_message():
    room, server, (early,) = await room_with_clients("pubsub", 1)
    await room.broadcast("before")
    late = await connect(server)
    await until(lambda: len(room.clients) == 2, "the late client registered")
    await room.broadcast("after")
    assert [await early.recv(), await early.recv()] == ["before", "after"]
    assert await late.recv() == "after"


# What a client that never reads does: ~8 MB, more than the kernel's buffers take on Linux.

SLOW_MESSAGES, SLOW_SIZE = 128, 64 * 1024


@contextlib.asynccontextmanager
async def slow_and_fast(room):
    """A reading client and a never-reading one in ``room``, after many big broadcasts."""
    server = await serve(room.handler, name="slow-room")
    slow = await open_slow_client(server.url, 5_000 * MS)
    fast = await plain_connect(server.url, proxy=None)
    try:
        await until(lambda: len(room.clients) == 2, "both clients registered")
        for _ in range(SLOW_MESSAGES):
            await room.broadcast(stamped_message(SLOW_SIZE))  # random: compression can't shrink it
        for _ in range(SLOW_MESSAGES):
            await asyncio.wait_for(fast.recv(), 5_000 * MS)
        yield server_side(room, slow), server_side(room, fast)
    finally:
        for client in (slow, fast):
            client.transport.abort()


async def test_built_in_broadcast_does_not_wait_for_a_client_that_never_reads():
    async with slow_and_fast(BuiltIn()) as (stuck, _):
        assert stuck.transport.get_write_buffer_size() > stuck.write_limit_high  # no backpressure


async def test_a_task_per_client_leaves_tasks_waiting_for_a_client_that_never_reads():
    room = TaskPerClient()
    async with slow_and_fast(room) as (stuck, _):
        assert room.tasks  # each holds its message until the slow client reads, which is never
        assert stuck.transport.get_write_buffer_size() > stuck.write_limit_high  # written, too


async def test_a_queue_per_client_grows_for_a_client_that_never_reads():
    room = QueuePerClient()
    async with slow_and_fast(room) as (stuck, reader):
        assert room.queues[reader].qsize() == 0
        assert room.queues[stuck].qsize() > 0


# Messages and figures


def test_a_stamped_message_has_the_size_asked_and_says_when_it_was_made():
    message = stamped_message(64)
    assert len(message) == 64
    assert 0 <= latency_ns(message, int(message[:19]) + 5) == 5
    assert len(stamped_message(0)) == 19  # never shorter than its stamp


def test_percentiles_by_nearest_rank():
    values = list(range(1, 101))
    assert [percentile(values, share) for share in (0.5, 0.95, 0.99, 1.0)] == [50, 95, 99, 100]
    assert percentile([7], 0.99) == 7


def test_a_log_counts_only_while_open():
    log = LatencyLog(2)
    log.record(0, stamped_message(20))
    log.start()
    log.record(1, stamped_message(20))
    summary = log.summary()
    assert summary["messages"] == 1 and summary["fewest"] == 0
    assert summary["p50_ms"] is not None


def test_unknown_methods_are_refused_by_name():
    with pytest.raises(ValueError, match="'fastest'; the methods are: default, naive, task"):
        check_method("fastest")


# The processes, as a terminal would run them


async def test_server_and_clients_processes_report_json_and_leave_nothing_behind():
    server = await asyncio.create_subprocess_exec(
        *BROADCASTING, "server", "--method", "queue", "--rate", "50",
        stdin=PIPE, stdout=PIPE, stderr=PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        url = (await asyncio.wait_for(server.stdout.readline(), 10_000 * MS)).decode().strip()
        assert url.startswith("ws://127.0.0.1:")
        clients = await asyncio.create_subprocess_exec(
            *BROADCASTING, "clients", url, "--count", "3", "--seconds", "0.3", "--warmup", "0.1",
            stdin=PIPE, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(clients.communicate(), 10_000 * MS)
        ready, summary = (json.loads(line) for line in stdout.decode().splitlines())
        assert clients.returncode == 0, stderr.decode()
        assert ready["connected"] == 3 and ready["failed"] == 0
        assert summary["messages"] > 0 and summary["closed"] == 0
        assert summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
        server.send_signal(signal.SIGTERM)  # reports, then stops
        stdout, stderr = await asyncio.wait_for(server.communicate(), 10_000 * MS)
        report = json.loads(stdout)
        assert server.returncode == 0 and stderr == b""
        assert report["broadcasts"] > 0 and 0 <= report["cpu"]
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert psutil.Process().children(recursive=True) == []


async def test_clients_process_says_when_nobody_listens():
    clients = await asyncio.create_subprocess_exec(
        *BROADCASTING, "clients", "ws://127.0.0.1:9/", "--count", "2", "--seconds", "0.1",
        stdout=PIPE, stderr=PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(clients.communicate(), 10_000 * MS)
    assert clients.returncode == 1
    assert json.loads(stdout)["connected"] == 0
    assert "no client could connect" in stderr.decode()


async def test_a_server_process_that_fails_to_start_says_why_and_is_gone():
    with pytest.raises(ProcessFailed) as failure:
        async with ServerProcess("default", rate=0):
            pass
    assert str(failure.value).startswith("the server process exited with code 2 before its URL")
    assert "its last words: " in str(failure.value)
    assert "--rate more than 0" in str(failure.value)
    assert psutil.Process().children(recursive=True) == []


# Fan-out through Redis: publisher and relay processes


@pytest.fixture
def redis_server():
    server = start_redis()
    yield server
    server.stop()


def children_but(redis_server) -> list[psutil.Process]:
    """This process's children, except the redis-server the test started."""
    own = redis_server.process.pid if redis_server.process is not None else None
    return [child for child in psutil.Process().children(recursive=True) if child.pid != own]


async def test_a_relay_process_sends_what_is_published_to_its_clients_and_times_the_hop(
    redis_server,
):
    redis = redis_asyncio.from_url(redis_server.url)
    async with RelayProcess(redis_server.url) as relay:
        client = await plain_connect(relay.url, proxy=None)
        relay.start()
        async with asyncio.timeout(5_000 * MS):
            while True:  # until the relay has registered the client
                message = stamped_message(64, text=True)
                await redis.publish(CHANNEL, message)
                with contextlib.suppress(TimeoutError):
                    assert await asyncio.wait_for(client.recv(), 100 * MS) == message
                    break
        report = await relay.stop()
        await client.close()
    await redis.aclose()
    assert report["clients"] == 1 and report["messages"] >= 1
    assert 0 <= report["hop_p50_ms"] <= report["hop_p99_ms"]
    assert children_but(redis_server) == []


async def test_a_publisher_process_publishes_stamped_text_messages(redis_server):
    redis = redis_asyncio.from_url(redis_server.url)
    async with redis.pubsub() as listener:
        await listener.subscribe(CHANNEL)
        async with PublisherProcess(redis_server.url, rate=50) as publisher:
            assert publisher.url == redis_server.url
            publisher.start()
            async with asyncio.timeout(5_000 * MS):
                while (event := await listener.get_message(timeout=None))["type"] != "message":
                    pass
            report = await publisher.stop()
    await redis.aclose()
    assert len(event["data"]) == 64 and event["data"].decode().isascii()
    assert 0 <= latency_ns(event["data"], time.time_ns()) < 10**10  # stamped when sent
    assert report["broadcasts"] >= 1 and report["clients"] == 0
    assert children_but(redis_server) == []


async def test_a_publisher_reaches_the_clients_of_two_relays_through_redis(redis_server):
    async with contextlib.AsyncExitStack() as stack:
        relays = [await stack.enter_async_context(RelayProcess(redis_server.url)) for _ in "12"]
        publisher = await stack.enter_async_context(PublisherProcess(redis_server.url, rate=50))
        clients = await stack.enter_async_context(ClientsProcess([r.url for r in relays], 4))
        assert clients.ready["connected"] == 4
        for each in (*relays, publisher):
            each.start()
        await asyncio.sleep(200 * MS)  # every client registered, and some messages
        clients.start()
        await asyncio.sleep(300 * MS)
        summary = await clients.stop()
        reports = [await relay.stop() for relay in relays]
        await publisher.stop()
    assert summary["fewest"] >= 1  # every client, of either relay, got messages
    assert [report["clients"] for report in reports] == [2, 2]
    assert children_but(redis_server) == []


async def test_a_relay_process_is_gone_when_killed_or_cancelled(redis_server):
    async with RelayProcess(redis_server.url) as relay:
        relay.kill()
        assert "exited with code -9" in await relay.gone()
    entered = asyncio.Event()

    async def relay_forever():
        async with RelayProcess(redis_server.url):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(relay_forever())
    await asyncio.wait_for(entered.wait(), 10_000 * MS)
    assert len(children_but(redis_server)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert children_but(redis_server) == []


async def test_a_relay_process_that_cannot_reach_redis_says_why_and_is_gone(redis_server):
    with pytest.raises(ProcessFailed) as failure:
        async with RelayProcess("redis://127.0.0.1:9/0"):
            pass
    assert str(failure.value).startswith("the relay process exited with code 1 before its URL")
    assert "Redis at redis://127.0.0.1:9/0 is unreachable" in str(failure.value)
    assert children_but(redis_server) == []
