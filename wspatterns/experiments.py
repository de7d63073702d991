"""Experiments the lessons run to show where a pattern bends: one short call each.

Each experiment starts its own servers and clients with the kit, bounds every
wait, cleans up after itself, and returns numbers (or a DataFrame) for the
lesson to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import operator
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NamedTuple

from .broadcasting import STRATEGIES, Measurement, ProcessFailed, check_method, measure
from .errors import _ipython
from .flow import Flow
from .runtime import TIMEOUT, Server, connect, serve

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure
    from websockets.asyncio.server import ServerConnection

# Lesson 03b, multiple consumers: how fast a team of workers consumes a batch.


def ideal_rate(workers: int, consume_time: float) -> float:
    """Messages per second ``workers`` workers reach at best, when each message takes
    ``consume_time`` seconds to consume and they never wait for a message."""
    return workers / consume_time


#: The team sizes lesson 03b compares.
WORKER_COUNTS = (1, 2, 4, 8, 16)

#: What lesson 03b's handler factories look like: ``make_handler(consume, count)``.
MakeWorkersHandler = Callable[
    [Callable[[Any], Awaitable[None]], int], Callable[["ServerConnection"], Awaitable[None]]
]


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


async def wait_for_handlers(server: Server, timeout: float | None = None) -> None:
    """Wait until every handler ``server`` is running has returned or raised.

    What they raised is then on ``server.errors``. Raises TimeoutError after ``timeout``
    seconds (the kit's ``TIMEOUT`` by default) if some handler is still running.
    """
    _check_on_this_loop(server, "wait_for_handlers()")
    tasks = set(server._ws.handler_tasks)
    if not tasks:
        return
    limit = TIMEOUT if timeout is None else timeout
    _, pending = await asyncio.wait(tasks, timeout=limit)
    if pending:
        raise TimeoutError(
            f"{len(pending)} handler(s) of server {server.name!r} were still running after "
            f"{limit:g} s: is one waiting for something that never comes?"
        )


def _check_on_this_loop(server: Server, what: str) -> None:
    """Raise unless ``server`` runs, on the running event loop (not serve_in_thread's)."""
    server.check_running()
    if server._loop is not asyncio.get_running_loop():
        raise ValueError(
            f"server {server.name!r} runs on another event loop: {what} works with servers "
            "started by serve(), not serve_in_thread()."
        )


def _connections_of(server: Server, name: str) -> list[Any]:
    """The server's ends of the connections from the client called ``name``, handler running."""
    # websockets keeps a connection in all_connections until its handler has ended.
    return [each for each in server._ws.all_connections if getattr(each, "name", None) == name]


class Pause(NamedTuple):
    """The longest pause in the messages one end sent or received: what came before, how long."""

    before: int  # messages before the pause
    bytes_before: int  # their payload bytes
    seconds: float  # from the last message before the pause to the first one after it
    after: int  # messages after the pause


def longest_pause(flow: Flow, at: str = "server", way: str = "sent") -> Pause:
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


# Lesson 04, broadcasting: six ways to send one message to many clients, measured as upstream
# websockets measures them, with the server and the clients in processes of their own.

#: The columns of broadcast_experiment()'s DataFrame, one row per run.
BROADCAST_COLUMNS = [
    "method", "clients", "slow_client", "broadcasts", "messages", "delivered",
    "p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu", "clients_cpu", "server_mb",
    "complete", "note",
]  # fmt: skip


async def broadcast_experiment(
    methods: Iterable[str] = tuple(STRATEGIES),
    clients: Iterable[int] = (10, 100),
    *,
    size: int = 64,
    rate: float = 10.0,
    seconds: float = 2.0,
    slow_client: bool = False,
    progress: bool = True,
) -> pandas.DataFrame:
    """Measure how late a broadcast reaches its clients, for each method and number of clients.

    Each run starts a server process broadcasting ``size`` bytes ``rate`` times a second and a
    process of clients (plus, with ``slow_client``, one client that never reads), warms up,
    measures for ``seconds``, and stops both. Returns one row per run (see
    ``BROADCAST_COLUMNS``); latencies are in ms, ``server_cpu`` is CPU time over wall time, and
    ``delivered`` is the share of the scheduled messages that arrived. A run whose process died
    or stopped answering is a row with ``complete`` False and a ``note`` saying what happened,
    and the next run goes on. Raises ValueError for inputs that cannot run, before anything
    starts.

    A slow client makes a difference only once what it does not read fills the kernel's socket
    buffers and websockets' write buffer: about 3 MB on Linux, so use a large ``size``.
    """
    import pandas

    methods, counts = _broadcast_runs(methods, clients, size, rate, seconds)
    status = _Status(progress)
    runs = [(method, count) for method in methods for count in counts]
    started = time.perf_counter()
    rows = []
    for number, (method, count) in enumerate(runs, 1):
        label = f"broadcast {number}/{len(runs)}: {method}, {count} clients"
        status.show(label, lasting=True)
        try:
            measured = await measure(
                method,
                count,
                size=size,
                rate=rate,
                seconds=seconds,
                slow=1 if slow_client else 0,
                phase=lambda text, label=label: status.show(f"{label}: {text}"),
            )
        except ProcessFailed as exc:
            row = _broadcast_row(method, count, slow_client, None, rate, str(exc))
        else:
            row = _broadcast_row(method, count, slow_client, measured, rate, "")
        rows.append(row)
        outcome = row["note"] or f"p99 {row['p99_ms']:.1f} ms"
        status.show(f"{label}: {outcome}", lasting=True)
    status.show(
        f"broadcast experiment: {len(runs)} runs in {time.perf_counter() - started:.0f} s",
        lasting=True,
    )
    return pandas.DataFrame(rows, columns=BROADCAST_COLUMNS)


def _broadcast_runs(
    methods: Iterable[str] | str,
    clients: Iterable[int] | int,
    size: int,
    rate: float,
    seconds: float,
) -> tuple[list[str], list[int]]:
    """The methods and client counts to run, or ValueError saying what is wrong with them."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    for method in methods:
        check_method(method)
    counts = []
    for count in [clients] if isinstance(clients, int) else list(clients):
        try:
            counts.append(operator.index(count))
        except TypeError:
            raise ValueError(f"clients must be whole numbers; got {count!r}.") from None
        if counts[-1] < 1:
            raise ValueError(f"clients must be 1 or more in each run; got {count}.")
    if not methods or not counts:
        raise ValueError("nothing to run: give at least one method and one number of clients.")
    if size < 0:
        raise ValueError(f"size must be 0 bytes or more; got {size}.")
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be more than 0 broadcasts a second; got {rate}.")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"seconds must be more than 0; got {seconds}.")
    return methods, counts


def _broadcast_row(
    method: str,
    count: int,
    slow_client: bool,
    measured: Measurement | None,
    rate: float,
    failure: str,
) -> dict[str, Any]:
    """One row of broadcast_experiment()'s DataFrame; empty figures for a run that failed."""
    row: dict[str, Any] = dict.fromkeys(BROADCAST_COLUMNS, math.nan)
    row.update(method=method, clients=count, slow_client=slow_client, complete=False, note=failure)
    if measured is None:
        return row
    ready, seen, server = measured
    expected = count * rate * seen["seconds"]
    row.update(
        broadcasts=server["broadcasts"],
        messages=seen["messages"],
        delivered=round(min(1.0, seen["messages"] / expected), 3) if expected else math.nan,
        server_cpu=server["cpu"],
        clients_cpu=seen["cpu"],
        server_mb=server["memory_mb"],
    )
    for column in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        if seen[column] is not None:
            row[column] = seen[column]
    problems = []
    if ready["connected"] < count or ready["slow"] < int(slow_client):
        problems.append(
            f"only {ready['connected']} of {count} clients connected ({ready['error']})"
        )
    if seen["closed"]:
        problems.append(f"{seen['closed']} client(s) were disconnected during the run")
    row["complete"] = not problems
    if not seen["messages"]:
        problems.append("no message arrived while measuring")
    row["note"] = "; ".join(problems)
    return row


class _Status:
    """One line saying how far an experiment has got: in a notebook, a display that updates
    in place; elsewhere, lines on stderr (only the ``lasting`` ones); nothing if not ``enabled``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        shell = _ipython()
        self.in_notebook = shell is not None and getattr(shell, "kernel", None) is not None
        self._handle: Any = None

    def show(self, text: str, *, lasting: bool = False) -> None:
        if not self.enabled:
            return
        if not self.in_notebook:
            if lasting:
                print(text, file=sys.stderr, flush=True)
            return
        from IPython.display import Pretty, display

        if self._handle is None:
            self._handle = display(Pretty(text), display_id=True)
        else:
            self._handle.update(Pretty(text))


def broadcast_plot(results: pandas.DataFrame) -> Figure:
    """Median and 99th-percentile latency against the number of clients, one line per method.

    Both axes are logarithmic. Runs that did not complete are left out; raises ValueError if
    none did.
    """
    import matplotlib.pyplot as pyplot
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    done = results[results["complete"].astype(bool) & results["p99_ms"].notna()]
    if done.empty:
        raise ValueError("nothing to plot: no run of this experiment completed.")
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4), sharey=True)
    pyplot.close(figure)  # shown once, by being returned, not again by pyplot
    counts = sorted(done["clients"].unique())
    for panel, column, title in zip(
        axes, ("p50_ms", "p99_ms"), ("median (p50)", "99th percentile (p99)"), strict=True
    ):
        for method, runs in done.groupby("method", sort=False):
            runs = runs.sort_values("clients")
            panel.plot(runs["clients"], runs[column], marker="o", label=method)
        panel.set_xscale("log")
        panel.set_yscale("log")
        panel.xaxis.set_major_locator(FixedLocator(counts))
        panel.xaxis.set_minor_locator(NullLocator())
        panel.set_xticklabels([f"{count:,}" for count in counts])
        panel.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        panel.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        panel.set_xlabel("clients")
        panel.set_title(title)
        panel.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms, log scale)")
    axes[1].legend(title="method", fontsize="small")
    slow = bool(done["slow_client"].any())
    figure.suptitle(
        "How long a broadcast message takes to arrive"
        + (", with one client that never reads" if slow else "")
    )
    figure.tight_layout()
    return figure


# Lesson 04, registration and broadcast: waiting for the server to notice, and a client that
# stops reading.


async def wait_for_handler(server: Server, client: Any, timeout: float | None = None) -> None:
    """Wait until the handler serving ``client`` (a kit client, or its name) has returned or raised.

    What it raised is then on ``server.errors``, and its ``finally`` blocks have run. Returns at
    once if no handler serves that client. Raises TimeoutError after ``timeout`` seconds (the
    kit's ``TIMEOUT`` by default) if the handler is still running.
    """
    _check_on_this_loop(server, "wait_for_handler()")
    name = getattr(client, "name", client)
    limit = TIMEOUT if timeout is None else timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while _connections_of(server, name):
        if loop.time() >= deadline:
            raise TimeoutError(
                f"the handler serving {name!r} on server {server.name!r} was still running "
                f"after {limit:g} s: is that client still connected?"
            )
        await asyncio.sleep(0.005)


async def wait_until(condition: Callable[[], bool], timeout: float | None = None) -> None:
    """Wait until ``condition()`` returns true, checking it every few milliseconds.

    Raises TimeoutError after ``timeout`` seconds (the kit's ``TIMEOUT`` by default) if it
    never does.
    """
    limit = TIMEOUT if timeout is None else timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() >= deadline:
            raise TimeoutError(f"{_condition_name(condition)} was still false after {limit:g} s.")
        await asyncio.sleep(0.005)


def _condition_name(condition: Callable[[], bool]) -> str:
    name = getattr(condition, "__name__", "the condition")
    return "the condition" if name == "<lambda>" else f"{name}()"


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
    ends = _connections_of(server, name)
    if not ends:
        raise ValueError(f"server {server.name!r} has no connection from {name!r}.")
    for end in ends:
        end.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    client.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
