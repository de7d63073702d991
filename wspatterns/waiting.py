"""Waiting for what you mean, never for ever: the kit's bounded waits, on the lowest floor.

Every room may import these. Each wait gives up after ``timeout`` seconds (``TIMEOUT``
when left out, never when None: see :mod:`~wspatterns.settings`) with a TimeoutError,
a :class:`~wspatterns.errors.KitTimeoutError`, that says what was still missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from .errors import InvalidArgumentError, KitTimeoutError
from .settings import DEFAULT, timeout_seconds

T = TypeVar("T")

#: Seconds between two looks at a condition.
POLL = 0.005


async def wait_until(condition: Callable[[], bool], timeout: float | None = DEFAULT) -> None:
    """Wait until ``condition()`` returns true, checking it every few milliseconds.

    Raises TimeoutError after ``timeout`` seconds (``TIMEOUT`` when left out; None: never)
    if it never does.
    """
    limit = timeout_seconds(timeout)
    loop = asyncio.get_running_loop()
    deadline = None if limit is None else loop.time() + limit
    while not condition():
        if deadline is not None and loop.time() >= deadline:
            raise KitTimeoutError(f"{_name(condition)} was still false after {limit:g} s.")
        await asyncio.sleep(POLL)


async def within(limit: float | None, awaitable: Awaitable[T], message: Callable[[], str]) -> T:
    """Await ``awaitable``; after ``limit`` seconds (None: never) raise TimeoutError(message())."""
    limit = timeout_seconds(limit)
    if limit is None:
        return await awaitable
    try:
        async with asyncio.timeout(limit):
            return await awaitable
    except TimeoutError:
        raise KitTimeoutError(message()) from None


async def wait_for_tasks(
    tasks: Iterable[asyncio.Task[Any]], timeout: float | None, message: Callable[[int], str]
) -> None:
    """Wait until every task of ``tasks`` is done; else, after ``timeout`` seconds (None:
    never), TimeoutError(message(still_running))."""
    pending = {task for task in tasks if not task.done()}
    if not pending:
        return
    _, pending = await asyncio.wait(pending, timeout=timeout_seconds(timeout))
    if pending:
        raise KitTimeoutError(message(len(pending)))


class Serving(Protocol):
    """What the waits below need of a server: the kit's :class:`~wspatterns.Server` has it."""

    name: str

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...

    def check_running(self) -> None: ...

    def handler_tasks(self) -> list[asyncio.Task[None]]: ...

    def connections_of(self, client: str) -> list[Any]: ...


async def wait_for_handlers(server: Serving, timeout: float | None = DEFAULT) -> None:
    """Wait until every handler ``server`` is running has returned or raised.

    What they raised is then on ``server.errors``. Raises TimeoutError after ``timeout``
    seconds (``TIMEOUT`` when left out; None: never) if some handler is still running.
    """
    _check_on_this_loop(server, "wait_for_handlers()")
    limit = timeout_seconds(timeout)
    await wait_for_tasks(
        server.handler_tasks(),
        limit,
        lambda running: (
            f"{running} handler(s) of server {server.name!r} were still running after "
            f"{limit:g} s: is one waiting for something that never comes?"
        ),
    )


async def wait_for_handler(server: Serving, client: Any, timeout: float | None = DEFAULT) -> None:
    """Wait until the handler serving ``client`` (a kit client, or its name) has returned or raised.

    What it raised is then on ``server.errors``, and its ``finally`` blocks have run. Returns at
    once if no handler serves that client. Raises TimeoutError after ``timeout`` seconds
    (``TIMEOUT`` when left out; None: never) if the handler is still running.
    """
    _check_on_this_loop(server, "wait_for_handler()")
    name = getattr(client, "name", client)
    limit = timeout_seconds(timeout)
    try:
        await wait_until(lambda: not server.connections_of(name), limit)
    except TimeoutError:
        raise KitTimeoutError(
            f"the handler serving {name!r} on server {server.name!r} was still running "
            f"after {limit:g} s: is that client still connected?"
        ) from None


def _check_on_this_loop(server: Serving, what: str) -> None:
    """Raise unless ``server`` runs, on the running event loop (not serve_in_thread's)."""
    server.check_running()
    if server.loop is not asyncio.get_running_loop():
        raise InvalidArgumentError(
            f"server {server.name!r} runs on another event loop: {what} works with servers "
            "started by serve(), not serve_in_thread()."
        )


def _name(condition: Callable[[], bool]) -> str:
    name = getattr(condition, "__name__", "the condition")
    return "the condition" if name == "<lambda>" else f"{name}()"
