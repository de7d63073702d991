"""Tests for wspatterns.runtime.lifecycle: one registry, one way to stop everything."""

import psutil

from wspatterns import connect, serve, serve_in_thread, servers, stop_all
from wspatterns.broadcast import ClientsProcess, ServerProcess
from wspatterns.pubsub import start_redis, start_workers
from wspatterns.runtime import lifecycle

from .utils import echo, listening_ports, open_tcp_connections


def children() -> list[psutil.Process]:
    return [child for child in psutil.Process().children(recursive=True) if child.is_running()]


async def test_stop_all_leaves_no_server_client_process_worker_or_redis():
    before_ports, before_tcp = listening_ports(), open_tcp_connections()
    server = await serve(echo)
    threaded = serve_in_thread(echo, name="threaded")
    client = await connect(server, name="alice")
    broker = await start_redis(name="lifecycle")
    workers = await start_workers(2, hub="redis", redis=broker, name="lifecycle-workers")
    remote = await workers.connect("bob")
    broadcaster = ServerProcess("default")
    await broadcaster.__aenter__()
    audience = ClientsProcess([broadcaster.url], 2)
    await audience.__aenter__()
    assert len(children()) >= 5  # redis, two workers, the broadcast server and its clients
    for kind in ("client", "server", "workers", "process", "redis"):
        assert lifecycle.of_kind(kind), kind

    await stop_all()

    assert all(not lifecycle.of_kind(kind) for kind in lifecycle.KINDS)
    assert not server.running and not threaded.running and servers() == []
    assert not threaded.thread.is_alive()
    assert client.state.name == "CLOSED" and remote.state.name == "CLOSED"
    assert not broker.running
    assert psutil.wait_procs(children(), timeout=5)[1] == []  # every child gone
    assert listening_ports() == before_ports
    assert open_tcp_connections() <= before_tcp


async def test_stop_all_twice_and_with_nothing_running_is_harmless():
    await stop_all()
    await stop_all()
    assert servers() == []


async def test_a_name_in_use_is_replaced_for_every_kind():
    first = await serve(echo, name="same")
    second = await serve(echo, name="same")
    assert not first.running and second.running
    alice = await connect(second, name="alice")
    again = await connect(second, name="alice")
    assert alice.state.name == "CLOSED" and again.state.name == "OPEN"
    old = await start_redis(name="same-redis")
    new = await start_redis(name="same-redis")
    assert not old.running and new.running
    assert lifecycle.get("redis", "same-redis") is new
    assert lifecycle.get("server", "same") is second


async def test_something_that_stopped_on_its_own_is_forgotten():
    server = await serve(echo, name="forgotten")
    client = await connect(server, name="carol")
    await client.close()
    assert lifecycle.get("client", (server.url, "carol")) is None
    await server.stop()
    assert lifecycle.get("server", "forgotten") is None


async def test_only_the_end_of_the_interpreter_stops_quietly_whatever_the_reason_says():
    # At exit a server stops quietly: the registry says it is exiting, not a reason's text.
    server = await serve(echo, name="said")
    threaded = serve_in_thread(echo, name="said-threaded")
    for kind, name in (("server", "said"), ("server", "said-threaded")):
        lifecycle.retire_now(kind, name, "the interpreter exited")
    assert not server.running and not threaded.running
    assert not server.quiet and not threaded.quiet
    assert not lifecycle.exiting()
