"""Tests for wspatterns.experiments."""

import asyncio
import math
import socket
import time

import pandas
import psutil
import pytest
from matplotlib.figure import Figure
from websockets.asyncio.server import broadcast
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from wspatterns import connect, serve, serve_in_thread
from wspatterns.broadcast import BROADCAST_COLUMNS, broadcast_experiment, broadcast_plot
from wspatterns.experiments import (
    Span,
    WorkLog,
    backpressure_experiment,
    cancel_handler,
    cancel_running,
    come_and_go,
    count_leftovers,
    ideal_rate,
    leftovers_plot,
    limit_os_buffers,
    longest_pause,
    still_running,
    workers_experiment,
)
from wspatterns.patterns import multiple_consumers, registration
from wspatterns.waiting import wait_for_handler, wait_for_handlers, wait_until

from .utils import BOUND, MS, echo, eventually

# Lesson 03b, multiple consumers: workers_experiment.


def test_the_ideal_rate_is_one_message_per_worker_per_consume_time():
    assert ideal_rate(1, 0.05) == pytest.approx(20)
    assert ideal_rate(4, 0.01) == pytest.approx(400)


async def test_workers_experiment_times_one_batch_per_count_of_workers():
    made = []

    def team(consume, count):
        made.append(count)
        return multiple_consumers(consume, count)

    consume_time = 10 * MS
    rates = await workers_experiment(team, (1, 4), messages=8, consume_time=consume_time)
    assert made == [1, 4]  # one team per count, in order
    columns = ["workers", "seconds", "messages/s", "ideal messages/s", "most at once"]
    assert list(rates.columns) == columns
    assert list(rates["workers"]) == [1, 4]
    assert rates["most at once"].iloc[0] == 1 and rates["most at once"].iloc[1] <= 4
    ideal = [ideal_rate(1, consume_time), ideal_rate(4, consume_time)]
    assert list(rates["ideal messages/s"]) == ideal
    # The clock stops at the last message consumed, not before: one worker sleeps through
    # the 8 messages one after another, four through 2 rounds. (1 µs: asyncio may wake a
    # timer up to its clock's resolution early.) So the ideal is a ceiling.
    least = [8 * consume_time - 1e-6, 2 * consume_time - 1e-6]
    assert (rates["seconds"] >= least).all(), list(rates["seconds"])
    assert (rates["messages/s"] <= rates["ideal messages/s"] * (1 + 1e-4)).all()


async def test_workers_experiment_says_how_many_messages_a_broken_handler_consumed():
    def forgetful(consume, count):
        async def handler(websocket):
            async for message in websocket:
                if message == "0":  # consumes the first message, drops the rest
                    await consume(message)

        return handler

    with pytest.raises(TimeoutError, match="only 1 of 4 messages were consumed"):
        await workers_experiment(forgetful, (2,), messages=4, consume_time=MS, timeout=1_000 * MS)


async def test_workers_experiment_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="at least 1 message"):
        await workers_experiment(multiple_consumers, messages=0)


def test_work_log_counts_calls_at_once_and_back_to_back_is_not_at_once():
    log = WorkLog(asyncio.sleep)
    log.spans = [
        Span(1, "a", 0.0, 1.0, True),
        Span(2, "b", 0.5, 2.0, True),
        Span(1, "c", 1.0, 1.5, True),  # starts as "a" ends: still two at once, not three
        Span(3, "d", 1.2, 1.4, False),
    ]
    assert log.most_at_once() == 3  # b, c and d around 1.3 s
    assert log.finished == ["a", "b", "c"]


async def test_work_log_notes_which_worker_consumed_what_and_draws_it():
    release = asyncio.Event()

    async def consume(message):
        await release.wait()

    log = WorkLog(consume)
    server = await serve(multiple_consumers(log, count=2))
    async with connect(server) as websocket:
        for message in ["a", "b", "c"]:
            await websocket.send(message)
        log.mark("sent")
        await eventually(lambda: len(log.workers) == 2, "both workers to take a message")
        release.set()
        await eventually(lambda: len(log.finished) == 3, "three messages consumed")
    assert {span.worker for span in log.spans} == {1, 2}
    assert all(0 <= span.start <= span.end for span in log.spans)
    assert log.most_at_once() == 2
    figure = log.timeline()
    [axes] = figure.axes
    assert [label.get_text() for label in axes.get_yticklabels()] == ["worker 1", "worker 2"]
    log.clear()
    with pytest.raises(ValueError, match="consume\\(\\) was never called"):
        log.timeline()


async def test_work_log_notes_a_call_cut_off():
    log = WorkLog(lambda message: asyncio.Event().wait())
    call = asyncio.create_task(log("stuck"))
    await eventually(lambda: log.workers, "the call to start")
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    [span] = log.spans
    assert span.message == "stuck" and not span.finished and log.finished == []


async def test_backpressure_experiment_a_bounded_queue_keeps_the_client_close_behind():
    pressure = await backpressure_experiment(
        multiple_consumers, (0, 2), workers=2, messages=120, consume_time=5 * MS
    )
    summary = pressure.summary()
    assert list(summary.index) == [0, 2]
    assert list(summary.columns) == ["sending took (s)", "consumed by then", "most messages ahead"]
    times = [*pressure.sent.values(), *pressure.consumed.values()]
    assert [len(each) for each in times] == [120] * 4
    ahead = summary["most messages ahead"]
    # Bounded, what sits between the client and the workers is a few buffers: far from all
    # 120. Unbounded, the handler reads everything the client sends as it comes.
    assert ahead[2] <= 60 < ahead[0], dict(ahead)
    assert len(pressure.plot().axes) == 2


async def test_backpressure_experiment_says_how_many_messages_a_broken_handler_consumed():
    def forgetful(consume, count, maxsize):
        async def handler(websocket):
            async for _ in websocket:
                pass  # consumes nothing

        return handler

    with pytest.raises(TimeoutError, match="with maxsize=0, only 0 of 3 messages"):
        await backpressure_experiment(forgetful, (0,), messages=3, timeout=200 * MS)


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
    # Producers never end: however short the settle, three stay.
    assert await still_running(producer_half, settle=100 * MS) == 3
    # settle is a bound here: the count is taken as soon as it reaches zero.
    assert await still_running(consumer_half, settle=BOUND) == 0
    await server.stop(timeout=50 * MS)  # cancels the three handlers, and says so
    assert "3 handler(s)" in server.errors[-1].summary
    assert await still_running(producer_half, settle=BOUND) == 0


async def test_still_running_finds_nothing_once_the_other_half_is_cancelled():
    handler, consumer_half, producer_half = _newsroom(wait_for_first=True)
    server = await serve(handler)
    await come_and_go(server, 3)
    # settle is generous: the count is taken as soon as it reaches zero.
    assert await still_running(producer_half, settle=BOUND) == 0
    assert await still_running(consumer_half, settle=BOUND) == 0
    await server.stop(timeout=50 * MS)
    assert server.errors == []


async def test_count_leftovers_counts_before_and_after_each_round_and_plots_them():
    handler, _, producer_half = _newsroom(wait_for_first=False)
    server = await serve(handler)
    counts = await count_leftovers(server, producer_half, rounds=2, clients=2, gone=1)
    assert list(counts.columns) == ["clients gone", "tasks still running"]
    assert counts.values.tolist() == [[1, 0], [3, 2], [5, 4]]
    figure = leftovers_plot({"gather": counts, "none": counts.assign(**{"tasks still running": 0})})
    [axes] = figure.axes
    assert [line.get_label() for line in axes.get_lines()] == ["gather", "none"]
    assert list(axes.get_lines()[0].get_ydata()) == [0, 2, 4]
    await server.stop(timeout=50 * MS)


async def test_cancel_running_cancels_the_leftovers_and_lets_their_handlers_end():
    handler, _, producer_half = _newsroom(wait_for_first=False)
    server = await serve(handler)
    await come_and_go(server, 3)
    assert await cancel_running(producer_half) == 3
    assert await still_running(producer_half, settle=0) == 0
    await wait_for_handlers(server, BOUND)  # gather() passed the cancellation on to them
    assert await cancel_running(producer_half) == 0


async def test_cancel_handler_says_what_became_of_the_tasks_the_handler_started():
    handler, consumer_half, producer_half = _newsroom(wait_for_first=True)
    server = await serve(handler)
    fates = await cancel_handler(server, consumer_half, producer_half)
    # asyncio.wait() left both running; websockets then closed the connection (1011), which
    # ended the consumer.
    assert fates["after the handler was cancelled"].to_dict() == {
        "consumer_half": "raised ConnectionClosedError",
        "producer_half": "still running",
    }
    assert await still_running(producer_half, settle=0) == 0  # it cleaned up after itself

    async def grouped(websocket):
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer_half(websocket))
            group.create_task(producer_half(websocket))

    server = await serve(grouped)
    fates = await cancel_handler(server, consumer_half, producer_half)
    assert list(fates["after the handler was cancelled"]) == ["cancelled", "cancelled"]


async def test_cancel_handler_says_which_task_the_handler_never_started():
    handler, consumer_half, _ = _newsroom(wait_for_first=True)

    async def elsewhere(websocket):
        pass

    server = await serve(handler)
    with pytest.raises(TimeoutError, match="started no task running elsewhere"):
        await cancel_handler(server, consumer_half, elsewhere, timeout=50 * MS)


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

    async def burst_then_one(websocket):
        for size in (1, 2, 3, 4):
            await websocket.send(b"x" * size)
        await go_on.wait()
        await websocket.send(b"x" * 5)

    def silence_is_the_longest() -> bool:
        """Whether the silence since the burst, at both ends, is longer than any gap in it."""
        times = [event.time for event in server.flow.events if event.kind == "message"]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        return time.monotonic_ns() - max(times) > 2 * max(gaps)

    server = await serve(burst_then_one)
    async with connect(server) as websocket:
        for _ in range(4):
            await websocket.recv()
        # The silence: however a busy machine stretched the burst, it lasts longer.
        await eventually(silence_is_the_longest, "a silence longer than the burst")
        go_on.set()
        await websocket.recv()
    sent = longest_pause(server.flow, "server", "sent")
    assert (sent.before, sent.bytes_before, sent.after) == (4, 10, 1)
    assert sent.seconds > 0
    received = longest_pause(server.flow, "client", "received")
    assert (received.before, received.bytes_before, received.after) == (4, 10, 1)


async def test_longest_pause_needs_two_messages_and_plain_words():
    server = await serve(echo)
    async with connect(server) as websocket:
        await websocket.send("only one")
        await websocket.recv()
    with pytest.raises(ValueError, match="the server sent 1 message"):
        longest_pause(server.flow, "server", "sent")
    with pytest.raises(ValueError, match='way "sent" or "received"'):
        longest_pause(server.flow, "server", "out")


# Lesson 04, broadcasting: broadcast_experiment and broadcast_plot.


def children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def is_a(child: psutil.Process, role: str) -> bool:
    """Whether ``child`` runs ``python -m wspatterns.broadcast.ROLE_process``."""
    return f"wspatterns.broadcast.{role}_process" in child.cmdline()


async def child_with_connections(role: str, count: int) -> psutil.Process:
    """The experiment's ``role`` process, once the server holds ``count`` client connections."""
    async with asyncio.timeout(20_000 * MS):
        while True:
            for child in children():
                try:
                    if is_a(child, "server") and len(child.net_connections("tcp")) > count:
                        # (the listening socket, then one per client)
                        return next(c for c in children() if is_a(c, role))
                except (psutil.NoSuchProcess, StopIteration):
                    pass
            await asyncio.sleep(10 * MS)


async def test_broadcast_experiment_returns_one_row_per_run_and_leaves_no_process(capsys):
    results = await broadcast_experiment(("default", "queue"), (3,), seconds=0.5, rate=20)
    assert list(results.columns) == BROADCAST_COLUMNS
    assert list(results["strategy"]) == ["default", "queue"]
    assert list(results["clients"]) == [3, 3]
    assert results["complete"].all() and (results["note"] == "").all()
    assert (results["messages"] > 0).all() and (results["broadcasts"] > 0).all()
    assert (results["p50_ms"] <= results["p95_ms"]).all()
    assert (results["p95_ms"] <= results["p99_ms"]).all()
    assert (results["p99_ms"] <= results["max_ms"]).all()
    assert results["server_cpu"].between(0, 2).all()
    assert children() == []
    out, err = capsys.readouterr()
    assert out == ""  # progress goes to stderr, one line per run and its outcome
    assert "broadcast 1/2: default, 3 clients: p99 " in err
    assert "broadcast experiment: 2 runs in" in err


async def test_a_run_whose_clients_process_dies_is_kept_as_incomplete_and_the_next_one_runs(
    capsys,
):
    experiment = asyncio.create_task(
        broadcast_experiment(("naive", "wait"), 3, seconds=0.5, progress=False)
    )
    (await child_with_connections("clients", 3)).kill()
    results = await asyncio.wait_for(experiment, 30_000 * MS)
    first, second = results.to_dict("records")
    assert first["strategy"] == "naive" and not first["complete"]
    assert "the clients process exited with code -9" in first["note"]
    assert math.isnan(first["p99_ms"])
    assert second["strategy"] == "wait" and second["complete"]
    assert children() == []
    assert capsys.readouterr() == ("", "")  # progress=False: not a word


async def test_a_run_whose_server_dies_says_so():
    experiment = asyncio.create_task(broadcast_experiment("pubsub", 3, seconds=0.5, progress=False))
    (await child_with_connections("server", 3)).kill()
    results = await asyncio.wait_for(experiment, 30_000 * MS)
    (row,) = results.to_dict("records")
    assert not row["complete"]
    assert "the server process exited with code -9" in row["note"]
    assert children() == []


async def test_cancelling_the_experiment_stops_its_processes():
    experiment = asyncio.create_task(broadcast_experiment("default", 3, seconds=30, progress=False))
    await child_with_connections("server", 3)
    experiment.cancel()
    with pytest.raises(asyncio.CancelledError):
        await experiment
    assert children() == []


@pytest.mark.parametrize(
    "arguments, words",
    [
        ({"clients": (10, 0)}, "clients must be 1 or more in each run; got 0"),
        ({"clients": -3}, "clients must be 1 or more in each run; got -3"),
        ({"clients": ()}, "nothing to run"),
        ({"clients": (2.5,)}, "clients must be whole numbers; got 2.5"),
        ({"size": -1}, "size must be 0 bytes or more; got -1"),
        ({"rate": 0}, "rate must be more than 0 broadcasts a second; got 0"),
        ({"rate": -1.5}, "rate must be more than 0"),
        ({"seconds": 0}, "seconds must be more than 0"),
        (
            {"strategies": ("default", "fastest")},
            "unknown broadcast strategy 'fastest'; the strategies are: default, naive, task, wait, "
            "queue, pubsub",
        ),
    ],
)
async def test_broadcast_experiment_refuses_what_cannot_run_before_starting_anything(
    arguments, words
):
    with pytest.raises(ValueError, match=words):
        await broadcast_experiment(**arguments, progress=False)
    assert children() == []


def _results(rows):
    return pandas.DataFrame(
        [dict(dict.fromkeys(BROADCAST_COLUMNS, math.nan), **row) for row in rows],
        columns=BROADCAST_COLUMNS,
    )


def test_broadcast_plot_draws_a_line_per_method_against_clients_on_log_axes():
    results = _results(
        [
            {"strategy": strategy, "clients": count, "slow_client": False, "complete": True,
             "p50_ms": count * factor, "p99_ms": count * factor * 2, "note": ""}
            for strategy, factor in (("default", 0.1), ("naive", 0.2))
            for count in (10, 100, 1000)
        ]
        + [{"strategy": "task", "clients": 10, "slow_client": False, "complete": False,
            "note": "the clients process exited with code -9"}]
    )  # fmt: skip
    figure = broadcast_plot(results)
    assert isinstance(figure, Figure)
    median, p99 = figure.axes
    assert median.get_xscale() == p99.get_xscale() == "log"
    assert [line.get_label() for line in p99.get_lines()] == ["default", "naive"]
    assert list(p99.get_lines()[1].get_ydata()) == [4.0, 40.0, 400.0]
    assert [label.get_text() for label in p99.get_xticklabels()] == ["10", "100", "1,000"]
    assert median.get_ylabel().startswith("latency (ms")


def test_broadcast_plot_refuses_results_with_no_complete_run():
    results = _results([{"strategy": "naive", "clients": 3, "complete": False, "note": "died"}])
    with pytest.raises(ValueError, match="no run of this experiment completed"):
        broadcast_plot(results)


# Lesson 04, registration and broadcast: wait_for_handler.


async def test_wait_for_handler_returns_once_the_dropped_clients_handler_has_unregistered():
    room = set()
    server = await serve(registration(room))
    staying = await connect(server, name="staying")
    leaving = await connect(server, name="leaving")
    leaving.transport.abort()  # the network fails: no closing handshake
    await wait_for_handler(server, leaving)
    assert [websocket.name for websocket in room] == ["staying"]
    await wait_for_handler(server, "nobody")  # no such handler: nothing to wait for
    await staying.close()


async def test_wait_for_handler_says_whose_handler_still_runs():
    server = await serve(echo)
    async with connect(server, name="still-here"):
        with pytest.raises(TimeoutError, match="'still-here'.*still connected"):
            await wait_for_handler(server, "still-here", timeout=20 * MS)


async def test_wait_for_handler_refuses_a_server_on_another_loop():
    server = serve_in_thread(echo)
    try:
        with pytest.raises(ValueError, match="serve_in_thread"):
            await wait_for_handler(server, "anyone")
    finally:
        server.stop_blocking()


async def test_wait_until_returns_once_the_condition_holds():
    server = await serve(echo)
    async with connect(server):
        await wait_until(lambda: len(server.connections) == 1)
    await wait_until(lambda: len(server.connections) == 0)


async def test_wait_until_names_the_condition_that_never_held():
    def never() -> bool:
        return False

    with pytest.raises(TimeoutError, match=r"never\(\) was still false"):
        await wait_until(never, timeout=20 * MS)
    with pytest.raises(TimeoutError, match="the condition was still false"):
        await wait_until(lambda: False, timeout=20 * MS)


async def test_limit_os_buffers_makes_the_server_hold_what_a_client_does_not_read():
    room = set()
    server = await serve(registration(room), compression=None)
    client = await connect(server, name="reads-nothing")
    limit_os_buffers(client, server, 64 * 1024)
    [end] = room
    client_socket = client.transport.get_extra_info("socket")
    server_socket = end.transport.get_extra_info("socket")
    received = client_socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    sent = server_socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert 64 * 1024 <= received <= 4 * 64 * 1024
    assert 64 * 1024 <= sent <= 4 * 64 * 1024
    # 4 MB: the client's queue (16 messages of 64 KiB) and the capped buffers hold less.
    for _ in range(64):
        broadcast(room, bytes(64 * 1024))
        await asyncio.sleep(0)
    # The client reads until its queue is full (16 messages), then reads no more.
    [client_end] = [end for end in server.flow.totals if end.who.at == "client"]
    await eventually(lambda: client_end.received >= 16, "the client's queue to fill")
    assert end.transport.get_write_buffer_size() > 1_000_000
    # A closing handshake would wait behind those megabytes: drop the connection instead.
    end.transport.abort()
    with pytest.raises(ConnectionClosedError):
        async for _ in client:
            pass


async def test_limit_os_buffers_needs_a_connection_from_that_client():
    server = await serve(echo)
    other = await serve(echo, name="other")
    async with connect(other, name="elsewhere") as client:
        with pytest.raises(ValueError, match="no connection from 'elsewhere'"):
            limit_os_buffers(client, server)
