"""Reaching an event loop that may be ours, another thread's, or gone.

Whatever the kit stops from a loop that may not be its own (servers, thread servers,
clients, redis-servers) goes through one of two functions: :func:`await_on_loop` from
async code, :func:`finish_on_loop` from plain code. They decide alike, except where
awaiting and blocking differ: a loop busy running the caller, which plain code cannot
wait for, and a stopped loop, which async code cannot run. :func:`kit_loop` is the kit's
own loop, for what plain code must be able to stop and wait for.
"""

from __future__ import annotations

import asyncio
import os
import threading
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
    limit: float | None,
    if_stopped: Callable[[], None],
) -> None:
    """Await ``coro`` on ``loop``, at most ``limit`` s (None: as long as it takes); if that
    loop is not running, call ``if_stopped()`` instead."""
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
    limit: float | None,
    if_busy: Callable[[], None],
) -> None:
    """:func:`await_on_loop` from plain code: run ``coro`` to its end on ``loop``, waiting at
    most ``limit`` s (TimeoutError, ``coro`` cancelled; None: as long as it takes), whoever
    runs that loop. A caller interrupted meanwhile (Ctrl+C) cancels ``coro``.

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
        except BaseException:
            future.cancel()
            raise


def call_in_loop(loop: asyncio.AbstractEventLoop, function: Callable[[], T], limit: float) -> T:
    """Run ``function()`` on ``loop``, which another thread runs, and return its result."""

    async def call() -> T:
        return function()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(limit)


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


_kit_loop: asyncio.AbstractEventLoop | None = None
_kit_loop_lock = threading.Lock()


def kit_loop() -> asyncio.AbstractEventLoop:
    """The kit's own event loop, run by a daemon thread from its first use to the end of the
    interpreter: the home of what plain code must stop, and wait for, from any thread (the
    kit's redis-servers). No caller's thread runs it, so :func:`finish_on_loop` always
    reaches it, a notebook cell's thread included; and Linux's parent-death signal, which
    follows the thread that started a process, fires only when the whole process ends.
    """
    global _kit_loop
    with _kit_loop_lock:
        if _kit_loop is None or _kit_loop.is_closed():
            loop = asyncio.new_event_loop()
            running = threading.Event()
            loop.call_soon(running.set)  # once running: finish_on_loop must see it run
            name = "wspatterns kit loop"
            threading.Thread(target=run_loop_forever, args=(loop,), name=name, daemon=True).start()
            running.wait()
            _kit_loop = loop
        return _kit_loop


def _forget_kit_loop() -> None:
    """In a forked child: its thread did not come along; the child starts its own if needed."""
    global _kit_loop, _kit_loop_lock
    _kit_loop, _kit_loop_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_kit_loop)
