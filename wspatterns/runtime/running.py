"""Running async code from plain code, in a script and inside a notebook alike."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import WrongTypeError
from ..settings import DEFAULT, timeout_seconds
from ..waiting import within
from . import lifecycle

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], *, timeout: float | None = DEFAULT) -> T:
    """Run ``coro`` to completion from sync code and return its result.

    In a plain script this is ``asyncio.run``, and whatever the kit started
    inside is stopped at the end. Inside a running loop (a notebook cell)
    ``asyncio.run`` refuses, so this makes that loop re-entrant with
    nest-asyncio2 and runs ``coro`` on it; the patch is applied only then,
    never on import. Gives up with TimeoutError after ``timeout`` seconds (``TIMEOUT``
    when left out; None: never).
    """
    _check_coroutine(coro)
    limit = timeout_seconds(timeout)

    def gave_up() -> str:
        return f"run() gave up after {limit:g} s (pass timeout= to allow longer)."

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_stopping_all_after(within(limit, coro, gave_up)))
    import nest_asyncio2

    nest_asyncio2.apply(loop)
    return loop.run_until_complete(within(limit, coro, gave_up))


def _check_coroutine(coro: object) -> None:
    # Apart from run(), so that the check does not narrow run()'s coro to a coroutine of Any.
    if not inspect.iscoroutine(coro):
        hint = " Call it: run(main()), not run(main)." if inspect.iscoroutinefunction(coro) else ""
        raise WrongTypeError(f"run() needs a coroutine, got {coro!r}.{hint}")


async def _stopping_all_after(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    finally:
        await lifecycle.stop_all()
