"""The checkers pass the solutions beside the lessons and fail wrong answers, saying why."""

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.server import broadcast
from websockets.exceptions import ConnectionClosed

from wspatterns import connect, exercises

SOLUTIONS = Path(__file__).parent.parent / "notebooks" / "solutions"


def solution(name):
    """The function a solution file defines, loaded as %load would run it."""
    path = next(SOLUTIONS.glob(f"*_{name}.py"))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def fails(report, *phrases):
    """True if the report failed, and its failures say each of ``phrases``."""
    text = "\n".join(report.failures)
    return not report and all(phrase in text for phrase in phrases)


# Lesson 01: bye_consumer


def guide_consumer(consume):  # the guide's consumer: never stops at "bye"
    async def handler(websocket):
        async for message in websocket:
            await consume(message)

    return handler


def ignores_after_bye(consume):  # stops consuming, but keeps the connection open
    async def handler(websocket):
        listening = True
        async for message in websocket:
            if message == "bye":
                listening = False
            if listening:
                await consume(message)

    return handler


def consumes_bye_too(consume):
    async def handler(websocket):
        async for message in websocket:
            await consume(message)
            if message == "bye":
                break

    return handler


def task_per_message(consume):
    async def handler(websocket):
        async for message in websocket:
            if message == "bye":
                break
            asyncio.create_task(consume(message))  # noqa: RUF006 - the mistake under test

    return handler


def forgets_await(consume):
    async def handler(websocket):
        async for message in websocket:
            if message == "bye":
                break
            consume(message)

    return handler


def not_a_factory(websocket):  # the handler itself, not the function that builds it
    return None


async def a_handler(websocket):
    pass


async def test_check_consumer_passes_the_solution():
    report = await exercises.check_consumer(solution("bye_consumer"))
    assert report, report


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (guide_consumer, ["consume() got ['hello', 'bye', 'after']; it should get ['hello'] only"]),
        (ignores_after_bye, ["still open 2 s after the client said 'bye'"]),
        (consumes_bye_too, ["consume() got ['hello', 'bye']"]),
        (task_per_message, ["3 consume() calls ran at the same time"]),
        (forgets_await, ["consume() got []", "called consume() 3 time(s) without awaiting"]),
        (a_handler, ["a_handler is a handler (async def)"]),
        (not_a_factory, ["it returned None. Did you forget `return handler`?"]),
    ],
)
async def test_check_consumer_says_what_is_wrong(wrong, phrases):
    report = await exercises.check_consumer(wrong)
    assert fails(report, *phrases), report


# Lesson 02: finite_producer


def guide_producer(produce):  # the guide's older producer: sends None, lets ConnectionClosed out
    async def handler(websocket):
        while True:
            message = await produce()
            await websocket.send(message)

    return handler


def never_stops(produce):
    async def handler(websocket):
        while True:
            message = await produce()
            if message is None:
                break
            try:
                await websocket.send(message)
            except ConnectionClosed:
                continue  # the mistake: keeps producing for nobody

    return handler


def ignores_none(produce):
    async def handler(websocket):
        while True:
            message = await produce()
            try:
                await websocket.send(str(message))
            except ConnectionClosed:
                break

    return handler


async def test_check_producer_passes_the_solution():
    report = await exercises.check_producer(solution("finite_producer"))
    assert report, report


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (guide_producer, ["closed the connection with code 1011", "raised ConnectionClosedOK"]),
        (never_stops, ["still running 1 s after the client left"]),
        (ignores_none, ["The client received ['a', 'b', 'c', 'None'"]),
    ],
)
async def test_check_producer_says_what_is_wrong(wrong, phrases):
    report = await exercises.check_producer(wrong)
    assert fails(report, *phrases), report


# Lesson 03: consumer_and_producer


def _halves(consume, produce):
    async def consumer_handler(websocket):
        async for message in websocket:
            await consume(message)

    async def producer_handler(websocket):
        while (message := await produce()) is not None:
            try:
                await websocket.send(message)
            except ConnectionClosed:
                break

    return consumer_handler, producer_handler


def with_gather(consume, produce):  # the guide's first attempt: the survivor is never cancelled
    consumer_handler, producer_handler = _halves(consume, produce)

    async def handler(websocket):
        await asyncio.gather(consumer_handler(websocket), producer_handler(websocket))

    return handler


def loses_errors(consume, produce):  # cancels the survivor, but never looks at the finished task
    consumer_handler, producer_handler = _halves(consume, produce)

    async def handler(websocket):
        tasks = [
            asyncio.create_task(consumer_handler(websocket)),
            asyncio.create_task(producer_handler(websocket)),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            task.exception()  # retrieved, so asyncio does not log it either: truly lost

    return handler


def one_after_the_other(consume, produce):
    consumer_handler, producer_handler = _halves(consume, produce)

    async def handler(websocket):
        await consumer_handler(websocket)
        await producer_handler(websocket)

    return handler


async def test_check_consumer_and_producer_passes_the_solution():
    report = await exercises.check_consumer_and_producer(solution("consumer_and_producer"))
    assert report, report


def with_a_task_group(consume, produce):  # the lesson's last handler: right too
    consumer_handler, producer_handler = _halves(consume, produce)

    async def handler(websocket):
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(consumer_handler(websocket)),
                group.create_task(producer_handler(websocket)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()

    return handler


def swallows_the_group(consume, produce):  # a TaskGroup, and the error caught and dropped
    right = with_a_task_group(consume, produce)

    async def handler(websocket):
        try:
            await right(websocket)
        except* ValueError:
            pass

    return handler


async def test_check_consumer_and_producer_takes_the_error_inside_an_exception_group():
    report = await exercises.check_consumer_and_producer(with_a_task_group)
    assert report, report
    assert "it raised ValueError, inside an ExceptionGroup" in repr(report)


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (with_gather, ["still running 1 s after the client left", "task(s) your handler"]),
        (loses_errors, ["the error was lost"]),
        (one_after_the_other, ["run the consumer and the producer as two tasks"]),
        (swallows_the_group, ["the error was lost"]),
    ],
)
async def test_check_consumer_and_producer_says_what_is_wrong(wrong, phrases):
    report = await exercises.check_consumer_and_producer(wrong)
    assert fails(report, *phrases), report


# Lesson 03b: dropping_workers


def finishes_the_backlog(consume, count):  # the lesson's workers: right there, wrong here
    from wspatterns.patterns import multiple_consumers as workers

    return workers(consume, count)


def cancels_at_once(consume, count):
    async def handler(websocket):
        queue = asyncio.Queue()

        async def worker():
            while True:
                await consume(await queue.get())

        team = [asyncio.create_task(worker()) for _ in range(count)]
        try:
            async for message in websocket:
                queue.put_nowait(message)
        finally:
            for task in team:
                task.cancel()

    return handler


def one_worker(consume, count):
    async def handler(websocket):
        async for message in websocket:
            await consume(message)

    return handler


def leaves_workers(consume, count):
    async def handler(websocket):
        queue = asyncio.Queue()

        async def worker():
            while True:
                await consume(await queue.get())

        for _ in range(count):
            asyncio.create_task(worker())  # noqa: RUF006 - the mistake under test
        async for message in websocket:
            queue.put_nowait(message)
        while not queue.empty():
            queue.get_nowait()

    return handler


async def test_check_workers_passes_the_solution():
    report = await exercises.check_workers(solution("dropping_workers"))
    assert report, report


def cleans_up_after_the_loop(consume, count):  # right when the client closes, not on a drop
    async def handler(websocket):
        queue = asyncio.Queue()

        async def worker():
            while True:
                message = await queue.get()
                try:
                    await consume(message)
                finally:
                    queue.task_done()

        async with asyncio.TaskGroup() as group:
            team = [group.create_task(worker()) for _ in range(count)]
            async for message in websocket:
                queue.put_nowait(message)
            while not queue.empty():
                queue.get_nowait()
                queue.task_done()
            await queue.join()
            for task in team:
                task.cancel()

    return handler


def drains_a_bounded_queue(consume, count):  # drops its queue, not what websockets holds
    async def handler(websocket):
        queue = asyncio.Queue(count)

        async def worker():
            while True:
                message = await queue.get()
                try:
                    await consume(message)
                finally:
                    queue.task_done()

        async with asyncio.TaskGroup() as group:
            team = [group.create_task(worker()) for _ in range(count)]
            try:
                async for message in websocket:
                    await queue.put(message)
            finally:
                while not queue.empty():
                    queue.get_nowait()
                    queue.task_done()
                await queue.join()
                for task in team:
                    task.cancel()

    return handler


async def test_check_workers_passes_an_unbounded_queue_emptied_in_finally():
    report = await exercises.check_workers(drops_the_queue_in_finally)
    assert report, report


def drops_the_queue_in_finally(consume, count):  # the lesson's first solution: right too
    async def handler(websocket):
        queue = asyncio.Queue()

        async def worker():
            while True:
                message = await queue.get()
                try:
                    await consume(message)
                finally:
                    queue.task_done()

        async with asyncio.TaskGroup() as group:
            team = [group.create_task(worker()) for _ in range(count)]
            try:
                async for message in websocket:
                    queue.put_nowait(message)
            finally:
                while not queue.empty():
                    queue.get_nowait()
                    queue.task_done()
                await queue.join()
                for task in team:
                    task.cancel()

    return handler


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (finishes_the_backlog, ["7 queued message(s) were still consumed"]),
        (cancels_at_once, ["3 message(s) were cut off"]),
        (one_worker, ["At most 1 consume() call(s) ran at once"]),
        (leaves_workers, ["3 task(s) your handler started still ran after the client left"]),
        (cleans_up_after_the_loop, ["3 message(s) were cut off", "when the connection dropped"]),
        (drains_a_bounded_queue, ["queued message(s) were still consumed", "websockets' buffer"]),
    ],
)
async def test_check_workers_says_what_is_wrong(wrong, phrases):
    report = await exercises.check_workers(wrong)
    assert fails(report, *phrases), report


# The report itself


def test_a_report_with_no_lines_has_not_passed():
    assert not exercises.Report("nothing")


def test_a_report_shows_each_line_in_text_and_html():
    report = exercises.Report("demo")
    report.add(True, "right <here>")
    report.add(False, "wrong there")
    report.skip("Whether it closed", "it never opened")
    assert repr(report) == (
        "demo: 1 of 2 checks passed; 1 not reached.\n"
        "  ✔ right <here>\n"
        "  ✘ wrong there\n"
        "  – Whether it closed: not reached (it never opened)."
    )
    html = report._repr_html_()
    assert "right &lt;here&gt;" in html
    assert "– Whether it closed" in html
    assert html.count("#6e7781") == 1  # the not-reached line alone is grey


def test_a_report_passes_only_when_every_check_was_reached_and_passed():
    report = exercises.Report("demo")
    report.add(True, "right")
    assert report
    assert repr(report) == "demo: all 1 checks passed.\n  ✔ right"
    report.skip("Whether it closed", "it never opened")
    assert not report
    assert report.failures == []
    assert report.not_reached == ["Whether it closed: not reached (it never opened)."]
    assert report.headline() == "demo: 1 of 1 checks passed; 1 not reached."


# Answers that do nothing: nothing they never did counts as passed.


def does_nothing(*logic):  # builds a handler that returns at once
    async def handler(websocket):
        pass

    return handler


async def follow_returns_at_once(url, channel, received):
    pass


@pytest.mark.parametrize(
    "check, answer",
    [
        ("check_consumer", does_nothing),
        ("check_producer", does_nothing),
        ("check_consumer_and_producer", does_nothing),
        ("check_workers", does_nothing),
        ("check_chat_room", does_nothing),
        ("check_room_history", does_nothing),
        ("check_resuming_client", follow_returns_at_once),
    ],
)
async def test_every_checker_fails_an_answer_that_does_nothing(check, answer):
    report = await getattr(exercises, check)(answer)
    passed = [text for mark, text in report.lines if mark is exercises.Mark.PASSED]
    assert not report, report
    assert len(passed) <= 1, report
    assert report.not_reached, report  # what depended on it is said to be not reached


# Lesson 04: chat_room


def never_unregisters(connected):
    async def handler(websocket):
        name = await websocket.recv()
        broadcast(connected, f"{name} joined")
        connected.add(websocket)
        async for message in websocket:
            broadcast(connected - {websocket}, f"{name}: {message}")
        broadcast(connected - {websocket}, f"{name} left")

    return handler


def sends_to_the_departed(connected):
    async def handler(websocket):
        name = await websocket.recv()
        for other in connected:
            await other.send(f"{name} joined")
        connected.add(websocket)
        try:
            async for message in websocket:
                for other in connected - {websocket}:
                    await other.send(f"{name}: {message}")
        finally:
            for other in connected:  # itself included: it has already gone
                await other.send(f"{name} left")
            connected.remove(websocket)

    return handler


def tells_the_joiner_too(connected):
    async def handler(websocket):
        name = await websocket.recv()
        connected.add(websocket)
        broadcast(connected, f"{name} joined")
        try:
            async for message in websocket:
                broadcast(connected - {websocket}, f"{name}: {message}")
        finally:
            connected.remove(websocket)
            broadcast(connected, f"{name} left")

    return handler


def unregisters_after_the_loop(connected):  # skipped when the connection drops
    async def handler(websocket):
        name = await websocket.recv()
        broadcast(connected, f"{name} joined")
        connected.add(websocket)
        async for message in websocket:
            broadcast(connected - {websocket}, f"{name}: {message}")
        connected.remove(websocket)
        broadcast(connected, f"{name} left")

    return handler


async def test_check_chat_room_passes_the_solution():
    report = await exercises.check_chat_room(solution("chat_room"))
    assert report, report


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (never_unregisters, ["`connected` held 3 connection(s)", "still held 3 connection(s)"]),
        (sends_to_the_departed, ["raised ConnectionClosed", "sent to a connection that had"]),
        (tells_the_joiner_too, ["bob received ['bob joined']"]),
        (unregisters_after_the_loop, ["in a `finally:` block"]),
    ],
)
async def test_check_chat_room_says_what_is_wrong(wrong, phrases):
    report = await exercises.check_chat_room(wrong)
    assert fails(report, *phrases), report


def echoes_to_the_sender_too(connected):
    async def handler(websocket):
        name = await websocket.recv()
        broadcast(connected, f"{name} joined")
        connected.add(websocket)
        try:
            async for message in websocket:
                broadcast(connected, f"{name}: {message}")  # the sender included
        finally:
            connected.remove(websocket)
            broadcast(connected, f"{name} left")

    return handler


async def test_check_chat_room_fails_a_room_that_echoes_to_the_sender():
    report = await exercises.check_chat_room(echoes_to_the_sender_too)
    assert fails(report, "alice received 'bob: hi', and bob heard ['bob: hi'] back."), report


# Redis Streams: follow, a client that comes back


async def subscribe_to(websocket, channel, since=None):
    request = {"action": "subscribe", "channel": channel}
    if since is not None:
        request["since"] = since
    await websocket.send(json.dumps(request))


async def never_reconnects(url, channel, received):
    async with connect(url) as websocket:
        await subscribe_to(websocket, channel)
        try:
            async for frame in websocket:
                delivery = json.loads(frame)
                if "message" in delivery:
                    received.append(delivery["message"])
        except ConnectionClosed:
            return


async def lets_the_loop_end(url, channel, received):  # the lesson's start: nothing caught
    async for websocket in websockets.connect(url, proxy=None):
        await subscribe_to(websocket, channel)
        async for frame in websocket:
            delivery = json.loads(frame)
            if "message" in delivery:
                received.append(delivery["message"])


def reconnecting(resume_from="last", catching=(ConnectionClosed, OSError)):
    """A follow() that reconnects: ``resume_from`` picks its since; it outlives ``catching``."""

    async def follow(url, channel, received):
        ids = []
        while True:
            try:
                async with connect(url) as websocket:
                    since = {"last": ids[-1:], "first": ids[:1], "nothing": []}[resume_from]
                    await subscribe_to(websocket, channel, *since)
                    async for frame in websocket:
                        delivery = json.loads(frame)
                        if "message" in delivery:
                            received.append(delivery["message"])
                            ids.append(delivery["id"])
            except catching:
                await asyncio.sleep(0.05)

    return follow


def not_async(url, channel, received):
    return None


async def test_check_resuming_client_passes_the_solution():
    report = await exercises.check_resuming_client(solution("follow"))
    assert report, report


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        pytest.param(
            never_reconnects,
            ["stopped after the first disconnection", "returned after receiving 10 message(s)"],
            id="never-reconnects",
        ),
        pytest.param(
            reconnecting(resume_from="nothing"),
            [
                "missed 9 messages, published while you were away (11, 12, 13, 14, 15, 23, ...)",
                'subscribe again with "since"',
            ],  # fmt: skip
            id="without-since",
        ),
        pytest.param(
            reconnecting(resume_from="first"),
            ["received 21 messages more than once", "the id of the LAST message"],
            id="since-the-first-id",
        ),
        pytest.param(
            reconnecting(catching=ConnectionClosed),
            [
                "follow() raised NothingListeningError",  # the kit's ConnectionRefusedError
                "wait a moment, and connect again",
                "websockets.connect(url)` does that for you",
                "did not come back after the server restarted",
            ],  # fmt: skip
            id="gives-up-when-refused",
        ),
        pytest.param(
            reconnecting(catching=OSError),
            [
                "follow() raised ConnectionClosedError",
                "Catch websockets.exceptions.ConnectionClosed",
                "stopped after the first disconnection",
            ],  # fmt: skip
            id="lets-connection-closed-out",
        ),
        pytest.param(
            lets_the_loop_end,
            [
                "follow() raised ConnectionClosedError",
                "catch it and `continue`",
                "stopped after the first disconnection",
            ],  # fmt: skip
            id="async-for-without-catching",
        ),
        pytest.param(not_async, ["Pass your `async def follow"], id="not-async"),
    ],
)
async def test_check_resuming_client_says_what_is_wrong(wrong, phrases):
    report = await exercises.check_resuming_client(wrong)
    assert fails(report, *phrases), report


def test_our_solution_loads_beside_the_learners_answer_not_over_it(tmp_path):
    from wspatterns.exercises import solution

    (tmp_path / "01_bye_consumer.py").write_text("def bye_consumer(consume):\n    return 'ours'\n")

    def bye_consumer(consume):  # the learner's, in the notebook's namespace
        return "mine"

    ours = solution("01_bye_consumer", folder=tmp_path)
    assert ours.bye_consumer(None) == "ours" and bye_consumer(None) == "mine"
    with pytest.raises(FileNotFoundError, match="there are: 01_bye_consumer"):
        solution("02_finite_producer", folder=tmp_path)


# What build() and judge_end() say, through a kit checker.


async def test_a_handler_passed_for_its_factory_is_shown_the_factory_by_the_exercise_s_name():
    report = await exercises.check_consumer(a_handler)
    shape = "`def bye_consumer(consume): async def handler(websocket): ... return handler`"
    assert fails(report, "a_handler is a handler (async def)", shape), report
    assert "def a_handler(" not in report.failures[0]


def raises_at_once(consume):
    async def handler(websocket):
        raise RuntimeError("not written yet")

    return handler


async def test_a_handler_that_raised_while_the_client_was_there_is_not_said_to_have_returned():
    report = await exercises.check_consumer(raises_at_once)
    early = "Your handler raised RuntimeError while the client was still there: not written yet."
    assert fails(report, early), report
    assert not any("handler returned while" in line for line in report.failures), report
