import asyncio
import time

import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

from wspatterns import reports

from .utils import MS, execute


def raise_in_your_code():
    return 1 / 0


def test_report_shows_your_lines_and_not_the_libraries():
    try:
        raise_in_your_code()
    except ZeroDivisionError as exc:
        report = reports.handler_failed("room", "chat", "client-3", exc)
    text = str(report)
    assert text.splitlines()[0] == (
        "wspatterns: handler 'chat' of server 'room' raised ZeroDivisionError for client-3; "
        "websockets closed that connection with code 1011."
    )
    assert "in raise_in_your_code" in text
    assert "return 1 / 0" in text
    assert text.splitlines()[-1] == "ZeroDivisionError: division by zero"


async def test_report_of_a_task_group_names_the_error_inside_and_your_line():
    async def worker(number):
        if number == 2:
            raise ValueError(f"bad job {number}")

    try:
        async with asyncio.TaskGroup() as group:
            for number in range(3):
                group.create_task(worker(number))
    except ExceptionGroup as exc:
        report = reports.handler_failed("room", "workers", "client-1", exc)
    text = str(report)
    assert text.splitlines()[0].startswith(
        "wspatterns: handler 'workers' of server 'room' raised ValueError for client-1, "
        "inside an ExceptionGroup"
    )
    assert 'raise ValueError(f"bad job {number}")' in text
    assert text.splitlines()[-1] == "ValueError: bad job 2"


@pytest.mark.parametrize(
    "exc, who",
    [
        (ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True), "the client closed"),
        (ConnectionClosedOK(Close(1001, ""), Close(1001, ""), False), "the server closed"),
        (ConnectionClosedError(None, None), "lost without a closing handshake"),
    ],
)
def test_report_says_who_closed(exc, who):
    report = reports.handler_failed("s", "h", "client-1", exc)
    assert who in report.summary
    assert "catch websockets.exceptions.ConnectionClosed" in report.hint


def test_show_prints_at_once_outside_a_notebook(capsys):
    reports.show(reports.ErrorReport("s", None, None, "something odd"))
    assert capsys.readouterr().err == "wspatterns: something odd\n"


# In a real kernel (the `kernel` fixture, in conftest.py): where a learner sees what went wrong.


def test_handler_error_shows_under_the_cell_that_ran(kernel):
    execute(
        kernel,
        """
        from wspatterns import serve, connect

        async def broken(websocket):
            message = await websocket.recv()
            return 1 / 0
        """,
    )
    shown = execute(
        kernel,
        """
        server = await serve(broken)
        async with connect(server) as websocket:
            await websocket.send("boom")
            await websocket.wait_closed()
        print(websocket.close_code)
        """,
    )
    assert shown["stdout"] == "1011\n"
    assert shown["stderr"] == (
        "wspatterns: handler 'broken' of server 'broken' raised ZeroDivisionError for "
        "client-1; websockets closed that connection with code 1011.\n"
        "  Cell In[1], line 5, in broken\n"
        "    return 1 / 0\n"
        "ZeroDivisionError: division by zero\n"
    )
    assert execute(kernel, "print('next')") == {"stdout": "next\n", "stderr": ""}


def test_error_while_the_kernel_is_idle_shows_under_the_next_cell(kernel, tmp_path):
    done = tmp_path / "visited"
    execute(
        kernel,
        f"""
        import pathlib, threading
        from websockets.sync.client import connect as sync_connect
        from wspatterns import serve

        async def broken(websocket):
            raise KeyError("missing")

        server = await serve(broken)

        def visit():  # a client outside any cell, served while the kernel is idle
            with sync_connect(server.url, proxy=None) as websocket:
                try:
                    websocket.recv(timeout=5)
                finally:
                    pathlib.Path({str(done)!r}).touch()

        threading.Thread(target=visit).start()
        """,
    )
    deadline = time.monotonic() + 10_000 * MS
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(10 * MS)  # a bounded poll: the kernel serves the client meanwhile
    assert done.exists()
    shown = execute(kernel, "print(len(server.errors))")
    assert shown["stdout"] == "1\n"
    assert "raised KeyError for client-1" in shown["stderr"]


async def test_a_send_to_another_clients_closed_connection_is_blamed_on_that_connection():
    from wspatterns import connect, serve

    others = []

    async def relay(websocket):
        others.append(websocket)
        async for message in websocket:
            for other in others:  # never forgets a departed one
                await other.send(message)

    server = await serve(relay, quiet=True)
    async with connect(server, name="carol"):
        pass
    async with connect(server, name="alice") as alice:
        await alice.send("hello")
        await alice.wait_closed()
    report = server.errors[-1]
    assert report.connection == "alice"
    assert "whose connection was still open: another connection" in report.summary


def test_news_shows_on_stdout_and_errors_on_stderr_under_the_cell(kernel):
    shown = execute(
        kernel,
        """
        from wspatterns import reports
        reports.show(reports.ErrorReport("hub", None, None, "Redis is back", news=True))
        reports.show(reports.ErrorReport("hub", None, None, "Redis is gone"))
        """,
    )
    assert shown == {
        "stdout": "wspatterns news: Redis is back\n",
        "stderr": "wspatterns: Redis is gone\n",
    }


@pytest.mark.parametrize(
    "still_open, ending",
    [
        (True, "websockets closed that connection with code 1011."),
        (None, "websockets closed that connection with code 1011."),
        (False, "its connection had already closed."),
    ],
)
def test_the_report_says_1011_only_when_there_was_a_connection_to_close(still_open, ending):
    plain = reports.handler_failed("s", "h", "client-1", ValueError("x"), still_open=still_open)
    group = ExceptionGroup("workers", [ValueError("x")])
    grouped = reports.handler_failed("s", "h", "client-1", group, still_open=still_open)
    assert plain.summary.endswith(ending) and grouped.summary.endswith(ending)
