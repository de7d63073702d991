"""Worker processes: pub/sub servers in processes of their own, flows merged, none left over."""

import asyncio
import json
import signal
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from wspatterns.errors import ProcessFailed
from wspatterns.flow import CAP
from wspatterns.flow.events import HEAD
from wspatterns.pubsub.redis_server import URL_VARIABLE, start_redis
from wspatterns.pubsub.workers import Worker, start_workers

from .utils import BOUND, eventually, run_python


async def send(websocket, **request):
    await websocket.send(json.dumps(request))


async def receive(websocket):
    async with asyncio.timeout(BOUND):
        return json.loads(await websocket.recv())


async def subscribe(websocket, channel="news"):
    await send(websocket, action="subscribe", channel=channel)
    assert await receive(websocket) == {"subscribed": channel}


def pids(workers) -> list[int]:
    return [worker.process.pid for worker in workers.processes]


def gone(pid_list) -> bool:
    return not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in pid_list
    )


async def test_memory_hubs_in_two_processes_miss_each_others_clients():
    async with await start_workers(2, hub="memory") as workers:
        alice = await workers.connect("alice")
        bob = await workers.connect("bob")
        for client in (alice, bob):
            await subscribe(client)
        await send(alice, action="publish", channel="news", message="hello")
        assert await receive(alice) == {"channel": "news", "message": "hello"}
        await send(bob, action="publish", channel="news", message="only here")
        assert await receive(bob) == {"channel": "news", "message": "only here"}  # not hello
        flow = await workers.flow()
    hellos = [e for e in flow.events if e.sender == "server" and b'"message": "hello"' in e.head]
    assert {(e.server, e.client) for e in hellos} == {("worker-1", "alice")}


async def test_redis_hubs_reach_every_client_and_the_merged_flow_shows_the_way_through_redis():
    async with await start_workers(2, hub="redis") as workers:
        assert workers.names == ["worker-1", "worker-2"]
        alice = await workers.connect("alice")
        bob = await workers.connect("bob")
        for client in (alice, bob):
            await subscribe(client)
        await send(alice, action="publish", channel="news", message="hello")
        for client in (alice, bob):
            assert await receive(client) == {"channel": "news", "message": "hello"}
        flow = await workers.flow()
    hops = [(e.client, e.server, e.sender, e.head[:20]) for e in flow.events if e.kind == "message"]
    # One message, followed from process to process, each hop recorded where it happened.
    way = [
        ("alice", "worker-1", "client", b'{"action": "publish"'),
        ("worker-1", "redis", "client", b"PUBLISH news hello"),
        ("worker-2", "redis", "server", b"news: hello"),
        ("bob", "worker-2", "server", b'{"channel": "news", '),
    ]
    assert all(hop in hops for hop in way)
    assert [hops.index(hop) for hop in way] == sorted(hops.index(hop) for hop in way)
    # Both ends of alice's connection, recorded in two processes, are one connection again.
    alice_connections = {e.connection for e in flow.events if e.client == "alice"}
    assert len(alice_connections) == 1
    assert {e.server for e in flow.events if e.client == "alice"} == {"worker-1"}
    text = repr(flow.sequence())
    assert "worker-1 → redis" in text and "redis → worker-2" in text and "server" not in text


async def test_clients_are_spread_in_turn_or_placed_where_asked():
    async with await start_workers(2) as workers:
        clients = [await workers.connect(name) for name in ("a", "b", "c")]
        placed = await workers.connect("d", worker=1)
        for client in (*clients, placed):
            await subscribe(client)
        flow = await workers.flow()
        with pytest.raises(IndexError, match="2 workers"):
            workers.connect("e", worker=2)
    served = {e.client: e.server for e in flow.events if e.at == "server"}
    assert served == {"a": "worker-1", "b": "worker-2", "c": "worker-1", "d": "worker-2"}


async def test_clear_forgets_here_and_in_the_workers():
    async with await start_workers(2) as workers:
        alice = await workers.connect("alice")
        await subscribe(alice)
        await workers.clear()
        await send(alice, action="publish", channel="news", message="after")
        await receive(alice)
        flow = await workers.flow()
    assert [e.head for e in flow.events if e.kind == "message"][-1].startswith(b'{"channel"')
    assert not any(b"subscribe" in e.head for e in flow.events)


async def test_workers_say_when_redis_is_gone_and_serve_again_when_it_is_back():
    own = await start_redis(name="killed")
    secret = urlsplit(own.url).password
    try:
        async with await start_workers(2, hub="redis", redis=own) as workers:
            alice = await workers.connect("alice")
            bob = await workers.connect("bob")
            for client in (alice, bob):
                await subscribe(client)
            own.kill()
            await eventually(lambda: len(workers.reports) >= 2)
            lost = sorted(str(report) for report in workers.reports)
            assert "[worker-1] hub 'worker-1' lost its connection to Redis" in lost[0]
            assert "[worker-2] hub 'worker-2' lost its connection to Redis" in lost[1]
            await send(alice, action="publish", channel="news", message="lost")
            error = (await receive(alice))["error"]
            assert "Redis at redis://:***@127.0.0.1:" in error and secret not in error
            await own.restart()
            await eventually(lambda: len(workers.reports) >= 4)
            assert sum("reconnected" in str(report) for report in workers.reports) == 2
            back = [report for report in workers.reports if "reconnected" in str(report)]
            assert all(report.news for report in back)  # news, not an error: not drawn red
            assert not any(secret in str(report) for report in workers.reports)
            await send(alice, action="publish", channel="news", message="back")
            for client in (alice, bob):
                assert await receive(client) == {"channel": "news", "message": "back"}
            flow = await workers.flow()
        drops = [e for e in flow.events if e.server == "redis" and e.kind in ("end", "open")]
        assert [e.kind for e in drops if e.client == "worker-1"] == ["open", "end", "open"]
        assert not any(secret in e.detail for e in flow.events)
    finally:
        own.stop()


# Big flows

#: Publishes that fill a worker's flow past its cap.
BIG = CAP + 10


def numbered(number: int) -> str:
    """A publish with its number first (in the head a flow keeps); é and " weigh on JSON."""
    request = {"message": f'{number:06} é"', "action": "publish", "channel": "news"}
    return json.dumps(request, ensure_ascii=False)


async def test_a_flow_at_the_cap_comes_back_whole_every_time_and_the_workers_go_on():
    async with await start_workers(1) as workers:
        alice = await workers.connect("alice")
        for number in range(BIG):  # nobody subscribed: one event each, here and there
            await alice.send(numbered(number))
        await subscribe(alice)  # answered once the worker has taken every publish
        # The worker's flow: its open, BIG publishes, the subscribe and its answer. Past the
        # cap the oldest go, its open first: the first publish kept is number `first`.
        dropped = 1 + BIG + 2 - CAP
        first = dropped - 1
        for _ in range(2):  # whole, and whole again: the first read leaves nothing behind
            flow = await workers.flow()
            served = [event for event in flow.events if event.at == "server"]
            assert len(served) == CAP
            heads = [event.head for event in served if event.sender == "client"]
            assert heads[:-1] == [numbered(n).encode()[:HEAD] for n in range(first, BIG)]
        # A read given up on does not leave its answer to the next.
        with pytest.raises(ProcessFailed, match="gave no answer to 'flow' within"):
            await workers.flow(timeout=0.001)
        await workers.clear()
        await send(alice, action="publish", channel="news", message="small")
        assert await receive(alice) == {"channel": "news", "message": "small"}
        flow = await workers.flow()
    assert [(event.at, event.sender) for event in flow.events if event.kind == "message"] == [
        ("client", "client"), ("server", "client"), ("server", "server"), ("client", "server")
    ]  # fmt: skip


# Bad input, and no process left behind


async def test_bad_arguments_are_refused_before_anything_starts():
    with pytest.raises(ValueError, match="hub must be one of memory, redis, streams"):
        await start_workers(2, hub="kafka")
    with pytest.raises(ValueError, match="count must be 1 or more"):
        await start_workers(0)


async def test_workers_get_the_redis_secret_through_their_environment_not_argv():
    async with await start_workers(2, hub="streams") as workers:
        secret = urlsplit(workers.redis.url).password
        for pid in pids(workers) + [workers.redis.process.pid]:
            # Every user of the machine can read a command line (ps, /proc/PID/cmdline) ...
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        for pid in pids(workers):
            # ... only the owner an environment, and that is where the URL is.
            environ = Path(f"/proc/{pid}/environ")
            assert f"{URL_VARIABLE}={workers.redis.url}".encode() in environ.read_bytes()
            assert environ.stat().st_mode & 0o077 == 0
        alice = await workers.connect("alice")
        await subscribe(alice)  # and they reach Redis with it


async def test_workers_started_twice_do_not_stop_a_redis_of_the_lessons_own():
    broker = await start_redis()
    try:
        first = await start_workers(1, hub="redis")  # each starts a Redis of its own
        async with await start_workers(1, hub="redis") as again:  # replaces first, its Redis too
            assert not first.redis.running and again.redis.running
            assert broker.running
    finally:
        broker.stop()


async def test_stopped_workers_and_their_redis_are_gone():
    workers = await start_workers(2, hub="redis")
    started = pids(workers) + [workers.redis.process.pid]
    await workers.stop()
    assert gone(started)


async def test_a_worker_that_cannot_start_says_why_and_nothing_is_left():
    before = set(psutil.Process().children(recursive=True))
    with pytest.raises(ProcessFailed) as failure:
        await start_workers(2, hub="redis", redis="not-a-url")
    assert "worker 'worker-1'" in str(failure.value) or "worker 'worker-2'" in str(failure.value)
    assert "last words" in str(failure.value)
    await eventually(
        lambda: set(psutil.Process().children(recursive=True)) <= before, "no process left"
    )


def worker_processes() -> list[psutil.Process]:
    """This process's children that run a worker (not its Redis)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "wspatterns.pubsub.worker_process" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


async def test_cancelling_while_workers_start_leaves_nothing():
    before = set(psutil.Process().children(recursive=True))
    starting = asyncio.create_task(start_workers(2, hub="redis"))
    # Cancelled once it is well under way: its Redis up, a worker spawned, not ready yet.
    await eventually(worker_processes, "a worker process spawned")
    assert not starting.done()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    await eventually(
        lambda: set(psutil.Process().children(recursive=True)) <= before, "no process left"
    )


async def test_an_error_inside_async_with_stops_the_workers():
    with pytest.raises(RuntimeError, match="lesson cell failed"):
        async with await start_workers(2) as workers:
            started = pids(workers)
            raise RuntimeError("lesson cell failed")
    assert gone(started)


def test_workers_and_redis_die_with_a_killed_kernel():
    # A kernel killed outright runs no atexit: Linux's parent-death signal is the only help.
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        from wspatterns.pubsub.workers import start_workers

        async def main():
            workers = await start_workers(2, hub="redis")
            pids = [w.process.pid for w in workers.processes] + [workers.redis.process.pid]
            print(*pids, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    result = run_python(script)
    assert result.returncode == -signal.SIGKILL
    started = [int(pid) for pid in result.stdout.split()]
    assert len(started) == 3
    asyncio.run(eventually(lambda: gone(started), f"{started} to die with their parent"))


def test_a_report_written_by_a_worker_is_shown_here_under_its_name(capsys):
    worker = Worker("worker-7", "memory", None, "token")
    worker.heard("wspatterns: handler 'pubsub_handler' of server 'worker-7' raised KeyError")
    worker.heard('  File "/lesson.py", line 3, in handler')
    worker.heard("KeyError: 'news'")
    worker.heard("wspatterns: hub 'worker-7' lost its connection to Redis")
    first, second = worker.reports
    assert str(first).startswith("wspatterns: [worker-7] handler 'pubsub_handler'")
    assert str(first).endswith('  File "/lesson.py", line 3, in handler\nKeyError: \'news\'')
    assert str(second) == "wspatterns: [worker-7] hub 'worker-7' lost its connection to Redis"
    assert "[worker-7] handler" in capsys.readouterr().err  # shown at once outside a notebook


async def test_starting_again_under_a_name_replaces_the_workers_started_before():
    first = await start_workers(1)
    second = await start_workers(1)  # a cell run again
    others = await start_workers(1, name="other")
    try:
        assert gone(pids(first))
        assert not gone(pids(second)) and not gone(pids(others))
    finally:
        await second.stop()
        await others.stop()
    assert gone(pids(second) + pids(others))
