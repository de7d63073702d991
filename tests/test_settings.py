"""The timeout contract of wspatterns.settings, held by every wait of the kit.

``timeout=None`` waits for ever, as asyncio and websockets mean it; leaving ``timeout`` out
gives ``TIMEOUT``, read when the call is made. Each test here sets a short ``TIMEOUT`` and
starts a wait that never ends by itself: left out, the wait gives up after ``TIMEOUT`` with a
kit error; with ``timeout=None`` it is still waiting three times as long, when
``asyncio.timeout`` ends it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from wspatterns import connect, run, serve, serve_in_thread, settings
from wspatterns.apps import flow_of, start_app
from wspatterns.browsers import BrowserClient
from wspatterns.errors import KitTimeoutError, WSPatternsError
from wspatterns.experiments import cancel_handler, cancel_running
from wspatterns.runtime.threads import ThreadServer
from wspatterns.waiting import wait_for_handler, wait_for_handlers, wait_until

from .utils import BOUND, MS, echo

#: The TIMEOUT these tests set: short, so that a wait left to it ends soon.
SHORT = 250 * MS


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch):
    monkeypatch.setattr(settings, "TIMEOUT", SHORT)


async def holds_the_contract(wait: Callable[..., Awaitable[object]]) -> None:
    """``wait(**timeout)`` starts a wait that never ends by itself; check both halves."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(WSPatternsError):  # not the TimeoutError of asyncio.timeout below
        async with asyncio.timeout(BOUND):
            await wait()
    gave_up = loop.time() - start
    assert SHORT * 0.9 <= gave_up < BOUND, f"gave up after {gave_up:.3f} s, not TIMEOUT"
    start = loop.time()
    with pytest.raises(TimeoutError) as ended:
        async with asyncio.timeout(3 * SHORT):
            await wait(timeout=None)
    waited = loop.time() - start
    assert type(ended.value) is TimeoutError, f"timeout=None gave up: {ended.value!r}"
    assert waited >= 3 * SHORT * 0.9, f"timeout=None ended after {waited:.3f} s"


async def hang(websocket):  # returns only once the connection is closed
    await websocket.wait_closed()


# The bounded waits


async def test_wait_until():
    await holds_the_contract(lambda **timeout: wait_until(lambda: False, **timeout))


async def test_wait_for_handlers_and_wait_for_handler():
    server = await serve(hang)
    client = await connect(server, name="alice", timeout=BOUND)
    await wait_until(lambda: server.connections_of("alice"), BOUND)
    await holds_the_contract(lambda **timeout: wait_for_handlers(server, **timeout))
    await holds_the_contract(lambda **timeout: wait_for_handler(server, client, **timeout))


# Clients, servers, run()


async def test_connect_opening():
    async def silent(reader, writer):  # takes the connection, never answers the handshake
        await reader.read()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]

    async def opening(**timeout):
        async with connect(f"ws://127.0.0.1:{port}/", **timeout):
            pass

    async with listener:
        await holds_the_contract(opening)


async def test_a_clients_wait_closed_follows_connect():
    server = await serve(hang)
    # timeout left out: TIMEOUT, for the client's own waits too; the opening is not tested here
    client = await connect(server, open_timeout=BOUND)
    await holds_the_contract(client.wait_closed)


async def test_run():
    release = threading.Event()

    async def until_released():
        while not release.is_set():
            await asyncio.sleep(0.01)
        return "released"

    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(KitTimeoutError):
        await asyncio.to_thread(run, until_released())
    assert SHORT * 0.9 <= loop.time() - start < BOUND
    forever = asyncio.ensure_future(asyncio.to_thread(run, until_released(), timeout=None))
    try:
        await asyncio.sleep(3 * SHORT)
        assert not forever.done(), "timeout=None gave up"
    finally:
        release.set()
    assert await forever == "released"


async def test_serve_in_thread(monkeypatch):
    release = threading.Event()
    listen = ThreadServer.start

    async def late_start(self, port, options):  # starts listening only once released
        while not release.is_set():
            await asyncio.sleep(0.01)
        await listen(self, port, options)

    monkeypatch.setattr(ThreadServer, "start", late_start)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(KitTimeoutError):
        await asyncio.to_thread(serve_in_thread, echo, name="late")
    assert SHORT * 0.9 <= loop.time() - start < BOUND
    forever = asyncio.ensure_future(
        asyncio.to_thread(serve_in_thread, echo, name="patient", timeout=None)
    )
    try:
        await asyncio.sleep(3 * SHORT)
        assert not forever.done(), "timeout=None gave up"
    finally:
        release.set()
    server = await forever
    assert server.running
    await server.stop()


# Browser clients, driven as their page would drive them


def browser_client(opened: bool) -> BrowserClient:
    client = BrowserClient("ws://127.0.0.1:9/", "alice", "direct", None)
    client.no_front_end = None
    client.hear({"event": "hello", "page": "page-1"}, [])  # a page drew it: it connects
    if opened:
        client.hear({"event": "open", "page": "page-1"}, [])  # and never says more
    return client


async def test_browser_waits():
    await holds_the_contract(browser_client(opened=False).wait_open)
    alice = browser_client(opened=True)
    await holds_the_contract(alice.recv)
    await holds_the_contract(lambda **timeout: alice.send("hello", **timeout))
    await holds_the_contract(alice.wait_closed)
    await holds_the_contract(lambda **timeout: alice.close(**timeout))


# The experiments


async def test_cancel_running():
    stop = asyncio.Event()

    async def stubborn():
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()

    tasks = [asyncio.create_task(stubborn())]
    await asyncio.sleep(0)
    try:
        await holds_the_contract(lambda **timeout: cancel_running(stubborn, **timeout))
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_cancel_handler():
    async def never_started():
        pass

    server = await serve(hang)
    await holds_the_contract(lambda **timeout: cancel_handler(server, never_started, **timeout))


# Programs


DEAF = """
import os, signal, socket
signal.signal(signal.SIGTERM, signal.SIG_IGN)
listener = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
held = []
while True:  # takes connections and answers nothing, not even the kit
    held.append(listener.accept()[0])
"""


async def test_a_program_and_its_waits(tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(600)\n")
    await holds_the_contract(lambda **timeout: start_app(tmp_path / "sleeper.py", **timeout))
    (tmp_path / "deaf.py").write_text(DEAF)
    app = await start_app(tmp_path / "deaf.py", timeout=BOUND)
    for wait in (app.export, app.clients, app.flow, app.clear, app.get):
        await holds_the_contract(wait)
    await holds_the_contract(lambda **timeout: flow_of(app, **timeout))
    # stop() gives the program that long to end after SIGTERM, then kills it.
    with pytest.raises(TimeoutError) as ended:
        async with asyncio.timeout(3 * SHORT):
            await app.stop(timeout=None)
    assert type(ended.value) is TimeoutError and app.returncode is None
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await app.stop() == -9
    assert SHORT * 0.9 <= loop.time() - start < BOUND


# One default, the same everywhere

PACKAGE = Path(settings.__file__).parent

# Waits whose natural bound is not TIMEOUT, named in their signature: (module, function).
OWN_BOUNDS = {
    # The time handlers get to return once their connection is closed: STOP_GRACE.
    ("runtime/server.py", "Server.stop"),
    ("runtime/threads.py", "ThreadServer.stop"),
    ("runtime/threads.py", "ThreadServer.stop_blocking"),
    # SIGTERM, then SIGKILL after 5 s: a sync stop, also run at the interpreter's end.
    ("pubsub/redis_server.py", "RedisServer.stop"),
    # The report of a broadcast measurement, which may take longer than TIMEOUT.
    ("runtime/processes.py", "ChildProcess.stop"),
}


def timeout_defaults(root: Path) -> list[tuple[str, str, str, str]]:
    """(module, function, annotation, default) for every public ``timeout`` with a default."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text())
        places = [("", tree)] + [
            (f"{node.name}.", node)
            for node in tree.body
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
        ]
        for prefix, place in places:
            for node in place.body:
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if node.name.startswith("_") and node.name != "__init__":
                    continue
                args = node.args
                positional = args.posonlyargs + args.args
                defaults = [None] * (len(positional) - len(args.defaults)) + args.defaults
                pairs = [
                    *zip(positional, defaults, strict=True),
                    *zip(args.kwonlyargs, args.kw_defaults, strict=True),
                ]
                for arg, default in pairs:
                    if arg.arg == "timeout" and default is not None:
                        annotation = ast.unparse(arg.annotation) if arg.annotation else ""
                        found.append((module, prefix + node.name, annotation, ast.unparse(default)))
    return found


def test_every_timeout_left_out_is_the_one_default():
    found = timeout_defaults(PACKAGE)
    assert len(found) > 20
    wrong = [
        f"wspatterns/{module} {function}(timeout: {annotation} = {default})"
        for module, function, annotation, default in found
        if (module, function) not in OWN_BOUNDS
        and (default != "DEFAULT" or "None" not in annotation)
    ]
    assert not wrong, "use `timeout: float | None = DEFAULT` (settings.py):\n" + "\n".join(wrong)
    own = {(module, function) for module, function, _, _ in found} & OWN_BOUNDS
    assert own == OWN_BOUNDS, f"no longer there, drop from OWN_BOUNDS: {OWN_BOUNDS - own}"


def test_the_default_reads_timeout_when_the_call_is_made(monkeypatch):
    assert settings.timeout_seconds(settings.DEFAULT) == SHORT
    monkeypatch.setattr(settings, "TIMEOUT", 3.0)
    assert settings.timeout_seconds(settings.DEFAULT) == 3.0
    assert settings.timeout_seconds(None) is None
    assert settings.timeout_seconds(0.5) == 0.5


@pytest.mark.parametrize(
    ("variable", "value"),
    [("WSPATTERNS_CAP", "lots"), ("WSPATTERNS_CAP", "0"), ("WSPATTERNS_CAP", "2.5"),
     ("WSPATTERNS_TIMEOUT", "soon"), ("WSPATTERNS_TIMEOUT", "-1"), ("WSPATTERNS_TIMEOUT", "nan")],
)  # fmt: skip
def test_a_setting_from_the_environment_is_checked_when_the_kit_is_imported(variable, value):
    code = "import wspatterns; print(wspatterns.settings.CAP, wspatterns.settings.TIMEOUT)"
    env = {**os.environ, "WSPATTERNS_CAP": "7", "WSPATTERNS_TIMEOUT": "1.5"}
    good = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert good.stdout == "7 1.5\n"
    bad = subprocess.run([sys.executable, "-c", "import wspatterns"], capture_output=True,
                         text=True, env={**os.environ, variable: value})  # fmt: skip
    assert bad.returncode == 1
    said = f"{variable}={value!r}: it must be a positive number."
    assert bad.stderr.splitlines()[-1] == f"wspatterns.errors.InvalidArgumentError: {said}"
