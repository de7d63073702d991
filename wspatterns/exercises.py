"""Exercises: a checker runs your handler against scripted clients and says what is right and wrong.

Each pattern lesson ends with an exercise: you write a function that builds a
handler from the business logic it is given, the way the reference patterns
do, for example ``bye_consumer(consume)``. The checker passes in its own
``consume`` or ``produce``, serves your handler, drives it with clients, watches
what it does, and returns a :class:`Report`: one line per thing it checked, in
plain words. Every wait is bounded, so a checker ends even when a handler hangs.

    check_consumer(bye_consumer)

The exercise on Redis Streams is a client instead, ``follow(url, channel,
received)``: :func:`check_resuming_client` runs it against a server that
closes its connection and restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from .errors import is_yours
from .experiments import wait_until
from .flow import Flow
from .pubsub import hub_handler
from .redis_server import start_redis
from .runtime import Client, Server, connect, serve
from .streams import StreamHub

#: How long, in seconds, a handler may take to do what it should (end, close,
#: consume) before the checker calls it late. Generous: the checker must not
#: fail a right answer on a slow machine.
GRACE = 1.0


class Report:
    """What a checker found: one line per check, each passed or failed.

    ``bool(report)`` is True when every check passed; ``report.failures`` lists
    what did not. In a notebook it shows as a list of ✔ and ✘ lines.
    """

    def __init__(self, exercise: str) -> None:
        self.exercise = exercise
        self.lines: list[tuple[bool, str]] = []

    def add(self, ok: bool, text: str, otherwise: str | None = None) -> bool:
        """Add a line: ``text`` if ``ok`` (or if no ``otherwise`` is given), else ``otherwise``."""
        self.lines.append((ok, text if ok or otherwise is None else otherwise))
        return ok

    @property
    def failures(self) -> list[str]:
        return [text for ok, text in self.lines if not ok]

    @property
    def passed(self) -> bool:
        return bool(self.lines) and not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def headline(self) -> str:
        if self.passed:
            return f"{self.exercise}: all {len(self.lines)} checks passed."
        return f"{self.exercise}: {len(self.failures)} of {len(self.lines)} checks failed."

    def __repr__(self) -> str:
        lines = [self.headline()]
        lines += [f"  {'✔' if ok else '✘'} {text}" for ok, text in self.lines]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        items = "".join(
            f'<li style="list-style: none; color: {"#1a7f37" if ok else "#cf222e"}">'
            f"{'✔' if ok else '✘'} {html.escape(text)}</li>"
            for ok, text in self.lines
        )
        return (
            f'<div><b style="color: {colour}">{html.escape(self.headline())}</b>'
            f'<ul style="padding-left: 1em; margin: 0.3em 0">{items}</ul></div>'
        )


# The business logic a checker hands to your handler, watching how it is used.


class _Logic:
    """Business logic that counts its calls and keeps their coroutines until they finish."""

    calls = 0
    made: list[Coroutine] = []

    def start_over(self) -> None:
        _never_awaited(self)  # before forgetting them, so Python does not warn
        self.calls = 0
        self.made = []


class Consume(_Logic):
    """A ``consume(message)`` that notes what it was given, when, and how it was used.

    ``delay`` makes each call take that long; a message in ``fail_on`` makes
    the call raise ``ValueError``.
    """

    def __init__(self, delay: float = 0.0, fail_on: Iterable[str] = ()) -> None:
        self.delay = delay
        self.fail_on = set(fail_on)
        self.start_over()
        self.got: list[Any] = []  # the messages whose consume() ran, in the order it started
        self.done: list[Any] = []  # ... and in the order it finished
        self.running = 0
        self.most = 0  # the most consume() calls that ran at once
        self.cut = 0  # calls cancelled before they finished

    reset = __init__  # a new scenario, on the object the handler already holds

    def __call__(self, message: Any) -> Coroutine[Any, Any, None]:
        return _made(self, self._run(message))

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


class Produce(_Logic):
    """A ``produce()`` that returns ``messages`` one by one, then what ``then`` says.

    ``then`` is ``"wait"`` (wait for ever, as for news that never comes),
    ``"count"`` (go on with ``tick 4``, ``tick 5``... every ``delay`` seconds)
    or ``"none"`` (return None: nothing more to send).
    """

    def __init__(self, messages: Iterable[str] = (), then: str = "wait", delay: float = 0.0):
        self.messages = list(messages)
        self.then = then
        self.delay = delay
        self.start_over()

    reset = __init__  # a new scenario, on the object the handler already holds

    def __call__(self) -> Coroutine[Any, Any, str | None]:
        return _made(self, self._run(self.calls + 1))

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


def _made(logic: _Logic, coroutine: Coroutine) -> Coroutine:
    """Count a call, and keep its coroutine to tell later whether it was ever awaited."""
    logic.calls += 1
    logic.made.append(coroutine)
    return coroutine


def _never_awaited(logic: _Logic) -> int:
    """How many calls were never awaited; closes them, so Python does not warn about it."""
    idle = [made for made in logic.made if inspect.getcoroutinestate(made) == "CORO_CREATED"]
    for made in idle:
        made.close()
    logic.made = [made for made in logic.made if made.cr_frame is not None]
    return len(idle)


# Serving a handler under watch.


class Watch:
    """Serves your handler and notes when and how each of its runs ended."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.error: BaseException | None = None
        self.runs = 0

    def wrap(self, handler: Callable[[Any], Awaitable[None]]):
        @functools.wraps(handler)
        async def watched(websocket: Any) -> None:
            self.runs += 1
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
        """Wait up to ``seconds`` for the handler to end; True if it did."""
        return await _within(seconds, self.ended.wait())


async def _within(seconds: float, awaitable: Awaitable[Any]) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        return False
    return True


async def _until(condition: Callable[[], bool], seconds: float = GRACE) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass; whether it came to hold."""
    try:
        await wait_until(condition, seconds)
    except TimeoutError:
        return False
    return True


def _build(report: Report, make: Any, *logic: Any) -> Callable[[Any], Awaitable[None]] | None:
    """Call your function to get a handler; add a line saying what is wrong if it cannot."""
    name = getattr(make, "__name__", repr(make))
    args = ", ".join(type(part).__name__.lower() for part in logic if not isinstance(part, int))
    if any(isinstance(part, int) for part in logic):
        args += ", count"
    if not callable(make):
        report.add(False, f"Pass the function that builds your handler; got {make!r}.")
        return None
    if inspect.iscoroutinefunction(make):
        report.add(
            False,
            f"{name} is a handler (async def); pass the function that builds one: "
            f"`def {name}({args}):` defining `async def handler(websocket):` and returning it.",
        )
        return None
    try:
        handler = make(*logic)
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
    return handler


@contextlib.asynccontextmanager
async def _serving(handler: Callable[[Any], Awaitable[None]], exercise: str, *logic: _Logic):
    """Serve ``handler`` under watch; stop it, and cancel what it left behind, afterwards."""
    watch = Watch()
    server = await serve(watch.wrap(handler), name=f"check {exercise}")
    server._quiet = True  # the report says what went wrong; no second account under the cell
    try:
        yield server, watch
    finally:
        await server.stop(timeout=GRACE / 2)
        for part in logic:
            _never_awaited(part)


@contextlib.asynccontextmanager
async def _client(server: Server, watch: Watch):
    watch.ended.clear()  # from now on, "ended" means this client's run of the handler ended
    client = await connect(server, name="checker", timeout=GRACE * 3)
    try:
        yield client
    finally:
        await client.close()


async def _send(client: Client, *messages: str) -> None:
    """Send ``messages`` in order, stopping quietly if the handler has closed the connection."""
    with contextlib.suppress(ConnectionClosed):
        for message in messages:
            await client.send(message)


def _new_tasks(before: set[asyncio.Task]) -> list[asyncio.Task]:
    """Tasks running your code that started after ``before`` was taken and still run."""
    tasks = []
    for task in asyncio.all_tasks() - before:
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if not task.done() and code is not None and is_yours(code.co_filename):
            tasks.append(task)
    return tasks


async def _check_nothing_left(report: Report, before: set[asyncio.Task], after: str) -> None:
    await asyncio.sleep(0.05)  # let cancelled tasks finish cancelling
    left = _new_tasks(before)
    names = sorted(getattr(task.get_coro(), "__qualname__", "?").split(".")[-1] for task in left)
    report.add(
        not left,
        f"Nothing your handler started was left running {after}.",
        f"{len(left)} task(s) your handler started still ran {after}: "
        f"{', '.join(names)}. Cancel them before the handler returns.",
    )
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=GRACE)


def _ended(report: Report, watch: Watch, ended: bool, when: str, *, early: bool = False) -> bool:
    """Add a line on how the handler ended: not too soon, in time, and without raising."""
    error = watch.error
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


def _closed_by_server(client: Client) -> bool:
    """True if the server started the closing handshake (it sent its close frame first)."""
    protocol = client.protocol
    return protocol.close_rcvd is not None and (
        protocol.close_sent is None or protocol.close_rcvd_then_sent
    )


def _quote(messages: list[Any]) -> str:
    return "[" + ", ".join(repr(message) for message in messages) + "]"


def _not_awaited(consume: Consume) -> str:
    """A hint for calls of consume() never awaited; it only looks (they are closed later)."""
    missed = sum(inspect.getcoroutinestate(made) == "CORO_CREATED" for made in consume.made)
    if not missed:
        return ""
    return (
        f" Your handler called consume() {missed} time(s) without awaiting it, so that "
        "work never ran: write `await consume(message)`."
    )


# Lesson 01: the consumer.


async def check_consumer(bye_consumer: Callable[[Any], Any]) -> Report:
    """Check the exercise of lesson 01: a consumer that stops when the client says ``"bye"``.

    ``bye_consumer(consume)`` must return a handler that awaits
    ``consume(message)`` for each message, in order and one at a time, and ends
    when the client leaves or sends ``"bye"`` (which it does not consume); then
    the connection closes normally (code 1000).
    """
    report = Report("bye_consumer")
    consume = Consume()
    handler = _build(report, bye_consumer, consume)
    if handler is None:
        return report
    async with _serving(handler, "consumer", consume) as (server, watch):
        # 1. Every message, in order; 2. the end of the loop when the client leaves.
        before = asyncio.all_tasks()
        sent = ["one", "two", "three"]
        async with _client(server, watch) as client:
            await _send(client, *sent)
            await _until(lambda: len(consume.done) >= len(sent) or watch.ended.is_set())
            early = watch.ended.is_set()
        report.add(
            consume.done == sent,
            f"consume() got every message, in order: {_quote(sent)}.",
            f"consume() got {_quote(consume.done)}; the client sent {_quote(sent)}."
            + _not_awaited(consume),
        )
        _ended(report, watch, await watch.end(), "after the client left", early=early)
        await _check_nothing_left(report, before, "after the client left")

        # 3. One message at a time: a slow consume() is waited for before the next.
        consume.reset(delay=0.1)
        async with _client(server, watch) as client:
            await _send(client, "a", "b", "c")
            await _until(
                lambda: (
                    len(consume.done) >= 3
                    or consume.calls > len(consume.got)
                    or watch.ended.is_set()
                )
            )
        if consume.most > 1:
            report.add(
                False,
                f"{consume.most} consume() calls ran at the same time: await each one "
                "before reading the next message (a task per message loses the order, and "
                "the backpressure that keeps a fast client from flooding the server).",
            )
        else:
            report.add(
                consume.done == ["a", "b", "c"],
                "A slow consume() ran one message at a time, each awaited before the next.",
                f"With a slow consume(), it got {_quote(consume.done)} of 'a', 'b', 'c'.",
            )
        await watch.end()

        # 4. "bye": not consumed; the handler returns and the connection closes normally.
        consume.reset()
        async with _client(server, watch) as client:
            await _send(client, "hello", "bye", "after")
            closed = await _within(GRACE * 2, client.wait_closed(timeout=None))
            by_server, code = _closed_by_server(client), client.close_code
        await _until(lambda: len(consume.done) >= 1)
        report.add(
            consume.done == ["hello"],
            "consume() got what came before 'bye', and neither 'bye' nor what came after.",
            f"After the client sent 'hello', 'bye', 'after', consume() got "
            f"{_quote(consume.done)}; it should get ['hello'] only.",
        )
        if consume.done != ["hello"]:
            pass  # how it closed says little when what came before it went wrong
        elif not closed or not by_server:
            report.add(
                False,
                f"The connection was still open {GRACE * 2:g} s after the client said 'bye': "
                "return from the handler (or `await websocket.close()`) when the message is "
                "'bye'.",
            )
        else:
            report.add(
                code == 1000,
                "After 'bye' the server closed the connection normally (code 1000).",
                f"After 'bye' the server closed the connection with code {code}"
                + (": your handler raised an error." if code == 1011 else ", not 1000."),
            )
    return report


# Lesson 02: the producer.


async def check_producer(finite_producer: Callable[[Any], Any]) -> Report:
    """Check the exercise of lesson 02: a producer that stops when there is nothing left.

    ``finite_producer(produce)`` must return a handler that sends what
    ``await produce()`` returns until it returns None, then ends (websockets then
    closes the connection normally), and ends quietly if the client leaves first.
    """
    report = Report("finite_producer")
    produce = Produce(["a", "b", "c"], then="none")
    handler = _build(report, finite_producer, produce)
    if handler is None:
        return report
    async with _serving(handler, "producer", produce) as (server, watch):
        # 1. Everything produce() returns, then a normal close when it returns None.
        before = asyncio.all_tasks()
        received: list[Any] = []
        async with _client(server, watch) as client:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while len(received) < 5:
                    received.append(await client.recv())
            closed = await _within(GRACE * 2, client.wait_closed(timeout=None))
            by_server, code = _closed_by_server(client), client.close_code
        report.add(
            received == ["a", "b", "c"],
            "The client received every message produce() returned, in order: ['a', 'b', 'c'].",
            f"The client received {_quote(received)}; produce() returned 'a', 'b', 'c', "
            "then None, which means: nothing more to send.",
        )
        if received[:3] != ["a", "b", "c"]:
            pass  # how it closed says little when what came before it went wrong
        elif closed and by_server and code == 1000:
            report.add(True, "When produce() returned None, the connection closed normally (1000).")
        elif closed and by_server:
            report.add(
                False,
                f"When produce() returned None, the server closed the connection with code "
                f"{code}" + (f": your handler raised {type(watch.error).__name__}: "
                             f"{watch.error}." if watch.error else "."),
            )  # fmt: skip
        else:
            report.add(
                False,
                f"The connection was still open {GRACE * 2:g} s after produce() returned None: "
                "stop when the message is None (`if message is None: break`).",
            )
        await watch.end()
        await _check_nothing_left(report, before, "after the connection closed")

        # 2. The client leaves while there is more to send: the handler ends quietly.
        produce.reset([], then="count", delay=0.02)
        watch.error = None
        before = asyncio.all_tasks()
        async with _client(server, watch) as client:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                for _ in range(3):
                    await client.recv()
            early = watch.ended.is_set()
        left_at = produce.calls
        _ended(report, watch, await watch.end(), "after the client left", early=early)
        extra = produce.calls - left_at
        if not early:
            report.add(
                extra <= 2,
                "After the client left, produce() was not asked for more.",
                f"After the client left, your handler asked produce() for {extra} more "
                "messages: stop at the first ConnectionClosed.",
            )
        await _check_nothing_left(report, before, "after the client left")
    return report


# Lesson 03: consumer and producer together.


async def check_consumer_and_producer(consumer_and_producer: Callable[[Any, Any], Any]) -> Report:
    """Check the exercise of lesson 03: consume and produce at once, and leave nothing behind.

    ``consumer_and_producer(consume, produce)`` must return a handler that runs
    a consumer and a producer at the same time; ends when the client leaves
    (even while produce() waits for news), when produce() returns None, or when
    consume() raises; lets that error reach the server; and leaves no task running.
    """
    report = Report("consumer_and_producer")
    consume, produce = Consume(fail_on=["boom"]), Produce(["news 1", "news 2"], then="wait")
    handler = _build(report, consumer_and_producer, consume, produce)
    if handler is None:
        return report
    async with _serving(handler, "consumer and producer", consume, produce) as (server, watch):
        # 1. Both at once: news arrives while the handler consumes.
        before = asyncio.all_tasks()
        received: list[Any] = []
        async with _client(server, watch) as client:
            await _send(client, "hi")
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                async with asyncio.timeout(GRACE * 2):
                    while len(received) < 2:
                        received.append(await client.recv())
            await _until(lambda: consume.done == ["hi"] or watch.ended.is_set())
            early = watch.ended.is_set()
        both = received == ["news 1", "news 2"] and consume.done == ["hi"]
        if both:
            report.add(True, "It consumed and produced at the same time.")
        elif consume.done == ["hi"]:
            report.add(
                False,
                f"While the client was there it received {_quote(received)} instead of "
                "['news 1', 'news 2']: run the consumer and the producer as two tasks, "
                "side by side.",
            )
        else:
            report.add(
                False,
                f"consume() got {_quote(consume.done)} instead of ['hi'] while the client "
                "was there." + _not_awaited(consume),
            )
        # 2. The client left while produce() waits for news.
        ended = await watch.end()
        _ended(report, watch, ended, "after the client left (produce() was waiting)", early=early)
        await _check_nothing_left(report, before, "after the client left")

        # 3. produce() has nothing more: the connection closes.
        consume.reset(fail_on=["boom"])
        produce.reset(["last news"], then="none")
        watch.error = None
        before = asyncio.all_tasks()
        async with _client(server, watch) as client:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await client.recv()
            closed = await _within(GRACE * 2, client.wait_closed(timeout=None))
        if produce.calls >= 2:  # it returned "last news", then None
            report.add(
                closed and watch.ended.is_set(),
                "When produce() returned None, the handler ended and the connection closed.",
                f"The connection was still open {GRACE * 2:g} s after produce() returned "
                "None: when one task finishes, cancel the other.",
            )
        await watch.end()
        await _check_nothing_left(report, before, "after produce() returned None")

        # 4. consume() raises: the error reaches the server.
        consume.reset(fail_on=["boom"])
        produce.reset([], then="wait")
        watch.error = None
        before = asyncio.all_tasks()
        async with _client(server, watch) as client:
            await _send(client, "boom")
            await _within(GRACE * 2, client.wait_closed(timeout=None))
        ended = await watch.end()
        raised = isinstance(watch.error, ValueError)
        if not consume.got:
            pass  # consume() never ran, so it never raised
        elif raised:
            report.add(True, "An error in consume() reached the server (it raised ValueError).")
        elif not ended:
            report.add(False, f"consume() raised, but your handler still ran {GRACE:g} s later.")
        else:
            report.add(
                False,
                "consume() raised ValueError, but your handler returned without it: the "
                "error was lost. Call `.result()` on the task that finished, to raise it.",
            )
        await _check_nothing_left(report, before, "after consume() raised")
    return report


# Lesson 03b: multiple consumers.


async def check_workers(dropping_workers: Callable[[Any, int], Any]) -> Report:
    """Check the exercise of lesson 03b: workers that drop the backlog when the client leaves.

    ``dropping_workers(consume, count)`` must return a handler in which
    ``count`` workers consume messages side by side; when the client leaves,
    each worker finishes the message it holds, what is still queued is
    dropped, and the handler returns leaving no task running.
    """
    report = Report("dropping_workers")
    count = 3
    consume = Consume(delay=0.2)
    handler = _build(report, dropping_workers, consume, count)
    if handler is None:
        return report
    async with _serving(handler, "workers", consume) as (server, watch):
        # 1. count workers at once, no more, and every message consumed.
        sent = [f"job {number}" for number in range(1, 7)]
        async with _client(server, watch) as client:
            await _send(client, *sent)
            await _until(lambda: len(consume.done) >= len(sent) or watch.ended.is_set(), GRACE * 3)
        if sorted(consume.done) != sorted(sent):
            report.add(
                False,
                f"With the client connected, consume() finished {len(consume.done)} of "
                f"{len(sent)} messages." + _not_awaited(consume),
            )
        else:
            report.add(True, "With the client connected, every message was consumed.")
        report.add(
            consume.most == count,
            f"{count} workers consumed side by side, never more.",
            f"At most {consume.most} consume() call(s) ran at once; with count={count} "
            f"there should be {count}.",
        )
        await watch.end()

        # 2. The client leaves with a backlog: finish what is in hand, drop the rest.
        consume.reset(delay=0.3)
        watch.error = None
        before = asyncio.all_tasks()
        async with _client(server, watch) as client:
            await _send(client, *(f"job {number}" for number in range(1, 11)))
            in_hand = await _until(lambda: consume.running >= count or watch.ended.is_set())
            in_hand = consume.running >= count
            early = watch.ended.is_set()
        _ended(report, watch, await watch.end(GRACE + 0.3), "after the client left", early=early)
        if not in_hand:  # no backlog to drop: the first part says why
            await _check_nothing_left(report, before, "after the client left")
            return report
        report.add(
            consume.cut == 0,
            "Each worker finished the message it held when the client left.",
            f"{consume.cut} message(s) were cut off in the middle of consume(): "
            "let each worker finish the message it holds.",
        )
        started_after = len(consume.got) - count
        report.add(
            started_after <= 0,
            "What was still queued when the client left was dropped.",
            f"After the client left, {started_after} queued message(s) were still "
            "consumed: drop what is queued (empty the queue) once the client is gone.",
        )
        await _check_nothing_left(report, before, "after the client left")
    return report


# Lesson 04: registration and broadcast.


async def _hears(client: Client, seconds: float) -> list[Any]:
    """What ``client`` receives within ``seconds``: nothing, usually, when that is the point."""
    heard: list[Any] = []
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                heard.append(await client.recv())
    return heard


async def _next(client: Client) -> Any:
    """The next message ``client`` receives, or None if none comes in time."""
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(GRACE):
            return await client.recv()
    return None


class _Abandoned(Exception):
    """The rest of a check cannot run: the handler already ended every connection."""


async def check_chat_room(chat_room: Callable[[set], Any]) -> Report:
    """Check the exercise of lesson 04: a chat room that announces who comes and goes.

    ``chat_room(connected)`` must return a handler that reads the client's name
    (its first message), tells everyone else ``"NAME joined"``, relays each
    later message as ``"NAME: message"`` to everyone else, and when the client
    leaves, however it leaves, removes it from ``connected`` and tells the others
    ``"NAME left"``, without sending anything to connections that are gone.
    """
    report = Report("chat_room")
    connected: set = set()
    handler = _build(report, chat_room, connected)
    if handler is None:
        return report
    quiet = GRACE / 5  # how long to listen for a message that should not come
    async with _serving(handler, "chat room") as (server, watch):
        before = asyncio.all_tasks()
        alice = await connect(server, name="alice", timeout=GRACE * 3)
        bob = await connect(server, name="bob", timeout=GRACE * 3)
        try:
            await _send(alice, "alice")
            await _until(lambda: len(connected) >= 1)
            await _send(bob, "bob")
            told = await _next(alice)
            if alice.close_code is not None or bob.close_code is not None:
                report.add(
                    False,
                    "Your handler closed the connections as soon as the clients said their "
                    "names: it should serve each client until it leaves.",
                )
                raise _Abandoned
            report.add(
                told == "bob joined",
                "When bob joined, alice was told 'bob joined'.",
                f"When bob joined, alice was told {told!r} instead of 'bob joined'.",
            )
            echoed = await _hears(bob, quiet)
            report.add(
                not echoed,
                "bob was not told about himself.",
                f"bob received {_quote(echoed)}: tell everyone *else* who joined.",
            )
            registered = await _until(lambda: len(connected) == 2)
            report.add(
                registered,
                "Both connections were in `connected` while they were there.",
                f"With alice and bob connected, `connected` held {len(connected)} "
                "connection(s) instead of 2.",
            )

            await _send(bob, "hi")
            relayed = await _next(alice)
            heard_back = await _hears(bob, quiet)
            report.add(
                relayed == "bob: hi" and not heard_back,
                "bob's message reached alice as 'bob: hi', and not bob himself.",
                f"bob sent 'hi'; alice received {relayed!r}"
                + (" instead of 'bob: hi'" if relayed != "bob: hi" else "")
                + (f", and bob heard {_quote(heard_back)} back." if heard_back else "."),
            )

            # carol's connection drops without a closing handshake.
            carol = await connect(server, name="carol", timeout=GRACE * 3)
            await _send(carol, "carol")
            await _next(alice), await _next(bob)  # "carol joined"
            await _until(lambda: len(connected) == 3)
            carol.transport.abort()
            gone = await _until(lambda: len(connected) == 2)
            heard = [await _next(alice), await _next(bob)]
            if gone and heard == ["carol left", "carol left"]:
                report.add(True, "When carol's connection dropped, she was unregistered and "
                                 "alice and bob were told 'carol left'.")  # fmt: skip
            else:
                report.add(
                    False,
                    f"After carol's connection dropped, `connected` held {len(connected)} "
                    f"connection(s) and alice and bob heard {_quote(heard)}: unregister and "
                    "announce in a `finally:` block, so it happens however the client leaves.",
                )

            await bob.close()
            told = await _next(alice)
            await _until(lambda: len(connected) == 1)
            report.add(
                told == "bob left" and len(connected) == 1,
                "When bob left, alice was told 'bob left' and bob was unregistered.",
                f"When bob left, alice was told {told!r} and `connected` held "
                f"{len(connected)} connection(s).",
            )
            await _send(alice, "anyone?")
            await _hears(alice, quiet)
        except _Abandoned:
            pass
        finally:
            for client in (alice, bob):
                await client.close()
        await _until(lambda: not connected)
        # A dropped connection ends its own handler with ConnectionClosedError: that one is
        # expected. Anything else went wrong while sending or announcing.
        problems = [
            error
            for error in server.errors
            if not (error.connection == "carol" and isinstance(error.exception, ConnectionClosed))
        ]
        if problems:
            first = problems[0]
            hint = (
                " It sent to a connection that had already left: remove the connection "
                "from `connected` before telling the others (or use broadcast(), which "
                "skips connections that are not open)."
                if isinstance(first.exception, ConnectionClosed)
                else ""
            )
            report.add(
                False,
                f"{first.connection}'s handler raised {type(first.exception).__name__}: "
                f"{first.exception}.{hint}",
            )
        else:
            report.add(True, "No handler raised: nothing was sent to a connection that had left.")
        report.add(
            not connected,
            "Once everyone had left, `connected` was empty.",
            f"Once everyone had left, `connected` still held {len(connected)} connection(s).",
        )
        await _check_nothing_left(report, before, "after everyone left")
    return report


# Redis Streams: a client that comes back and catches up.

_FEED = "numbers"  # the channel check_resuming_client publishes on
_PACE = 0.02  # seconds between two of its messages
_BACK = GRACE * 6  # how long a client may take to come back after a restart: websockets'
# own `async for websocket in connect(url)` waits up to 5 s after a refused connection


class _HubServer:
    """A hub server the checker can cut a connection of, keep new ones waiting, and restart."""

    def __init__(self, hub: StreamHub) -> None:
        self.handler = hub_handler(hub)
        self.flow = Flow()  # one for both runs of the server
        self.door = asyncio.Event()  # while clear, a new connection waits to be served
        self.door.set()
        self.connections = 0
        self.server: Server | None = None

    async def start(self, port: int = 0) -> Server:
        async def hub_server(websocket: Any) -> None:
            self.connections += 1
            await self.door.wait()
            await self.handler(websocket)

        self.server = await serve(hub_server, name="check follow", port=port, flow=self.flow)
        self.server._quiet = True  # the report says what went wrong
        return self.server

    async def cut(self) -> None:
        """Close every connection as a server about to restart would (1012), and keep the door."""
        assert self.server is not None
        self.door.clear()
        for websocket in self.server.connections:
            await _within(GRACE, websocket.close(CloseCode.SERVICE_RESTART, "service restart"))

    async def restart(self, meanwhile: Callable[[], Awaitable[None]]) -> None:
        """Stop; await ``meanwhile()`` while connecting is refused; start again on the same port."""
        assert self.server is not None
        port = self.server.port
        await self.stop()
        await meanwhile()
        await self.start(port)

    async def stop(self) -> None:
        self.door.set()
        if self.server is not None:
            await self.server.stop(timeout=GRACE / 2)

    def errors_sent(self) -> list[str]:
        """The errors the server answered to the client, in the protocol's {"error": ...}."""
        sent = [
            event.head.decode(errors="replace")
            for event in self.flow.events
            if event.kind == "message" and event.at == "server" and event.sender == "server"
        ]
        return list(dict.fromkeys(text for text in sent if text.startswith('{"error"')))


class _ResumingCheck:
    """One run of check_resuming_client: publish, cut, restart, and note what follow() did."""

    def __init__(self, report: Report, follow: Callable[..., Any], hub: StreamHub) -> None:
        self.report, self.follow, self.hub = report, follow, hub
        self.server = _HubServer(hub)
        self.received: list[Any] = []
        self.published: list[int] = []
        self.away: list[int] = []  # published while follow() was not subscribed
        self.lost_at: str | None = None  # where it did not come back, if it did not
        self.due = 0  # how many of the published messages it should have received
        self.task: asyncio.Task  # follow(), once run() has started it

    async def run(self) -> None:
        server = await self.server.start()
        self.task = asyncio.create_task(self.follow(server.url, _FEED, self.received))
        try:
            await self.story()
        finally:
            running = not self.task.done()
            stopped = await self.cancel()
            await self.server.stop()
        self.say_how_it_ended(running, stopped)
        self.say_what_it_received()

    async def story(self) -> None:
        if not await self.subscribed("start", GRACE * 3):
            return
        await self.publish(range(1, 11))
        await self.heard(10)
        # 1. The server closes the connection (1012), and publishes before letting it back.
        await self.server.cut()
        await _until(lambda: self.hub.subscribers(_FEED) == 0)
        await self.publish(range(11, 16), away=True)
        self.server.door.set()
        if not await self.subscribed("cut", GRACE * 3):
            return
        await self.publish(range(16, 23))
        await self.heard(22)
        # 2. The server restarts, publishing while connecting is refused.
        await self.server.restart(lambda: self.publish(range(23, 27), away=True))
        if not await self.subscribed("restart", _BACK):
            return
        await self.publish(range(27, 31))
        await self.heard(30)

    async def publish(self, numbers: Iterable[int], *, away: bool = False) -> None:
        for number in numbers:
            await self.hub.publish(_FEED, str(number))
            self.published.append(number)
            if away:
                self.away.append(number)
            await asyncio.sleep(_PACE)

    async def subscribed(self, after: str, seconds: float) -> bool:
        """Wait until follow() is subscribed; note where it was lost if it does not come."""
        await _until(lambda: self.hub.subscribers(_FEED) > 0 or self.task.done(), seconds)
        if self.hub.subscribers(_FEED) > 0:
            self.due = len(self.published)
            return True
        self.lost_at = after
        return False

    async def heard(self, number: int) -> None:
        await _until(lambda: str(number) in self.received or self.task.done())
        self.due = len(self.published)

    async def cancel(self) -> bool:
        """Cancel follow(); whether it ended within GRACE."""
        self.task.cancel()
        await asyncio.wait([self.task], timeout=GRACE)
        if self.task.done() and not self.task.cancelled():
            self.task.exception()  # retrieved: the report tells it
        return self.task.done()

    def say_how_it_ended(self, running: bool, stopped: bool) -> None:
        if not running:
            error = None if self.task.cancelled() else self.task.exception()
            if error is None:
                self.report.add(
                    False,
                    f"follow() returned after receiving {len(self.received)} message(s): "
                    "it should run until it is cancelled.",
                )
            else:
                why = str(error).rstrip(".")
                self.report.add(
                    False, f"follow() raised {type(error).__name__}: {why}{_hint(error)}"
                )
        self.report.add(
            self.lost_at is None,
            "follow() came back after both disconnections: a close with 1012 (service "
            "restart), and a server restart that refused connections for a moment.",
            self.where_it_was_lost(),
        )
        if running:
            self.report.add(
                stopped,
                "follow() stopped when it was cancelled.",
                f"follow() was still running {GRACE:g} s after it was cancelled: let "
                "asyncio.CancelledError through (catch Exception, not BaseException).",
            )

    def where_it_was_lost(self) -> str:
        if self.lost_at == "start":
            return (
                f"follow() did not subscribe to {_FEED!r} within {GRACE * 3:g} s: connect "
                f'to the url and send {{"action": "subscribe", "channel": "{_FEED}"}}.'
            )
        if self.lost_at == "cut" and self.server.connections > 1:
            return (
                "follow() connected again after the server closed its connection, but did "
                "not subscribe: subscribe on every new connection."
            )
        if self.lost_at == "cut":
            return (
                "follow() stopped after the first disconnection (the server closed the "
                "connection with 1012, service restart): reconnect whenever the connection "
                "closes."
            )
        within = "" if self.task.done() else f" within {_BACK:g} s"
        return (
            f"follow() did not come back{within} after the server restarted: while the "
            "connection is refused, wait a moment and try again."
        )

    def say_what_it_received(self) -> None:
        if self.lost_at == "start":
            return
        known = {str(number) for number in self.published}
        texts = [item for item in self.received if isinstance(item, str) and item in known]
        if len(texts) < len(self.received):
            stranger = next(item for item in self.received if item not in texts)
            self.report.add(
                False,
                f"received holds {stranger!r}, which is not one of the messages: append "
                'the "message" of each delivery, the text alone.',
            )
        due = [str(number) for number in self.published[: self.due]]
        missing = [int(text) for text in due if text not in texts]
        if not missing:
            while_there = "" if self.lost_at is None else " published while it was there"
            self.report.add(True, f"received all {len(due)} messages{while_there}.")
        elif set(missing) <= set(self.away):
            self.report.add(
                False,
                f"missed {len(missing)} messages, published while you were away "
                f'({_numbers(missing)}): subscribe again with "since", the id of the last '
                "message you got.",
            )
        else:
            self.report.add(
                False, f"missed {len(missing)} of {len(due)} messages ({_numbers(missing)})."
            )
        twice = sorted(int(text) for text, count in Counter(texts).items() if count > 1)
        self.report.add(
            not twice,
            "received no message twice.",
            f"received {len(twice)} messages more than once ({_numbers(twice)}): "
            '"since" must be the id of the LAST message you got.',
        )
        for error in self.server.errors_sent():
            self.report.add(False, f"The server answered {error}")


def _numbers(numbers: list[int], most: int = 6) -> str:
    shown = ", ".join(str(number) for number in numbers[:most])
    return shown + (", ..." if len(numbers) > most else "")


def _hint(error: BaseException) -> str:
    if isinstance(error, ConnectionClosed):
        return ". Catch websockets.exceptions.ConnectionClosed, and connect again."
    if isinstance(error, OSError):
        return (
            ". The server was restarting: catch OSError (ConnectionRefusedError is one), "
            "wait a moment, and connect again."
        )
    return "."


async def check_resuming_client(follow: Callable[[str, str, list], Awaitable[None]]) -> Report:
    """Check the exercise on Redis Streams: a client that comes back and misses nothing.

    ``follow(url, channel, received)`` must connect to the hub server at ``url``,
    subscribe to ``channel``, append the ``"message"`` of each delivery to
    ``received``, and whenever the connection drops connect again (trying again
    while it is refused) and subscribe with ``"since"``, the ``"id"`` of the last
    message it got; it runs until cancelled. The checker starts its own Redis and
    server, publishes 30 numbered messages, closes the connection once (1012,
    service restart) and restarts the server once, publishing while follow() is
    away; then it cancels follow().
    """
    report = Report("follow")
    if not inspect.iscoroutinefunction(follow):
        report.add(False, f"Pass your `async def follow(url, channel, received)`; got {follow!r}.")
        return report
    redis_server = start_redis()
    try:
        async with StreamHub(redis_server.url, name="checker") as hub:
            await _ResumingCheck(report, follow, hub).run()
    finally:
        redis_server.stop()
    return report
