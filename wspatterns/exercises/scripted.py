"""The business logic a checker hands to your handler, scripted, and watching how it is used.

Your function gets these where a lesson's pattern gets its ``consume`` or
``produce``: :class:`ScriptedConsume` notes what it was given, when, and how
many calls ran at once; :class:`ScriptedProduce` returns what the checker
decided. Both count their calls and keep the coroutines they made, so a
checker can tell a call that was never awaited. Business logic of another shape
is a subclass of :class:`ScriptedLogic` (``notebooks/make_a_lesson.ipynb``
writes one).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine, Iterable
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class ScriptedLogic:
    """Business logic that counts its calls and keeps their coroutines until they finish.

    Subclass it for logic of your own: ``__call__`` returns
    ``self.made_one(self.run(...))``, where ``run`` is an ``async def`` doing what the
    checker decided. ``calls`` then counts every call, awaited or not, and
    :meth:`unawaited` counts those never awaited (the usual mistake: ``answer(x)``
    without ``await``). Pass it to :func:`~wspatterns.exercises.serving`, which closes those
    at the end so Python does not warn about them.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.made: list[Coroutine[Any, Any, Any]] = []

    def start_over(self) -> None:
        """Forget the calls so far, for a new scenario (closing those never awaited first)."""
        self.close_unawaited()
        self.calls = 0
        self.made = []

    def unawaited(self) -> int:
        """How many calls made a coroutine that was never awaited (yet)."""
        return sum(inspect.getcoroutinestate(made) == "CORO_CREATED" for made in self.made)

    def close_unawaited(self) -> int:
        """Close the coroutines never awaited, so Python does not warn about them; how many."""
        idle = [made for made in self.made if inspect.getcoroutinestate(made) == "CORO_CREATED"]
        for made in idle:
            made.close()
        self.made = [made for made in self.made if inspect.getcoroutinestate(made) != "CORO_CLOSED"]
        return len(idle)

    def made_one(self, coroutine: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """Count a call, and keep its coroutine to tell later whether it was ever awaited;
        returns ``coroutine`` itself, for ``__call__`` to return."""
        self.calls += 1
        self.made.append(coroutine)
        return coroutine


class ScriptedConsume(ScriptedLogic):
    """A ``consume(message)`` that notes what it was given, when, and how it was used.

    ``delay`` makes each call take that long; a message in ``fail_on`` makes
    the call raise ``ValueError``. ``reset(...)`` starts a new scenario on the
    object your handler already holds.
    """

    def __init__(self, delay: float = 0.0, fail_on: Iterable[str] = ()) -> None:
        super().__init__()
        self.reset(delay, fail_on)

    def reset(self, delay: float = 0.0, fail_on: Iterable[str] = ()) -> None:
        """Start a new scenario: forget every call, and take these settings."""
        self.start_over()
        self.delay = delay
        self.fail_on = set(fail_on)
        self.got: list[Any] = []  # the messages whose consume() ran, in the order it started
        self.done: list[Any] = []  # ... and in the order it finished
        self.running = 0
        self.most = 0  # the most consume() calls that ran at once
        self.cut = 0  # calls cancelled before they finished

    def __call__(self, message: Any) -> Coroutine[Any, Any, None]:
        return self.made_one(self._run(message))

    async def _run(self, message: Any) -> None:
        self.got.append(message)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if message in self.fail_on:
                raise ValueError(f"consume() cannot take {message!r}")
            self.done.append(message)
        except asyncio.CancelledError:
            self.cut += 1
            raise
        finally:
            self.running -= 1


class ScriptedProduce(ScriptedLogic):
    """A ``produce()`` that returns ``messages`` one by one, then what ``then`` says.

    ``then`` is ``"wait"`` (wait for ever, as for news that never comes),
    ``"count"`` (go on with ``tick 4``, ``tick 5``... every ``delay`` seconds)
    or ``"none"`` (return None: nothing more to send). ``reset(...)`` starts a
    new scenario on the object your handler already holds.
    """

    def __init__(
        self,
        messages: Iterable[str] = (),
        then: Literal["wait", "count", "none"] = "wait",
        delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.reset(messages, then, delay)

    def reset(
        self,
        messages: Iterable[str] = (),
        then: Literal["wait", "count", "none"] = "wait",
        delay: float = 0.0,
    ) -> None:
        """Start a new scenario: forget every call, and return these messages."""
        self.start_over()
        self.messages = list(messages)
        self.then = then
        self.delay = delay

    def __call__(self) -> Coroutine[Any, Any, str | None]:
        return self.made_one(self._run(self.calls + 1))

    async def _run(self, call: int) -> str | None:
        # Always give the loop a turn, as real news would: a handler that loops on
        # produce() then cannot starve the checker's own clients.
        await asyncio.sleep(self.delay)
        if call <= len(self.messages):
            return self.messages[call - 1]
        if self.then == "none":
            return None
        if self.then == "count":
            return f"tick {call}"
        await asyncio.Event().wait()  # for ever, until cancelled
        return None
