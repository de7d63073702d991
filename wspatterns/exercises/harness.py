"""What every checker does: build your handler, serve it under watch, drive it, judge how it ended.

The pieces a teacher needs to write a checker of their own are public, exported by
:mod:`wspatterns.exercises` (``notebooks/make_a_lesson.ipynb`` builds one with them):
:func:`build`, :func:`serving` and :class:`Watch`, :func:`checker_client`,
:func:`send_all`, :func:`receive`, :func:`next_message`, :func:`in_time`,
:func:`until` and :func:`judge_end`. The rest serves the kit's own checkers.

Every wait here is bounded. A kit client's ``recv()`` waits for ever, as
websockets' own does, so the checker bounds each read itself
(:func:`receive`, :func:`next_message`); a handler that hangs costs a check
at most a few times :data:`GRACE`, never the whole cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data

from .. import internals
from ..reports import is_yours
from ..runtime import Client, Server, connect, serve
from ..settings import Handler
from ..waiting import wait_until, within
from .report import Report
from .scripted import ScriptedConsume, ScriptedLogic

#: How long, in seconds, a handler may take to do what it should (end, close,
#: consume) before the checker calls it late. Generous: the checker must not
#: fail a right answer on a slow machine.
GRACE = 1.0

# A checker's client waits at most GRACE * 3 on a read; past its own timeout the kit would
# print a line under the cell about a long recv(), which would only confuse here.
CLIENT_TIMEOUT = GRACE * 4


class Watch:
    """Wraps your handler to note when a run of it ended, and what it raised.

    ``ended`` is set when a run of the handler returns or raises, and cleared when the next
    run starts (or by :func:`checker_client`); ``error`` is what the latest failed run raised,
    kept until you set it back to None. One watch follows one run at a time: with several
    clients at once, ``ended`` says only that some run ended.
    """

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.error: BaseException | None = None

    def wrap(self, handler: Handler) -> Handler:
        """The handler to serve: yours, watched. What yours raises is noted on ``error`` and
        raised on, so websockets still closes the connection with 1011 as it would."""

        @functools.wraps(handler)
        async def watched(websocket: ServerConnection) -> None:
            self.ended.clear()
            try:
                await handler(websocket)
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.ended.set()

        return watched

    async def end(self, seconds: float = GRACE) -> bool:
        """Wait up to ``seconds`` for the handler to end; True if it did, False if it still
        runs (never a TimeoutError)."""
        return await in_time(seconds, self.ended.wait())


# Bounded waits that answer yes or no, for a checker to judge rather than raise.


async def in_time(seconds: float, awaitable: Awaitable[Any]) -> bool:
    """Await ``awaitable`` for at most ``seconds``; whether it finished in time.

    Late, it is cancelled and the answer is False, never a TimeoutError; what it returns is
    dropped, and an exception it raises in time is raised here.
    """
    try:
        await within(seconds, awaitable, lambda: "")
    except TimeoutError:
        return False
    return True


async def until(condition: Callable[[], bool], seconds: float = GRACE) -> bool:
    """Poll ``condition`` every few milliseconds until it holds or ``seconds`` pass; whether it
    came to hold (False, never a TimeoutError, if not). An exception it raises is raised here."""
    try:
        await wait_until(condition, seconds)
    except TimeoutError:
        return False
    return True


# Building and serving your handler.


def build(report: Report, make: Any, logic: dict[str, Any]) -> Handler | None:
    """Call your function with the values of ``logic``, in order, to get a handler.

    ``logic`` maps each argument's name (as the lesson's instructions call it) to what the
    checker passes in. When ``make`` is not such a function (the handler itself, something
    not callable, one that raises, one that returns no ``async def``), the answer is None and
    a failed line on ``report`` says what is wrong in plain words, calling the function by
    ``report``'s exercise; it never raises for that.
    """
    name = getattr(make, "__name__", repr(make))
    args = ", ".join(logic)
    if not callable(make):
        report.add(False, f"Pass the function that builds your handler; got {make!r}.")
        return None
    if inspect.iscoroutinefunction(make):
        report.add(
            False,
            f"{name} is a handler (async def); pass the function that builds one: "
            f"`def {report.exercise}({args}): async def handler(websocket): ... return handler`.",
        )
        return None
    try:
        handler = make(*logic.values())
    except Exception as exc:
        report.add(False, f"{name}({args}) raised {type(exc).__name__}: {exc}")
        return None
    if not inspect.iscoroutinefunction(handler):
        hint = " Did you forget `return handler`?" if handler is None else ""
        report.add(
            False,
            f"{name}({args}) should return an `async def handler(websocket)`; "
            f"it returned {handler!r}.{hint}",
        )
        return None
    built: Handler = handler
    return built


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, exercise: str, *logic: ScriptedLogic
) -> AsyncIterator[tuple[Server, Watch]]:
    """Serve ``handler`` under a new :class:`Watch`: ``async with serving(...) as (server,
    watch):``.

    The server is called ``check <exercise>`` and is quiet (a report says what went wrong,
    not a traceback under the cell). On the way out it is stopped, giving handlers
    ``GRACE / 2`` seconds, and each ``logic`` closes the coroutines your handler made but
    never awaited, so Python does not warn about them. Raises what :func:`serve` raises.
    """
    watch = Watch()
    # quiet: the report says what went wrong; no second account under the cell.
    server = await serve(watch.wrap(handler), name=f"check {exercise}", quiet=True)
    try:
        yield server, watch
    finally:
        await server.stop(timeout=GRACE / 2)
        for part in logic:
            part.close_unawaited()


async def open_client(server: Server, name: str) -> Client:
    """A client of the checker's, called ``name``."""
    return await connect(server, name=name, timeout=CLIENT_TIMEOUT)


@contextlib.asynccontextmanager
async def checker_client(server: Server, watch: Watch) -> AsyncIterator[Client]:
    """One client called ``checker`` for one run of the handler: ``async with
    checker_client(server, watch) as client:``; from now on ``watch.ended`` means that run
    ended. The client closes (normally, 1000) on the way out, if the handler has not closed
    it first. Raises what :func:`connect` raises: ServerStoppedError once the server has
    stopped.
    """
    watch.ended.clear()
    client = await open_client(server, "checker")
    try:
        yield client
    finally:
        await client.close()


# Talking to the handler.


async def send_all(client: Client, *messages: str) -> None:
    """Send ``messages`` in order, stopping quietly if the handler has closed the connection
    (what was not sent is dropped: see it in what ``client`` received, or its ``close_code``).
    A message websockets cannot send (neither str nor bytes) raises TypeError."""
    with contextlib.suppress(ConnectionClosed):
        for message in messages:
            await client.send(message)


async def receive(client: Client, seconds: float, most: int | None = None) -> list[Data]:
    """What ``client`` receives within ``seconds``: up to ``most`` messages (all, when None),
    fewer if the connection closes; often nothing, when that is the point.

    Returns as soon as ``most`` have come or the connection has closed (then
    ``client.close_code`` says how); never raises ConnectionClosed or TimeoutError.
    """
    heard: list[Data] = []
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(seconds):
            while most is None or len(heard) < most:
                heard.append(await client.recv())
    return heard


async def next_message(client: Client, seconds: float = GRACE) -> Data | None:
    """The next message ``client`` receives, or None if none comes within ``seconds`` or the
    connection closes first (``client.close_code`` tells the two apart)."""
    heard = await receive(client, seconds, most=1)
    return heard[0] if heard else None


def closed_by_server(client: Client) -> bool:
    """True if the server started the closing handshake (it sent its close frame first)."""
    return internals.closed_first_by_peer(client.protocol) is True


# Judging how it ended.


def new_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks running your code that started after ``before`` was taken and still run."""
    tasks = []
    for task in asyncio.all_tasks() - before:
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if not task.done() and code is not None and is_yours(code.co_filename):
            tasks.append(task)
    return tasks


async def check_nothing_left(
    report: Report, before: set[asyncio.Task[Any]], after: str, unreached: str | None = None
) -> None:
    """Add a line on whether tasks your handler started still run ``after`` something; cancel
    them. If they do, that fails whatever happened; if not, and ``unreached`` says why the
    moment ``after`` names never came, the check is not reached: nothing ran to leave behind."""
    await asyncio.sleep(0.05)  # let cancelled tasks finish cancelling
    left = new_tasks(before)
    if left:
        names = sorted(
            getattr(task.get_coro(), "__qualname__", "?").split(".")[-1] for task in left
        )
        report.add(
            False,
            f"{len(left)} task(s) your handler started still ran {after}: "
            f"{', '.join(names)}. Cancel them before the handler returns.",
        )
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=GRACE)
    elif unreached is not None:
        report.skip(f"Whether your handler left nothing running {after}", unreached)
    else:
        report.add(True, f"Nothing your handler started was left running {after}.")


RETURNED_EARLY = "your handler returned while the client was still there"


def not_over(early: bool, ended: bool) -> str | None:
    """Why what a handler left behind cannot be judged: it returned while the client was still
    there (``early``), or it had not ended (not ``ended``). None when it can."""
    if early:
        return RETURNED_EARLY
    if not ended:
        return "your handler had not ended"
    return None


def judge_end(report: Report, watch: Watch, ended: bool, when: str, *, early: bool = False) -> bool:
    """Add one line on how the handler ended, and return whether it passed.

    ``ended`` is what :meth:`Watch.end` answered; ``when`` ends the sentence ("after the
    client left"); ``early`` says the handler had already ended while the client was still
    there. It fails a handler that ended early (saying so if it raised), is still running, or
    raised (``watch.error``; a ConnectionClosed gets a hint), and passes one that ended quietly.
    """
    error = watch.error
    if early and error is not None:
        said = f": {error}" if str(error) else ""
        return report.add(
            False,
            f"Your handler raised {type(error).__name__} while the client was still there"
            f"{said}. It should keep serving until the client leaves.",
        )
    if early:
        return report.add(
            False,
            "Your handler returned while the client was still there: it should keep "
            "serving until the client leaves.",
        )
    if not ended:
        return report.add(False, f"Your handler was still running {GRACE:g} s {when}.")
    if error is not None:
        hint = ""
        if isinstance(error, ConnectionClosed):
            hint = " Catch websockets.exceptions.ConnectionClosed around send() and return."
        return report.add(
            False, f"Your handler raised {type(error).__name__} {when}: {error}.{hint}"
        )
    return report.add(True, f"Your handler ended quietly {when}.")


# Saying it in words.


def quote(messages: list[Any]) -> str:
    return "[" + ", ".join(repr(message) for message in messages) + "]"


def not_awaited(consume: ScriptedConsume) -> str:
    """A hint for calls of consume() never awaited; it only looks (they are closed later)."""
    missed = consume.unawaited()
    if not missed:
        return ""
    return (
        f" Your handler called consume() {missed} time(s) without awaiting it, so that "
        "work never ran: write `await consume(message)`."
    )
