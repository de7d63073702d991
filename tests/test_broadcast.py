"""Tests for wspatterns.broadcast: the six strategies in this process, the two processes;
and the Redis roles of benchmarks/redis_fanout.py, run as that benchmark runs them."""

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from websockets.asyncio.client import connect as plain_connect

from wspatterns import connect, serve
from wspatterns.broadcast import (
    STRATEGIES,
    BuiltIn,
    LatencyLog,
    QueuePerClient,
    ServerProcess,
    TaskPerClient,
    check_strategy,
    latency_ns,
    percentile,
    send_quietly,
    stamped_message,
)
from wspatterns.broadcast.clients_process import open_slow_client
from wspatterns.errors import ProcessFailed
from wspatterns.experiments import still_running
from wspatterns.pubsub import URL_VARIABLE, redacted, start_redis_blocking
from wspatterns.waiting import wait_for_handlers

from .utils import BOUND, MS, eventually

SERVER_PROCESS = [sys.executable, "-m", "wspatterns.broadcast.server_process"]
CLIENTS_PROCESS = [sys.executable, "-m", "wspatterns.broadcast.clients_process"]
ROLES_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "redis_roles.py"
REDIS_ROLES = [sys.executable, str(ROLES_SCRIPT)]


async def received(client):
    """The next message ``client`` receives, within a bound (a kit client's recv() has none)."""
    async with asyncio.timeout(BOUND):
        return await client.recv()


async def measure_until(start, stop, ready, what: str):
    """Measure in windows, ``start()``, a pause, ``await stop()``, until ``ready(report)``;
    that report. The pause is a stimulus, time for messages to flow: on a busy machine a
    window may catch none, and then another one follows, within a bound."""
    try:
        async with asyncio.timeout(10_000 * MS):
            while True:
                start()
                await asyncio.sleep(100 * MS)  # the window: its length decides no result
                if ready(report := await stop()):
                    return report
    except TimeoutError:
        raise AssertionError(f"waited too long for {what}") from None


def commands(process):
    """``start`` and ``stop`` for :func:`measure_until`, given to a child process on stdin."""

    async def stop():
        process.stdin.write(b"stop\n")
        return json.loads(await first_line(process))

    return (lambda: process.stdin.write(b"start\n")), stop


def server_side(room, client):
    """The connection in ``room`` that is the other end of ``client``."""
    (connection,) = [ws for ws in room.clients if ws.remote_address[1] == client.local_address[1]]
    return connection


async def room_with_clients(strategy: str, count: int):
    room = STRATEGIES[strategy]()
    server = await serve(room.handler, name=f"room-{strategy}")
    clients = [await connect(server) for _ in range(count)]
    await eventually(lambda: len(room.clients) == count, "every client registered")
    return room, server, clients


# The strategies


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_every_strategy_reaches_every_open_client(strategy):
    room, server, clients = await room_with_clients(strategy, 3)
    await room.broadcast("first")
    await room.broadcast(b"second")
    for client in clients:
        assert [await received(client), await received(client)] == ["first", b"second"]
    assert server.errors == []


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_every_strategy_goes_on_when_a_client_has_left(strategy):
    room, server, clients = await room_with_clients(strategy, 3)
    leaving, *staying = clients
    await leaving.close()
    await eventually(lambda: len(room.clients) == 2, "the departed client unregistered")
    await room.broadcast("after the departure")
    for client in staying:
        assert await received(client) == "after the departure"
    assert server.errors == []
    if strategy in ("queue", "pubsub"):  # the departed client's relay task is gone too
        assert await still_running(STRATEGIES[strategy].relay) == 2


@pytest.mark.parametrize("strategy", ["default", "naive", "task", "wait"])
async def test_a_connection_that_closed_but_is_still_registered_is_skipped(strategy):
    room, server, (leaving, *living) = await room_with_clients(strategy, 3)
    stale = server_side(room, leaving)
    await leaving.close()
    await stale.wait_closed()
    await eventually(lambda: len(room.clients) == 2, "the closed client unregistered")
    room.clients.add(stale)  # as if the broadcast came before the handler noticed
    await room.broadcast("to the living")
    for client in living:
        assert await received(client) == "to the living"
    ends = [end for end in server.flow.totals if end.who[2] == leaving.name]
    assert sorted((end.who[3], end.sent) for end in ends) == [("client", 0), ("server", 0)]
    assert server.errors == []


async def test_sending_to_a_client_that_left_is_not_an_error():
    left = asyncio.Event()

    async def late(websocket):
        await left.wait()
        await send_quietly(websocket, "nobody is listening")  # inside a handler, as a room does

    server = await serve(late)
    async with connect(server):
        pass
    left.set()
    await wait_for_handlers(server, BOUND)
    assert server.errors == []  # plain send() would have raised ConnectionClosedOK here
    assert [end.sent for end in server.flow.totals] == [0, 0]  # and nothing went out


async def test_future_chain_relays_start_from_the_next_message():
    room, server, (early,) = await room_with_clients("pubsub", 1)
    await room.broadcast("before")
    late = await connect(server)
    await eventually(lambda: len(room.clients) == 2, "the late client registered")
    await room.broadcast("after")
    assert [await received(early), await received(early)] == ["before", "after"]
    assert await received(late) == "after"


# What a client that never reads does: ~8 MB, more than the kernel's buffers take on Linux.

SLOW_MESSAGES, SLOW_SIZE = 128, 64 * 1024


@contextlib.asynccontextmanager
async def slow_and_fast(room):
    """A reading client and a never-reading one in ``room``, after many big broadcasts."""
    server = await serve(room.handler, name="slow-room")
    slow = await open_slow_client(server.url, 5_000 * MS)
    fast = await plain_connect(server.url, proxy=None)
    try:
        await eventually(lambda: len(room.clients) == 2, "both clients registered")
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
    with pytest.raises(ValueError, match="'fastest'; the strategies are: default, naive, task"):
        check_strategy("fastest")


# The processes, as a terminal would run them


async def test_server_and_clients_processes_report_json_and_leave_nothing_behind():
    server = await asyncio.create_subprocess_exec(
        *SERVER_PROCESS, "--strategy", "queue", "--rate", "50",
        stdin=PIPE, stdout=PIPE, stderr=PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        url = await first_line(server)
        assert url.startswith("ws://127.0.0.1:")
        # With --seconds, the clients measure that long on their own, report and exit.
        clients = await asyncio.create_subprocess_exec(
            *CLIENTS_PROCESS, url, "--count", "3", "--seconds", "0.3", "--warmup", "0.1",
            stdin=PIPE, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(clients.communicate(), 10_000 * MS)
        ready, summary = (json.loads(line) for line in stdout.decode().splitlines())
        assert clients.returncode == 0, stderr.decode()
        assert ready["connected"] == 3 and ready["failed"] == 0
        assert summary["seconds"] >= 0.3 and summary["closed"] == 0
        # Without, between start and stop on stdin: here until every client had messages.
        clients = await asyncio.create_subprocess_exec(
            *CLIENTS_PROCESS, url, "--count", "3", stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        assert json.loads(await first_line(clients))["connected"] == 3
        summary = await measure_until(
            *commands(clients), lambda summary: summary["fewest"] >= 1, "every client's messages"
        )
        assert summary["messages"] >= 3 and summary["closed"] == 0
        assert summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
        clients.stdin.close()  # quit
        assert await asyncio.wait_for(clients.wait(), 10_000 * MS) == 0
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
        *CLIENTS_PROCESS, "ws://127.0.0.1:9/", "--count", "2", "--seconds", "0.1",
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


# The benchmark's Redis roles: a publisher reaches the clients of two relays


@pytest.fixture
def redis_server():
    server = start_redis_blocking(name="test_broadcast")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_roles():
    """benchmarks/redis_roles.py, loaded by path as redis_fanout.py finds it beside itself."""
    spec = importlib.util.spec_from_file_location("redis_roles", ROLES_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def secret_of(redis_server) -> bytes:
    return urlsplit(redis_server.url).password.encode()


def command_line(pid: int) -> bytes:
    """What every user of the machine can read of a process: ``ps``, /proc/PID/cmdline."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def children_but(redis_server) -> list[psutil.Process]:
    """This process's children, except the redis-server the test started and its watchdog
    (its process group)."""
    own = os.getpgid(redis_server.process.pid) if redis_server.process is not None else None

    def other(child: psutil.Process) -> bool:
        try:
            return os.getpgid(child.pid) != own
        except ProcessLookupError:  # gone meanwhile: left nothing
            return False

    return [child for child in psutil.Process().children(recursive=True) if other(child)]


async def first_line(process) -> str:
    return (await asyncio.wait_for(process.stdout.readline(), 10_000 * MS)).decode().strip()


async def test_the_benchmarks_publisher_reaches_the_clients_of_two_relays_through_redis(
    redis_server,
):
    """As benchmarks/redis_fanout.py runs them (with benchmarks/redis_roles.py), but from a
    terminal: the clients are shared out over the relays, and the relays time the hop."""
    processes = []
    # As the README says to: the URL, secret and all, in the environment, not on the command line.
    environment = {**os.environ, URL_VARIABLE: redis_server.url}

    async def start(*command: str):
        process = await asyncio.create_subprocess_exec(
            *command, stdin=PIPE, stdout=PIPE, stderr=PIPE, start_new_session=True,
            env=environment,
        )  # fmt: skip
        processes.append(process)
        return process

    try:
        relays = [await start(*REDIS_ROLES, "relay") for _ in "12"]
        publisher = await start(*REDIS_ROLES, "publisher", "--rate", "50")
        urls = [await first_line(relay) for relay in relays]
        assert all(url.startswith("ws://127.0.0.1:") for url in urls)
        # Once Redis answered it; what it printed has no secret.
        assert await first_line(publisher) == redacted(redis_server.url)
        for process in (*relays, publisher):
            assert secret_of(redis_server) not in command_line(process.pid)
        clients = await start(*CLIENTS_PROCESS, *urls, "--count", "4")
        assert json.loads(await first_line(clients))["connected"] == 4
        # Each measures in windows until it has something to say: every client, of either
        # relay, gets messages; each relay holds two clients and relays messages; the
        # publisher publishes (to no client of its own).
        summary = await measure_until(
            *commands(clients), lambda summary: summary["fewest"] >= 1, "every client's messages"
        )
        relayed = [
            await measure_until(
                *commands(relay),
                lambda report: report["clients"] == 2 and report["messages"] >= 1,
                "two clients and messages on each relay",
            )
            for relay in relays
        ]
        published = await measure_until(
            *commands(publisher), lambda report: report["broadcasts"] >= 1, "a publish"
        )
        for process in processes:
            process.stdin.close()  # quit
            assert await asyncio.wait_for(process.wait(), 10_000 * MS) == 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert summary["closed"] == 0
    assert all(0 <= report["hop_p50_ms"] <= report["hop_p99_ms"] for report in relayed)
    assert published["clients"] == 0
    assert children_but(redis_server) == []


async def test_the_benchmarks_role_processes_get_the_redis_url_through_their_environment(
    redis_server, redis_roles
):
    """PublisherProcess and RelayProcess, as redis_fanout.py drives them: they run
    benchmarks/redis_roles.py by path, and the secret never reaches a command line."""
    async with contextlib.AsyncExitStack() as stack:
        relay = await stack.enter_async_context(redis_roles.RelayProcess(redis_server.url))
        publisher = await stack.enter_async_context(
            redis_roles.PublisherProcess(redis_server.url, rate=50)
        )
        assert relay.url.startswith("ws://127.0.0.1:")
        assert publisher.url == redacted(redis_server.url)  # what it printed: no secret
        for each in (relay, publisher):
            arguments = command_line(each.process.pid).split(b"\0")
            assert arguments[1] == str(ROLES_SCRIPT).encode()  # by path, not python -m
            assert secret_of(redis_server) not in command_line(each.process.pid)
            environ = Path(f"/proc/{each.process.pid}/environ")
            assert f"{URL_VARIABLE}={redis_server.url}".encode() in environ.read_bytes()
        client = await plain_connect(relay.url, proxy=None)
        publisher.start()
        message = await asyncio.wait_for(client.recv(), BOUND)
        assert len(message) == 64 and 0 <= latency_ns(message, time.time_ns()) < 10**10
        report = await measure_until(
            relay.start, relay.stop, lambda report: report["messages"] >= 1, "a relayed message"
        )
        published = await publisher.stop()
        await client.close()
        for each in (relay, publisher):
            each.send("quit")
            assert await asyncio.wait_for(each.process.wait(), 10_000 * MS) == 0
            assert await each.gone()  # exited, and what it wrote on stderr is read...
            assert list(each.stderr_tail) == []  # ...which is nothing: no warning, no traceback
    assert report["clients"] == 1
    assert 0 <= report["hop_p50_ms"] <= report["hop_p99_ms"]
    assert published["broadcasts"] >= 1 and published["clients"] == 0
    assert children_but(redis_server) == []


async def test_a_benchmark_role_without_a_redis_url_says_where_to_put_it():
    environment = {name: value for name, value in os.environ.items() if name != URL_VARIABLE}
    for role in ("publisher", "relay"):
        process = await asyncio.create_subprocess_exec(
            *REDIS_ROLES, role, stdout=PIPE, stderr=PIPE, env=environment
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 10_000 * MS)
        assert process.returncode == 2 and stdout == b""
        assert f"{role} needs a Redis URL: set {URL_VARIABLE}" in stderr.decode()
