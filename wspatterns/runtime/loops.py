"""Reaching an event loop that may be ours, another thread's, or gone."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def is_current(loop: asyncio.AbstractEventLoop) -> bool:
    """True if ``loop`` is the loop running this code."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def await_on_loop(
    loop: asyncio.AbstractEventLoop | None,
    coro: Coroutine[Any, Any, None],
    limit: float,
    if_stopped: Callable[[], None],
) -> None:
    """Await ``coro`` on ``loop``; if that loop is not running, call ``if_stopped()`` instead."""
    if loop is None or loop.is_closed():
        coro.close()
        return
    if is_current(loop):
        await coro
    elif loop.is_running():
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        await asyncio.wait_for(asyncio.wrap_future(future), limit)
    else:
        coro.close()
        if_stopped()


def finish_on_loop(
    loop: asyncio.AbstractEventLoop | None,
    coro: Coroutine[Any, Any, None],
    limit: float,
    if_busy: Callable[[], None],
) -> None:
    """:func:`await_on_loop` from plain code: run ``coro`` to its end on ``loop``, waiting at
    most ``limit`` s (TimeoutError, ``coro`` cancelled), whoever runs that loop.

    Another thread's loop runs it there; a loop stopped but not closed (a kernel shutting
    down) runs it here. A loop busy running the caller cannot wait for it: ``if_busy()``
    instead. A closed loop: nothing.
    """
    if loop is None or loop.is_closed():
        coro.close()
    elif not loop.is_running():
        loop.run_until_complete(asyncio.wait_for(coro, limit))
    elif is_current(loop):
        coro.close()
        if_busy()
    else:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            future.result(limit)
        except TimeoutError:
            future.cancel()
            raise


def call_in_loop(loop: asyncio.AbstractEventLoop, function: Callable[[], T], limit: float) -> T:
    """Run ``function()`` on ``loop``, which another thread runs, and return its result."""

    async def call() -> T:
        return function()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(limit)


def run_in_a_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on an event loop of its own, in a thread of its own, and return
    what it returns: async code from plain code, wherever that runs (a script, or a notebook
    cell, whose thread runs a loop already). The caller's own loop, if any, is left alone.

    If the caller is interrupted (Ctrl+C), the exception reaches it at once; ``coro`` is
    left to end by itself: the caller makes it end (stopping what it waits for).
    """
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wspatterns")
    try:
        return pool.submit(asyncio.run, coro).result()
    finally:
        pool.shutdown(wait=False)


def run_loop_forever(loop: asyncio.AbstractEventLoop) -> None:
    """A thread's whole life: run ``loop`` until stopped, then cancel what is left and close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
