"""What the guide for teachers (notebooks/make_a_lesson.ipynb) uses is public API: exported in
``wspatterns.exercises.__all__``, documented, typed, and tested here as such, one behaviour at a
time, each with a wrong thing fed to it and the failure it should bring."""

import ast
import asyncio
import importlib
import inspect
import json
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from wspatterns import connect, exercises, serve
from wspatterns.errors import ServerStoppedError
from wspatterns.exercises import (
    GRACE,
    Report,
    ScriptedConsume,
    ScriptedLogic,
    ScriptedProduce,
    Watch,
    build,
    checker_client,
    in_time,
    judge_end,
    next_message,
    receive,
    send_all,
    serving,
    until,
)

from .utils import BOUND, MS, echo

GUIDE = Path(__file__).parent.parent / "notebooks" / "make_a_lesson.ipynb"

# What the guide made public: each is tested below.
NEWLY_PUBLIC = {
    "GRACE", "ScriptedConsume", "ScriptedLogic", "ScriptedProduce", "Watch", "build",
    "checker_client", "in_time", "judge_end", "next_message", "receive", "send_all", "serving",
    "until",
}  # fmt: skip


# The guide imports only public names.


def kit_imports(path: Path) -> list[tuple[str, str]]:
    """Every ``(module, name)`` a notebook's code cells import from the kit with ``from ...
    import``; magics are read as IPython runs them."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    found = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = TransformerManager().transform_cell("".join(cell["source"]))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wspatterns"):
                found += [(node.module, alias.name) for alias in node.names]
    return found


def not_public(imports: list[tuple[str, str]]) -> list[str]:
    """Each import of a name its module does not list in ``__all__``, as ``module.name``."""
    wrong = []
    for module, name in imports:
        exported = getattr(importlib.import_module(module), "__all__", ())
        if name not in exported:
            wrong.append(f"{module}.{name}")
    return wrong


def test_everything_the_guide_imports_from_the_kit_is_in_its_all():
    imports = kit_imports(GUIDE)
    assert ("wspatterns.exercises", "Watch") in imports  # it does import the harness
    assert not_public(imports) == []


def test_an_import_of_a_private_piece_is_named(tmp_path):
    cell = {
        "cell_type": "code",
        "source": "%load_ext autoreload\nfrom wspatterns.exercises.harness import quote\n"
        "from wspatterns.exercises import Watch, not_over\nfrom wspatterns import serve",
    }
    notebook = tmp_path / "planted.ipynb"
    notebook.write_text(json.dumps({"cells": [cell]}))
    assert not_public(kit_imports(notebook)) == [
        "wspatterns.exercises.harness.quote",
        "wspatterns.exercises.not_over",
    ]


def test_every_public_piece_of_the_exercises_is_documented_and_typed():
    assert NEWLY_PUBLIC <= set(exercises.__all__)
    for name in exercises.__all__:
        thing = getattr(exercises, name)
        if name == "GRACE":
            assert isinstance(thing, float) and thing > 0
            continue
        assert inspect.getdoc(thing), f"{name} has no docstring"
        if inspect.isfunction(thing):
            signature = inspect.signature(thing)
            unannotated = [
                each.name
                for each in signature.parameters.values()
                if each.annotation is inspect.Parameter.empty
            ]
            assert unannotated == [], f"{name}: {unannotated} have no type"
            assert signature.return_annotation is not inspect.Signature.empty, name


# Bounded waits that answer yes or no.


async def test_in_time_says_whether_an_awaitable_finished_and_cancels_a_late_one():
    assert await in_time(BOUND, asyncio.sleep(0)) is True
    late = asyncio.create_task(asyncio.sleep(10))
    assert await in_time(20 * MS, late) is False
    assert late.cancelled()


async def test_in_time_raises_what_the_awaitable_raised_in_time():
    async def fails():
        raise ValueError("wrong")

    with pytest.raises(ValueError, match="wrong"):
        await in_time(BOUND, fails())


async def test_until_says_whether_a_condition_came_to_hold():
    flag = []
    asyncio.get_running_loop().call_later(20 * MS, flag.append, True)
    assert await until(lambda: bool(flag), BOUND) is True
    assert await until(lambda: False, 20 * MS) is False  # never: a no, not a TimeoutError


async def test_until_raises_what_the_condition_raised():
    with pytest.raises(ZeroDivisionError):
        await until(lambda: 1 / 0 > 0, BOUND)


# Building and serving the handler.


def echoing(answer):  # the function a lesson asks for: it builds a handler
    async def handler(websocket):
        async for message in websocket:
            await websocket.send(await answer(message))

    return handler


async def shout(message):
    return message.upper()


def test_build_calls_the_function_with_the_logic_and_gives_its_handler():
    report = Report("echoing")
    handler = build(report, echoing, {"answer": shout})
    assert inspect.iscoroutinefunction(handler) and handler.__qualname__.startswith("echoing")
    assert report.lines == []


def returns_nothing(answer):
    async def handler(websocket):
        pass


def raises(answer):
    raise RuntimeError("not written yet")


@pytest.mark.parametrize(
    "wrong, says",
    [
        (echoing(shout), "handler is a handler (async def); pass the function that builds one"),
        (returns_nothing, "it returned None. Did you forget `return handler`?"),
        (raises, "raises(answer) raised RuntimeError: not written yet"),
        (42, "Pass the function that builds your handler; got 42."),
    ],
)
def test_build_says_what_is_wrong_with_something_else(wrong, says):
    report = Report("echoing")
    assert build(report, wrong, {"answer": shout}) is None
    assert not report and says in report.failures[0], report


async def test_serving_serves_under_watch_then_stops_and_closes_what_was_never_awaited():
    consume = ScriptedConsume()

    async def forgets_await(websocket):
        async for message in websocket:
            consume(message)  # the mistake under test: never awaited

    async with serving(forgets_await, "demo", consume) as (server, watch):
        assert server.name == "check demo" and server.running
        async with connect(server) as client:
            await client.send("one")
            assert await until(lambda: consume.calls == 1, BOUND)
        assert await watch.end(BOUND) and watch.error is None
        assert consume.unawaited() == 1
    assert not server.running
    assert consume.unawaited() == 0  # closed: Python has nothing to warn about


async def test_a_watch_notes_when_a_run_ended_and_what_it_raised():
    async def picky(websocket):
        async for message in websocket:
            if message == "boom":
                raise ValueError("no boom here")
            await websocket.send(message)

    watch = Watch()
    server = await serve(watch.wrap(picky), quiet=True)
    async with connect(server) as client:
        await client.send("fine")
        assert await client.recv() == "fine"
        assert not watch.ended.is_set() and watch.error is None
        await client.send("boom")
        assert await watch.end(BOUND)
        await client.wait_closed()
    assert isinstance(watch.error, ValueError)
    assert client.close_code == 1011  # raised on: websockets closed it as it would


async def test_a_watch_says_no_when_a_handler_does_not_end():
    async def hangs(websocket):
        await asyncio.Event().wait()

    async with serving(hangs, "hangs") as (server, watch):
        async with checker_client(server, watch):
            assert await watch.end(20 * MS) is False


# A scripted client.


async def test_a_checker_client_is_called_checker_and_closes_normally():
    async with serving(echo, "echo") as (server, watch):
        watch.ended.set()  # left over from a run before
        async with checker_client(server, watch) as client:
            assert client.name == "checker" and not watch.ended.is_set()
            await send_all(client, "a", "b", "c")
            assert await receive(client, BOUND, most=3) == ["a", "b", "c"]
        assert client.close_code == 1000
        assert await watch.end(BOUND)


async def test_a_checker_client_cannot_reach_a_stopped_server():
    async with serving(echo, "echo") as (server, watch):
        pass
    with pytest.raises(ServerStoppedError):
        async with checker_client(server, watch):
            pass


async def says_one_then_leaves(websocket):
    await websocket.send("only this")


async def test_send_all_stops_quietly_when_the_handler_has_closed():
    async with serving(says_one_then_leaves, "leaves") as (server, watch):
        async with checker_client(server, watch) as client:
            assert await watch.end(BOUND)
            await client.wait_closed()
            await send_all(client, "one", "two")  # no ConnectionClosed
            assert client.close_code == 1000


async def test_send_all_refuses_what_is_not_a_message():
    async with serving(echo, "echo") as (server, watch):
        async with checker_client(server, watch) as client:
            with pytest.raises(TypeError):
                await send_all(client, 42)


async def test_receive_gives_what_came_within_the_time_and_no_more():
    async with serving(echo, "echo") as (server, watch):
        async with checker_client(server, watch) as client:
            await send_all(client, "a", "b", "c")
            assert await receive(client, BOUND, most=2) == ["a", "b"]
            assert await receive(client, 50 * MS) == ["c"]  # all that came in that time
            assert await receive(client, 20 * MS) == []  # nothing: no TimeoutError


async def test_receive_stops_when_the_connection_closes():
    async with serving(says_one_then_leaves, "leaves") as (server, watch):
        async with checker_client(server, watch) as client:
            assert await receive(client, BOUND, most=5) == ["only this"]
            assert client.close_code == 1000


async def test_next_message_gives_the_next_message_or_none():
    async with serving(says_one_then_leaves, "leaves") as (server, watch):
        async with checker_client(server, watch) as client:
            assert await next_message(client, BOUND) == "only this"
            assert await next_message(client, BOUND) is None  # closed: no wait for nothing
    async with serving(echo, "echo") as (server, watch):
        async with checker_client(server, watch) as client:
            assert await next_message(client, 20 * MS) is None  # open, and silent
            assert client.close_code is None


# Judging how the handler ended.


async def test_judge_end_passes_a_handler_that_ended_quietly():
    report = Report("demo")
    assert judge_end(report, Watch(), True, "after the client left") is True
    assert report.lines[0][1] == "Your handler ended quietly after the client left."


@pytest.mark.parametrize(
    "ended, early, error, says",
    [
        (True, True, None, "Your handler returned while the client was still there"),
        (False, False, None, f"Your handler was still running {GRACE:g} s after the client"),
        (True, False, ValueError("oops"), "Your handler raised ValueError after the client"),
    ],
)
def test_judge_end_fails_a_handler_that_ended_wrong(ended, early, error, says):
    report = Report("demo")
    watch = Watch()
    watch.error = error
    assert judge_end(report, watch, ended, "after the client left", early=early) is False
    assert not report and says in report.failures[0], report


# Business logic, scripted.


class ScriptedDouble(ScriptedLogic):  # logic of another shape, as the guide writes one
    def __call__(self, number):
        return self.made_one(self.run(number))

    async def run(self, number):
        return number * 2


async def test_scripted_logic_counts_calls_and_tells_those_never_awaited():
    double = ScriptedDouble()
    assert await double(21) == 42
    forgotten = double(1)  # the mistake under test: never awaited
    assert (double.calls, double.unawaited()) == (2, 1)
    assert double.close_unawaited() == 1
    assert inspect.getcoroutinestate(forgotten) == "CORO_CLOSED"
    double.start_over()
    assert (double.calls, double.unawaited()) == (0, 0)


async def test_scripted_consume_notes_what_it_got_and_fails_on_demand():
    consume = ScriptedConsume(fail_on=["bad"])
    await consume("one")
    with pytest.raises(ValueError, match="consume\\(\\) cannot take 'bad'"):
        await consume("bad")
    assert (consume.got, consume.done, consume.calls) == (["one", "bad"], ["one"], 2)
    consume.reset(delay=20 * MS)
    await asyncio.gather(consume("a"), consume("b"))
    assert consume.most == 2 and consume.done == ["a", "b"]


async def test_scripted_produce_returns_its_messages_then_what_then_says():
    produce = ScriptedProduce(["a", "b"], then="none")
    assert [await produce(), await produce(), await produce()] == ["a", "b", None]
    produce.reset(["a"], then="count")
    assert [await produce(), await produce()] == ["a", "tick 2"]
    produce.reset([], then="wait")
    assert await in_time(20 * MS, produce()) is False  # news that never comes
