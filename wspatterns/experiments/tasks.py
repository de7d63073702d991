"""Lesson 03, consumer and producer: clients that come and go, and the tasks they leave behind."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import KitTimeoutError
from ..runtime import Server, connect
from ..settings import DEFAULT
from ..waiting import wait_for_tasks, wait_until

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure


async def come_and_go(server: Server, clients: int) -> None:
    """Connect ``clients`` kit clients to ``server``, one after another; each opens and leaves.

    Each waits for its closing handshake, so when this returns every one of them has gone.
    """
    for _ in range(clients):
        async with connect(server):
            pass


def _running(function: Callable[..., Any] | str) -> list[asyncio.Task[Any]]:
    """The tasks on the running loop whose coroutine is named like ``function``."""
    name = function if isinstance(function, str) else _name(function)
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", None) == name and not task.done()
    ]


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__name__", None) or str(function)


async def still_running(function: Callable[..., Any], *, settle: float = 0.25) -> int:
    """How many tasks on the running event loop are running coroutine ``function`` (by name).

    Tasks about to end get up to ``settle`` seconds to do so, so what is counted is the tasks
    that stay: zero for a handler that stops both halves when its client leaves.
    """
    with contextlib.suppress(TimeoutError):
        await wait_until(lambda: not _running(function), settle)
    return len(_running(function))


async def count_leftovers(
    server: Server,
    function: Callable[..., Any],
    *,
    rounds: int = 3,
    clients: int = 5,
    gone: int = 0,
) -> pandas.DataFrame:
    """Let ``rounds`` rounds of ``clients`` clients come and go, counting the tasks still
    running ``function`` before the first round and after each one.

    ``gone`` says how many clients had left before. Returns a DataFrame with the columns
    "clients gone" and "tasks still running", one row per count.
    """
    import pandas

    rows = [(gone, await still_running(function))]
    for _ in range(rounds):
        await come_and_go(server, clients)
        gone += clients
        rows.append((gone, await still_running(function)))
    return pandas.DataFrame(rows, columns=["clients gone", "tasks still running"])


def leftovers_plot(results: Mapping[str, pandas.DataFrame]) -> Figure:
    """One line per handler: tasks still running against clients gone (from count_leftovers)."""
    import matplotlib.pyplot as pyplot
    from matplotlib.ticker import MaxNLocator

    figure, axes = pyplot.subplots(figsize=(6, 3.4))
    pyplot.close(figure)  # shown once, by being returned
    for (label, counts), marker in zip(results.items(), "os^D", strict=False):
        axes.plot(counts["clients gone"], counts["tasks still running"], marker=marker, label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="clients that have left", ylabel="tasks still running", ylim=(-1, None))
    axes.set_title("What clients that have left leave behind")
    axes.legend(title="the handler used", fontsize=9)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


async def cancel_running(function: Callable[..., Any], *, timeout: float | None = DEFAULT) -> int:
    """Cancel every task running coroutine ``function`` (by name) and wait until they have
    ended; how many there were. Raises TimeoutError if some are still running after
    ``timeout`` seconds (``TIMEOUT`` when left out; None: never)."""
    tasks = _running(function)
    for task in tasks:
        task.cancel()
    await wait_for_tasks(
        tasks, timeout, lambda left: f"{left} task(s) running {_name(function)} ignored cancel()."
    )
    for task in tasks:  # what they raised has been seen: asyncio will not log it
        if not task.cancelled():
            task.exception()
    return len(tasks)


async def cancel_handler(
    server: Server, *functions: Callable[..., Any], timeout: float | None = DEFAULT
) -> pandas.DataFrame:
    """Connect a client to ``server``, cancel the task running the handler for it once that
    handler has started a task for each of ``functions``, and say what became of those tasks.

    Returns one row per function: "still running", "cancelled", "returned", or "raised" and
    the exception's type. Afterwards it cancels what still runs and closes its client.
    Raises TimeoutError if the handler has not started them all within ``timeout`` seconds
    (``TIMEOUT`` when left out; None: never).
    """
    import pandas

    names = [_name(function) for function in functions]
    before = asyncio.all_tasks()
    started: dict[str, list[asyncio.Task[Any]]] = {}

    def all_started() -> bool:
        started.update({name: [t for t in _running(name) if t not in before] for name in names})
        return all(started.values())

    client = await connect(server, name="cancelled", timeout=timeout)
    try:
        try:
            await wait_until(all_started, timeout)
        except TimeoutError:
            missing = ", ".join(name for name in names if not started.get(name))
            raise KitTimeoutError(
                f"the handler of server {server.name!r} started no task running {missing}."
            ) from None
        handlers = [task for task in server.handler_tasks() if task not in before]
        for task in handlers:
            task.cancel()
        await wait_for_tasks(handlers, DEFAULT, lambda left: f"{left} handler(s) ignored cancel().")
        children = [task for name in names for task in started[name]]
        with contextlib.suppress(TimeoutError):  # give tasks about to end a moment to do so
            await wait_until(lambda: all(task.done() for task in children), 0.25)
        fates = [_fate(started[name]) for name in names]
    finally:
        leftovers = [task for tasks in started.values() for task in tasks]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        await client.close()
    return pandas.DataFrame({"after the handler was cancelled": fates}, index=names)


def _fate(tasks: list[asyncio.Task[Any]]) -> str:
    fates = []
    for task in tasks:
        if not task.done():
            fates.append("still running")
        elif task.cancelled():
            fates.append("cancelled")
        elif (error := task.exception()) is not None:
            fates.append(f"raised {type(error).__name__}")
        else:
            fates.append("returned")
    return ", ".join(fates)
