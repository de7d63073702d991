"""Browser clients (wspatterns.browsers): without a page, and in real Chromium driving JupyterLab.

The tests in Chromium start a JupyterLab of their own from the checkout, on a free
port, and drive Debian's headless Chromium through Selenium; nothing downloads a
browser. Without Chromium they are skipped, saying how to install it, except on CI
(``CI=true``), where a missing browser fails. Most run twice: once on the route the
page chooses by itself (``direct``, the page being served from 127.0.0.1), once with
jupyter-server-proxy forced (``WSPATTERNS_BROWSER_ROUTE=proxy``). The lessons run once,
direct: tests/test_hub.py runs them through the proxy, on a real JupyterHub.

``WSPATTERNS_BROWSER_NOTEBOOKS`` (paths, space-separated) names the notebooks that
``test_lessons_in_a_browser`` runs; by default, the lessons that open a browser client or
a program's page in a tab (``browser_tab``).
``WSPATTERNS_SCREENSHOTS`` (a folder) keeps the screenshots the tests take.
``WSPATTERNS_SAVE_OUTPUTS=1`` (``make browser-outputs``) writes what the cells that need a
page showed in that run back into the lessons, so that a reader of a committed lesson sees
under them what happened (nbval skips them, and so nbconvert cannot fill them).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from random import Random

import nbformat
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from wspatterns import browser, serve
from wspatterns.browsers import ROUTE_VARIABLE
from wspatterns.browsers.client import BrowserClient
from wspatterns.browsers.page import answer_pages
from wspatterns.browsers.routes import asked_route, target, with_name
from wspatterns.runtime.server import named_in_query
from wspatterns.waiting import wait_for_handlers, wait_until

from . import browser_harness as harness
from .utils import echo, execute, run_python

ROOT = Path(__file__).parent.parent
LESSONS = ROOT / "notebooks"
BROWSER_CALL = re.compile(r"\bbrowser(_tab)?\(")  # a cell that needs a notebook page
CLIENT_CALL = re.compile(r"\bbrowser\(")
SKIP_TAGS = {"nbval-skip", "skip-execution"}


# The route, the name, and the server's hook


def test_a_name_in_the_query_names_the_client_and_leaves_the_path():
    assert named_in_query("/?name=alice") == ("alice", "/")
    assert named_in_query("/chat?room=1&name=bob") == ("bob", "/chat?room=1")
    assert named_in_query("/chat?room=1") == (None, "/chat?room=1")
    assert named_in_query("/") == (None, "/")


def test_a_name_that_would_garble_a_diagram_is_ignored():
    assert named_in_query("/?name=") == (None, "/")
    assert named_in_query("/?name=a%0Ab") == (None, "/")
    assert named_in_query("/?name=" + "x" * 65) == (None, "/")


async def test_a_kit_server_records_a_browser_like_client_under_its_query_name():
    server = await serve(echo)
    async with ws_connect(server.url + "?name=zoe", proxy=None) as websocket:
        await websocket.send("hi")
        assert await websocket.recv() == "hi"
    await wait_for_handlers(server)
    opens = [event for event in server.flow.events if event.kind == "open"]
    assert [(event.client, event.detail) for event in opens] == [("zoe", "/")]


async def test_a_plain_http_answer_is_not_recorded_as_a_connection():
    server = await serve(echo, process_request=answer_pages("echo"))
    page = "http://" + server.url.removeprefix("ws://")
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(page, timeout=10).read())
    assert b"new WebSocket(url)" in body
    assert server.flow.totals == [] and len(server.flow) == 0
    assert server.flow.stats().empty


def test_the_route_is_asked_for_by_argument_or_environment(monkeypatch):
    monkeypatch.delenv(ROUTE_VARIABLE, raising=False)
    assert asked_route(None) == ("auto", "$WSPATTERNS_BROWSER_ROUTE=auto asked for it")
    assert asked_route("proxy") == ("proxy", "route=proxy asked for it")
    monkeypatch.setenv(ROUTE_VARIABLE, "direct")
    assert asked_route(None) == ("direct", "$WSPATTERNS_BROWSER_ROUTE=direct asked for it")
    assert asked_route("auto")[0] == "auto"


def test_a_route_that_is_not_one_is_refused_naming_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="'sideways' is not a route: use one of auto, direct"):
        asked_route("sideways")
    monkeypatch.setenv(ROUTE_VARIABLE, "tunnel")
    with pytest.raises(ValueError, match=r"\$WSPATTERNS_BROWSER_ROUTE='tunnel'"):
        asked_route(None)


def test_the_page_is_told_both_ways_to_the_server():
    assert with_name("ws://127.0.0.1:8765/", "alice") == "ws://127.0.0.1:8765/?name=alice"
    assert with_name("ws://127.0.0.1:8765/chat?name=x", "b c") == (
        "ws://127.0.0.1:8765/chat?name=b+c"
    )
    assert target("ws://127.0.0.1:8765/", "alice", "auto") == {
        "direct": "ws://127.0.0.1:8765/?name=alice",
        "port": 8765,
        "path": "/?name=alice",
        "route": "auto",
        "asked_by": "",
    }


# Without a page to draw it


NO_PAGE = """
import asyncio, time
from wspatterns import browser, serve
from wspatterns.browsers import NoFrontEndError

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

async def main():
    server = await serve(echo)
    alice = await browser(server, name="alice")
    for wait in (alice.recv(timeout=None), alice.send("hi"), alice.close(), alice.wait_open()):
        try:
            await wait
        except NoFrontEndError as exc:
            print("raised:", exc)
"""


def test_without_a_page_a_browser_client_says_so_and_waits_raise_at_once():
    # timeout=None: a wait that did not raise at once would hang, and pytest-timeout says so.
    result = run_python(NO_PAGE + "asyncio.run(main())")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "wspatterns: alice cannot connect: this is plain Python, with no notebook page "
        "to run a browser in."
    )
    assert len(lines) == 5
    assert all(line.startswith("raised: alice has no page to run in:") for line in lines[1:])


def test_in_a_kernel_no_notebook_page_drew_a_browser_client_says_so(kernel):
    # A kernel started by jupyter_client, as nbval and nbconvert start theirs.
    streams = execute(kernel, NO_PAGE + "await main()")
    lines = streams["stdout"].splitlines()
    assert lines[0].startswith("wspatterns: alice will not connect: this kernel was not started")
    assert "nbval, nbconvert and papermill" in lines[0]
    assert len(lines) == 5 and all(line.startswith("raised: ") for line in lines[1:])
    assert streams["stderr"] == ""


# A page's messages, without a page: how the widget hands them over (hear()), on the
# kernel's loop or on another thread, racing the waits; a wake-up lost shows as a timeout.


@pytest.mark.timeout(60)
async def test_every_wait_wakes_for_what_the_page_says_from_any_thread_at_any_moment():
    random, loop = Random(26), asyncio.get_running_loop()
    alice = BrowserClient("ws://127.0.0.1:9/", "alice", "direct", None)
    alice.no_front_end = None  # as drawn in a page

    def said(event: str, **content: object) -> dict:
        return {"event": event, "page": "page-1", **content}

    with ThreadPoolExecutor(2) as threads:

        def say(content: dict, how: str) -> None:
            if how == "now":  # a comm message dispatched on the client's loop
                alice.hear(content, [])
            elif how == "soon":
                loop.call_soon(alice.hear, content, [])
            else:  # a comm message taken on another thread (a subshell's)
                threads.submit(alice.hear, content, [])

        opening = asyncio.create_task(alice.wait_open(timeout=5))
        say(said("hello"), "thread")
        say(said("open"), "thread")
        await opening

        # Waits that come and go meanwhile: given up at once, or patient; none returns.
        async def impatient() -> int:
            gave_up = 0
            while alice.state is not State.CLOSED:
                try:
                    await alice.wait_closed(timeout=random.choice([0, 0.0005, 0.002]))
                except TimeoutError:
                    gave_up += 1
            return gave_up

        crowd = [asyncio.create_task(impatient()) for _ in range(3)]
        patient = asyncio.create_task(alice.wait_closed(timeout=30))

        # One message at a time, so that no later one could wake a wait that missed it;
        # said before the wait begins, as it begins, or while it waits.
        started, slowest = time.monotonic(), 0.0
        for number in range(400):
            how = random.choice(["now", "soon", "thread"])
            lead = random.choice([-1, 0, 1, 2, 5])  # loop turns from the wait to the message
            if lead < 0:
                say(said("message", text=str(number)), how)
            receiving = asyncio.create_task(alice.recv(timeout=2))
            for _ in range(max(lead, 0)):
                await asyncio.sleep(0)
            if lead >= 0:
                say(said("message", text=str(number)), how)
            asked = time.monotonic()
            assert await receiving == str(number)
            slowest = max(slowest, time.monotonic() - asked)

        # Then bursts, read by four at once: each message read once.
        async def reader() -> list:
            read = []
            try:
                while True:
                    read.append(await alice.recv(timeout=2))
            except ConnectionClosed:
                return read

        readers, sent = [asyncio.create_task(reader()) for _ in range(4)], set()
        for burst in range(100):
            how = random.choice(["now", "soon", "thread"])
            for number in range(random.randint(1, 20)):
                sent.add(f"{burst}.{number}")
                say(said("message", text=f"{burst}.{number}"), how)
            await asyncio.sleep(random.choice([0, 0, 0.0005]))
        await wait_until(lambda: alice.received == 400 + len(sent), 5)  # all arrived
        say(said("close", code=1000, reason=""), "thread")
        read = [message for each in await asyncio.gather(*readers) for message in each]
        await patient
        assert sum(await asyncio.gather(*crowd)) > 0  # waits were given up meanwhile
    assert sorted(read) == sorted(sent)  # each once
    assert alice.close_code == 1000
    assert slowest < 1, f"a message took {slowest:.2f} s to wake its wait"
    assert time.monotonic() - started < 10


# A page numbers what it tells the kernel and tells it again until acknowledged: ipykernel
# may hold one back behind Run All's queued cells while later ones overtake it.


class _Widget:
    """Stands for a browser client's widget: what the kernel tells its pages."""

    def __init__(self) -> None:
        self.told: list[dict] = []

    def send(self, content: dict, buffers: list[bytes] | None = None) -> None:
        self.told.append(content)

    def close(self) -> None:
        pass


@pytest.mark.timeout(60)
async def test_what_a_page_tells_again_is_taken_once_and_in_order_and_acknowledged():
    alice = BrowserClient("ws://127.0.0.1:9/", "alice", "direct", None)
    alice.no_front_end = None  # as drawn in a page
    widget = alice._view = _Widget()  # type: ignore[assignment]

    def said(seq: int, event: str, page: str = "page-1", **content: object) -> dict:
        return {"event": event, "page": page, "seq": seq, **content}

    opening = asyncio.create_task(alice.wait_open(timeout=5))
    alice.hear(said(1, "hello"), [])
    alice.hear(said(2, "open"), [])
    await opening
    assert widget.told[0]["do"] == "connect"

    # 3 is held back; 4 and 5 overtake it: nothing is taken before 3.
    alice.hear(said(4, "message", binary=True), [b"\x00"])
    alice.hear(said(5, "sent", id=None, text="typed"), [])
    with pytest.raises(TimeoutError):
        await alice.recv(timeout=0.2)
    assert (alice.received, alice.sent) == (0, 0)
    # Then 3 told again, its first telling late, and copies: each taken once, in order.
    alice.hear(said(3, "message", text="first"), [])
    alice.hear(said(3, "message", text="first"), [])
    alice.hear(said(4, "message", binary=True), [b"\x00"])
    alice.hear(said(6, "message", text="last"), [])
    alice.hear(said(5, "sent", id=None, text="typed"), [])
    assert [await alice.recv(timeout=1) for _ in range(3)] == ["first", b"\x00", "last"]
    with pytest.raises(TimeoutError):
        await alice.recv(timeout=0.2)
    assert (alice.received, alice.sent) == (3, 1)

    # Another page: numbered on its own, told to stand by; each page acknowledged its own.
    alice.hear(said(1, "hello", page="page-2"), [])
    alice.hear(said(1, "hello", page="page-2"), [])
    await wait_until(lambda: sum(told["do"] == "ack" for told in widget.told) >= 2, 2)
    await asyncio.sleep(0.2)
    acks = [told for told in widget.told if told["do"] == "ack"]
    assert {(ack["page"], ack["seq"]) for ack in acks[-2:]} == {("page-1", 6), ("page-2", 1)}
    assert len(acks) <= 4  # one for what each page said meanwhile, not one per message
    assert [told["page"] for told in widget.told if told["do"] == "stand-by"] == ["page-2"]

    # A page that says "close" twice (told again) closes its client once.
    alice.hear(said(7, "close", code=1001, reason=""), [])
    alice.hear(said(7, "close", code=1000, reason="a copy would be taken too late"), [])
    await alice.wait_closed(timeout=1)
    assert (alice.close_code, alice.close_reason) == (1001, "")
    with pytest.raises(ConnectionClosed):
        await alice.recv(timeout=1)


async def test_a_browser_client_refuses_close_codes_a_browser_cannot_send():
    server = await serve(echo)
    alice = await browser(server, name="alice")
    with pytest.raises(ValueError, match="1000 or a code from 3000 to 4999, not 1001"):
        await alice.close(1001)
    with pytest.raises(ValueError, match="at most 123 bytes"):
        await alice.close(1000, "x" * 124)


# The lessons: every cell runs in CI, under nbval or in the browser


def browser_lessons() -> list[Path]:
    """The notebooks to run in a browser: named by the environment, or the lessons using one."""
    named = os.environ.get("WSPATTERNS_BROWSER_NOTEBOOKS", "").split()
    if named:
        return [Path(each).resolve() for each in named]
    return [path for path in sorted(LESSONS.glob("*.ipynb")) if uses_browser(path)]


def uses_browser(path: Path, call: re.Pattern[str] = BROWSER_CALL) -> bool:
    notebook = nbformat.read(path, as_version=4)
    return any(cell.cell_type == "code" and call.search(cell.source) for cell in notebook.cells)


def untested_cells(paths: list[Path]) -> list[str]:
    """Cells that no test would run: a cell needing a page that nbval does not skip, or one
    that nbval skips (and nbconvert not, or the other way) outside the browser test's lessons."""
    found = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        for number, cell in enumerate(notebook.cells):
            tags = set(cell.metadata.get("tags", []))
            where = f"{path.name}, cell {number}"
            if cell.cell_type == "code" and BROWSER_CALL.search(cell.source):
                if not SKIP_TAGS <= tags:
                    found.append(f"{where} needs a page: tag it {' and '.join(sorted(SKIP_TAGS))}")
            elif tags & SKIP_TAGS and not SKIP_TAGS <= tags:
                found.append(f"{where}: nbval and nbconvert must skip it both")
            elif tags & SKIP_TAGS and not uses_browser(path):
                found.append(f"{where} is skipped by nbval, and no browser test runs {path.name}")
    return found


def test_every_lesson_cell_runs_under_nbval_or_in_a_browser():
    assert untested_cells(sorted(LESSONS.glob("*.ipynb"))) == []


def test_a_cell_no_test_would_run_is_named(tmp_path):
    def notebook(name: str, *cells: tuple[str, list[str]]) -> Path:
        made = nbformat.v4.new_notebook()
        made.cells = [
            nbformat.v4.new_code_cell(source, metadata={"tags": tags}) for source, tags in cells
        ]
        nbformat.write(made, tmp_path / name)
        return tmp_path / name

    both = sorted(SKIP_TAGS)
    good = notebook("good.ipynb", ("alice = await browser(server)", both), ("alice", both))
    assert untested_cells([good]) == []
    untagged = notebook("untagged.ipynb", ("alice = await browser(server)", []))
    half = notebook("half.ipynb", ("await browser(server)", both), ("alice", ["nbval-skip"]))
    stray = notebook("stray.ipynb", ("slow()", both))
    tab = notebook("tab.ipynb", ("dana = browser_tab(chat)", []))
    assert untested_cells([untagged, half, stray, tab]) == [
        "untagged.ipynb, cell 0 needs a page: tag it nbval-skip and skip-execution",
        "half.ipynb, cell 1: nbval and nbconvert must skip it both",
        "stray.ipynb, cell 0 is skipped by nbval, and no browser test runs stray.ipynb",
        "tab.ipynb, cell 0 needs a page: tag it nbval-skip and skip-execution",
    ]


# In Chromium


def needs_chromium() -> None:
    """Skip where Chromium is missing, saying how to install it; fail instead on CI.

    Called first thing in each test, not from a fixture: pytest then sums all those
    skips up in one line.
    """
    if harness.chromium_paths() is not None:
        return
    why = f"Chromium is missing; to run the browser tests: {harness.INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI must run them)")
    pytest.skip(why)


#: Each test in Chromium runs twice: on the route the page chooses, and through the proxy.
ROUTES = pytest.mark.parametrize("route", ["direct", "proxy"])


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """``labs(route)``: a JupyterLab of our own, started on first use, stopped at the end.

    For "proxy", its kernels are told to take the proxy route; for "direct", told nothing
    (an empty route), so the page chooses, whatever the environment running the tests says.
    """
    started: dict[str, harness.Lab] = {}

    def lab_for(route: str) -> harness.Lab:
        if route not in started:
            work = tmp_path_factory.mktemp(f"lab-{route}")
            root = work / "notebooks"
            root.mkdir()
            env = {ROUTE_VARIABLE: "proxy" if route == "proxy" else ""}
            started[route] = harness.start_lab(root, work, env=env)
            started[route].route = route
        return started[route]

    yield lab_for
    for lab in started.values():
        lab.stop()


@pytest.fixture
def chromes():
    """``chromes()``: a headless Chromium, quit at the end of the test."""
    opened = []

    def start():
        opened.append(harness.start_chromium(host_rules="MAP jupyter.test 127.0.0.1"))
        return opened[-1]

    yield start
    for driver in opened:
        driver.quit()


def screenshots(tmp_path: Path) -> Path:
    kept = os.environ.get("WSPATTERNS_SCREENSHOTS")
    return Path(kept) if kept else tmp_path / "screenshots"


SUMMARY = """
def summary(*flows):
    '''Per client name, as the servers recorded it: connections, messages, closes, ends.'''
    seen = {}
    for flow in flows:
        for event in flow.events:
            one = seen.setdefault(event.client, {
                "connections": [], "from_client": 0, "to_client": 0, "sizes": [],
                "closes": [], "ends": []})
            if event.connection not in one["connections"]:
                one["connections"].append(event.connection)
            if event.kind == "message":
                one["from_client" if event.sender == "client" else "to_client"] += 1
                if event.sender == "client":
                    one["sizes"].append(event.size)
            elif event.kind == "close":
                one["closes"].append([event.sender, event.code, event.detail])
            elif event.kind == "end":
                one["ends"].append([event.sender, int(event.code or 0)])
    return seen
"""

SCENARIO = [
    # 0: three servers, and a summary of what they recorded
    """
import asyncio, json
from wspatterns import browser, serve, stop_all
from wspatterns.pubsub import MAX_MESSAGE_SIZE, MemoryHub, hub_handler

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

async def sink(websocket):
    async for message in websocket:
        pass

server = await serve(echo)
hub = await serve(hub_handler(MemoryHub()), name="hub", max_size=MAX_MESSAGE_SIZE)
drain = await serve(sink, max_size=None)
"""
    + SUMMARY,
    # 1: text, binary, empty, non-ASCII, and a close code of the application's
    """
alice = await browser(server, name="alice")
for message in ["hello", b"\\x00\\x01\\xff", "", "héllo ✓"]:
    await alice.send(message)
    print(repr(await alice.recv()))
await alice.close(4000, "done")
print(alice.state.name, alice.close_code, repr(alice.close_reason), alice.route)
""",
    # 2: bad input to the pub/sub hub
    """
bob = await browser(hub, name="bob")
await bob.send("{not json")
print(json.loads(await bob.recv())["error"].split(" (")[0])
carol = await browser(hub, name="carol")
await carol.send(b"\\x00")
await carol.wait_closed()
dave = await browser(hub, name="dave")
await dave.send("x" * (MAX_MESSAGE_SIZE + 1))
await dave.wait_closed()
print("carol", carol.close_code, "dave", dave.close_code)
""",
    # 3: twenty at once (the test runs this cell ten more times)
    """
crowd = [await browser(server, name=f"crowd-{number}") for number in range(20)]
for client in crowd:
    await client.send(client.name)
print("every one got its echo:", all([await client.recv() == client.name for client in crowd]))
""",
    # 4: two that stay open
    """
frank = await browser(drain, name="frank")
erin = await browser(server, name="erin")
await erin.send("still here")
print(await erin.recv())
""",
    # 5: what the servers recorded, read back from the page by the test
    """
print("FACTS", json.dumps(summary(server.flow, hub.flow, drain.flow)))
""",
]

FACTS = "print('FACTS', json.dumps(summary(server.flow, hub.flow, drain.flow)))"


def facts_in(text: str) -> dict:
    [line] = [line for line in text.splitlines() if line.startswith("FACTS ")]
    return json.loads(line.removeprefix("FACTS "))


def kernel_facts(chrome) -> dict:
    answer = harness.execute(chrome, FACTS)
    assert answer["error"] is None, answer
    return facts_in(answer["stdout"])


def wait_in_kernel(chrome, condition: str, limit: float) -> None:
    """Wait until the Python expression ``condition`` holds in the notebook's kernel."""

    def holds() -> bool:
        answer = harness.execute(chrome, f"print({condition})")
        assert answer["error"] is None, answer
        return answer["stdout"].strip() == "True"

    harness.wait_for(holds, limit, f"in the kernel, {condition}", step=0.5)


def passed_on(route: str, code: int) -> set[int]:
    """The close code that reaches the other end when one end closes with ``code``.

    Straight, the code itself. jupyter-server-proxy 4.6 closes each side of a proxied
    connection without a code (1005, no status) when the other side closed, whatever
    code it had; a later version may pass the code on.
    """
    return {code} if route == "direct" else {code, 1005}


@ROUTES
@pytest.mark.timeout(1200)
def test_browser_clients_in_jupyterlab(route, labs, chromes, tmp_path):
    needs_chromium()
    lab, chrome = labs(route), chromes()
    harness.write_notebook(lab.root / "scenario.ipynb", SCENARIO)
    assert harness.open_notebook(chrome, lab, "scenario.ipynb") == "wspatterns"
    cells = harness.run_all(chrome)
    assert harness.errors_in(cells) == []
    out = [harness.text_of(cell) for cell in cells]
    shots = screenshots(tmp_path)
    harness.screenshot_widgets(chrome, shots, f"{lab.route}-scenario")

    # What the page saw, as Python read it back.
    *echoes, closed = out[1].splitlines()
    assert echoes == ["'hello'", "b'\\x00\\x01\\xff'", "''", "'héllo ✓'"]
    # tornado, behind jupyter-server-proxy, answers a close with its code and no reason.
    reasons = ["'done'"] if lab.route == "direct" else ["'done'", "''"]
    assert closed in [f"CLOSED 4000 {reason} {lab.route}" for reason in reasons]
    error, codes = out[2].splitlines()
    assert error == "malformed JSON"
    _, carol_saw, _, dave_saw = codes.split()
    assert int(carol_saw) in passed_on(lab.route, 1003)
    assert int(dave_saw) in passed_on(lab.route, 1009)
    assert out[3].strip() == "every one got its echo: True"
    assert out[4].strip() == "still here"

    # What the servers recorded: the page's messages, closes with the right codes.
    facts = facts_in(out[5])
    alice = facts["alice"]
    assert (alice["from_client"], alice["to_client"]) == (4, 4)
    assert alice["sizes"] == [5, 3, 0, len("héllo ✓".encode())]
    [(sender, code, reason), _echo] = alice["closes"]
    assert sender == "client" and code in passed_on(lab.route, 4000)
    assert reason == ("done" if code == 4000 else "")
    assert facts["bob"]["from_client"] == facts["bob"]["to_client"] == 1
    carol, dave = facts["carol"], facts["dave"]
    assert carol["closes"][0][:2] == ["server", 1003] and carol["from_client"] == 1
    assert dave["closes"][0][:2] == ["server", 1009] and dave["from_client"] == 0

    # The crowd's cell, run ten more times: each run replaces the last, nothing leaks.
    for _ in range(10):
        cell = harness.run_cell(chrome, 3)
        assert harness.errors_in([cell]) == []
        assert harness.text_of(cell).strip() == "every one got its echo: True"
    facts = kernel_facts(chrome)
    for number in range(20):
        crowd = facts[f"crowd-{number}"]
        assert len(crowd["connections"]) == 11
        assert (crowd["from_client"], crowd["to_client"]) == (11, 11)
        assert len(crowd["ends"]) == 10  # the last one is still open
        assert {code for _, code in crowd["ends"]} <= passed_on(lab.route, 1000)
    wait_in_kernel(chrome, "len(server.connections) == 21 and len(drain.connections) == 1", 30)
    held = harness.page_clients(chrome)
    assert sorted(held["open"]) == sorted(
        ["bob", "frank", "erin"] + [f"crowd-{number}" for number in range(20)]
    )
    assert held["models"] == 4 + 20 + 2  # alice, bob, carol, dave, the crowd, frank, erin
    assert harness.console_errors(chrome) == []

    # A reloaded page ends every client it held, with 1001 (going away).
    harness.reload_page(chrome)
    harness.open_notebook(chrome, lab, "scenario.ipynb")
    wait_in_kernel(chrome, "erin.state.name == 'CLOSED' and crowd[-1].state.name == 'CLOSED'", 60)
    facts = kernel_facts(chrome)
    going_away = passed_on(lab.route, 1001)
    assert facts["erin"]["closes"][0][:2][0] == "client"
    assert facts["erin"]["closes"][0][1] in going_away
    assert facts["crowd-7"]["ends"][-1][1] in going_away
    answer = harness.execute(chrome, "print(erin.close_code, erin.why)")
    code, why = answer["stdout"].split(" ", 1)
    assert int(code) in going_away and "its page said nothing" in why and "reloaded" in why
    # The one handler error: 4000 is not a normal close, so alice's `async for` raised.
    # (Through the proxy the server saw 1005 instead, a normal close: no error.)
    answer = harness.execute(chrome, "print(json.dumps([str(each) for each in server.errors]))")
    reports = json.loads(answer["stdout"])
    if facts["alice"]["closes"][0][1] == 1005:
        assert reports == []
    else:
        [report] = reports
        assert "ended with ConnectionClosedError for alice" in report and "code 4000" in report
    wait_in_kernel(chrome, "len(server.connections) == 0", 30)

    # A tab closed while its page sends a large message: recorded whole or not at all.
    cell = harness.run_cell(chrome, 4)
    assert harness.errors_in([cell]) == []
    assert harness.page_clients(chrome)["open"] == ["frank", "erin"]
    assert harness.console_errors(chrome) == []
    big = """
      const clients = [...globalThis.__wspatterns_browser_clients__.values()];
      const frank = clients.find((c) => c.model.get("name") === "frank" && c.socket);
      frank.socket.send(new Uint8Array(48 << 20));
    """
    harness.close_tab(chrome, before=big)
    harness.open_notebook(chrome, lab, "scenario.ipynb")
    wait_in_kernel(chrome, "frank.state.name == 'CLOSED' and erin.state.name == 'CLOSED'", 60)
    wait_in_kernel(chrome, "len(drain.connections) == 0 and len(server.connections) == 0", 30)
    facts = kernel_facts(chrome)
    frank = facts["frank"]
    print(f"{lab.route}: a tab closed while sending 48 MiB: {frank}")  # which case, with -s
    assert frank["sizes"][len(frank["sizes"]) - 1 :] in ([], [48 << 20])  # whole, if at all
    assert frank["ends"][-1][1] in going_away | {1006}
    assert facts["erin"]["ends"][-1][1] in going_away
    answer = harness.execute(chrome, "print(json.dumps([str(each) for each in drain.errors]))")
    for report in json.loads(answer["stdout"]):
        assert "ConnectionClosedError for frank" in report  # said legibly, if said at all
    assert harness.console_errors(chrome) == []

    # stop_all() closes what is left; nothing stays open on either side.
    answer = harness.execute(chrome, "await stop_all(); print(server.connections, hub.connections)")
    assert answer["stdout"] == "set() set()\n"
    assert harness.page_clients(chrome)["open"] == []
    assert harness.console_errors(chrome) == []


OTHER_HOST = [
    "from wspatterns import browser, serve\n\nasync def echo(websocket):\n"
    "    async for message in websocket:\n        await websocket.send(message)\n\n"
    "server = await serve(echo)",
    "remote = await browser(server, name='remote')\nawait remote.send('far away')\n"
    "print(await remote.recv())\nprint(remote.route)\nprint(remote.why)\nawait remote.close()",
]


@ROUTES
@pytest.mark.timeout(600)
def test_a_page_from_another_host_goes_through_the_proxy(route, labs, chromes):
    needs_chromium()
    lab, chrome = labs(route), chromes()
    # jupyter.test is 127.0.0.1 to this Chromium, but the page cannot know: as on a hub.
    harness.write_notebook(lab.root / "other_host.ipynb", OTHER_HOST)
    harness.open_notebook(chrome, lab, "other_host.ipynb", host="jupyter.test")
    cells = harness.run_all(chrome)
    assert harness.errors_in(cells) == []
    got, route, why = harness.text_of(cells[1]).splitlines()
    assert (got, route) == ("far away", "proxy")
    if lab.route == "direct":  # chosen by the page, not forced
        assert why == (
            f"this page comes from jupyter.test:{lab.port}, not the kernel's machine: "
            "through jupyter-server-proxy"
        )
    assert harness.console_errors(chrome) == []
    harness.shutdown_kernels(lab)


@pytest.mark.timeout(600)
def test_without_jupyter_server_proxy_a_far_page_says_what_to_install(chromes, tmp_path):
    """A hub or remote JupyterLab whose server lacks jupyter-server-proxy: one line, at once."""
    needs_chromium()
    root = tmp_path / "notebooks"
    root.mkdir()
    lab = harness.start_lab(
        root, tmp_path, env={ROUTE_VARIABLE: ""},
        args=["--ServerApp.jpserver_extensions", "jupyter_server_proxy=False"],
    )  # fmt: skip
    try:
        chrome = chromes()
        harness.write_notebook(root / "no_proxy.ipynb", NO_PROXY)
        harness.open_notebook(chrome, lab, "no_proxy.ipynb", host="jupyter.test")
        cells = harness.run_all(chrome)
        assert harness.errors_in(cells) == []
        [line] = harness.text_of(cells[1]).splitlines()
        assert line.startswith("remote could not connect: http://jupyter.test:"), line
        assert line.endswith(
            "answered 404: is jupyter-server-proxy installed where the Jupyter server runs "
            "(pip install jupyter-server-proxy, then restart the server)?"
        ), line
    finally:
        lab.stop()


NO_PROXY = [
    OTHER_HOST[0],
    "from wspatterns.browsers import BrowserConnectionError\n\n"
    "try:\n    remote = await browser(server, name='remote')\n    await remote.recv()\n"
    "except BrowserConnectionError as exc:\n    print(exc)",
]


NOWHERE = [
    "import socket\nfrom wspatterns import browser\nfrom wspatterns.browsers import "
    "BrowserConnectionError\n\nwith socket.socket() as unused:  # a port nobody listens on\n"
    "    unused.bind(('127.0.0.1', 0))\n    port = unused.getsockname()[1]",
    "for route in ('direct', 'proxy'):\n    try:\n"
    "        lost = await browser(f'ws://127.0.0.1:{port}/', name=f'lost-{route}', route=route)\n"
    "        await lost.recv()  # through the proxy, the page's socket opens, then fails\n"
    "    except BrowserConnectionError as exc:\n        print(exc)",
]


@ROUTES
@pytest.mark.timeout(600)
def test_a_page_that_cannot_connect_says_why(route, labs, chromes, tmp_path):
    needs_chromium()
    lab, chrome = labs(route), chromes()
    harness.write_notebook(lab.root / "nowhere.ipynb", NOWHERE)
    harness.open_notebook(chrome, lab, "nowhere.ipynb")
    cells = harness.run_all(chrome)
    assert harness.errors_in(cells) == []
    harness.screenshot_widgets(chrome, screenshots(tmp_path), f"{lab.route}-nowhere")
    direct, proxy = harness.text_of(cells[1]).splitlines()
    port = re.search(r"ws://127\.0\.0\.1:(\d+)/", direct).group(1)
    assert direct == (
        f"lost-direct could not connect: could not open ws://127.0.0.1:{port}/?name=lost-direct "
        f"from this page (127.0.0.1:{lab.port}), code 1006. Is the server still running? If "
        "this browser is not on the kernel's machine, that address is not the kernel's: use "
        'route="proxy" (jupyter-server-proxy).'
    )
    assert re.fullmatch(
        f"lost-proxy could not connect: jupyter-server-proxy could not reach port {port} "
        r"\(HTTP 5\d\d\): is the server still running\?",
        proxy,
    )
    # The browser logs each failed attempt; nothing else.
    errors = harness.console_errors(chrome)
    assert len(errors) == 2 and all(f"{port}/?name=lost-" in error for error in errors), errors
    harness.shutdown_kernels(lab)


HELD_BACK = [
    "from wspatterns import browser, serve\n\nasync def echo(websocket):\n"
    "    async for message in websocket:\n        await websocket.send(message)\n\n"
    "server = await serve(echo)\ncarol = await browser(server, name='carol')",
]

# In the page: the next "message" event carol's page tells the kernel is held back
# `late` ms, as ipykernel holds back one arriving as a cell ends; the page tells it again.
HOLD_BACK = """
const [late] = arguments;
const clients = [...globalThis.__wspatterns_browser_clients__.values()];
const carol = clients.find((c) => c.model.get("name") === "carol" && c.socket);
const send = carol.model.send.bind(carol.model);
let held = false;
carol.model.send = (content, callbacks, buffers) => {
  if (!held && content.event === "message") {
    held = true;
    setTimeout(() => send(content, callbacks, buffers), late);
    return;
  }
  send(content, callbacks, buffers);
};
"""

UNACKED = """
const clients = [...globalThis.__wspatterns_browser_clients__.values()];
return clients.find((c) => c.model.get("name") === "carol" && c.socket).unacked.size;
"""


@pytest.mark.timeout(600)
def test_a_page_event_held_back_is_told_again_and_taken_once_in_order(labs, chromes):
    needs_chromium()
    lab, chrome = labs("direct"), chromes()
    harness.write_notebook(lab.root / "held_back.ipynb", HELD_BACK)
    harness.open_notebook(chrome, lab, "held_back.ipynb")
    assert harness.errors_in(harness.run_all(chrome)) == []
    chrome.execute_script(HOLD_BACK, 3000)
    answer = harness.execute(
        chrome,
        "await carol.send('one'); await carol.send('two')\n"
        "print(await carol.recv(timeout=2.5), await carol.recv(timeout=2.5))",
    )
    assert answer["error"] is None, answer
    assert answer["stdout"] == "one two\n"  # told again within 2.5 s, before "two"
    time.sleep(seconds := 3.5)  # the first telling arrives late: not taken again
    answer = harness.execute(chrome, "print(carol.received, carol.sent)")
    assert answer["stdout"] == "2 2\n", f"after {seconds} s: {answer}"
    harness.wait_for(lambda: chrome.execute_script(UNACKED) == 0, 5, "every event acknowledged")
    assert harness.console_errors(chrome) == []
    harness.shutdown_kernels(lab)


CHECK_LESSON = """
import json as _json
from wspatterns.browsers import BrowserClient as _BrowserClient

def _browser_clients():
    found = []
    for value in list(get_ipython().user_ns.values()):
        values = value.values() if isinstance(value, dict) else value
        values = values if isinstance(values, (list, tuple, set, type({}.values()))) else [value]
        found += [each for each in values if isinstance(each, _BrowserClient) and each not in found]
    return found

_facts = []
for _client in _browser_clients():
    _mine = [event for event in (_client.server.flow.events if _client.server else [])
             if event.connection == _client.connection and event.kind == "message"
             and event.at == "server"]
    _facts.append({
        "name": _client.name, "route": _client.route, "sent": _client.sent,
        "received": _client.received, "connection": _client.connection,
        "recorded_from": sum(event.sender == "client" for event in _mine),
        "recorded_to": sum(event.sender == "server" for event in _mine)})
print("FACTS", _json.dumps(_facts))
"""


def page_cells(path: Path) -> list[nbformat.NotebookNode]:
    """The code cells of a lesson that need a notebook page: nbval skips them."""
    cells = nbformat.read(path, as_version=4).cells
    return [cell for cell in cells if cell.cell_type == "code" and SKIP_TAGS & set(tags(cell))]


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def as_committed(output: dict, picture: bytes | None) -> dict:
    """An output of a run in JupyterLab as a lesson keeps it. A widget's view would draw
    nothing without its kernel (its state is not saved with the notebook): a browser client
    becomes ``picture``, its page as the run left it; anything else keeps its text."""
    output = {key: value for key, value in output.items() if key != "execution_count"}
    data = output.get("data", {})
    if any("widget" in key for key in data):
        if picture is not None:
            data = {"image/png": base64.b64encode(picture).decode()}
        else:
            data = {key: value for key, value in data.items() if "widget" not in key}
        output["data"] = data
    if output["output_type"] == "execute_result":
        output["execution_count"] = None  # not numbered with the run that made the others
    return output


def save_page_outputs(lesson: Path, ran: list[dict], pictures: dict[int, bytes]) -> None:
    """Write into ``lesson`` what its page cells showed in JupyterLab (``ran``)."""
    notebook = nbformat.read(lesson, as_version=4)
    assert len(notebook.cells) == len(ran), f"{lesson.name} changed while it ran"
    for index, (cell, run) in enumerate(zip(notebook.cells, ran, strict=True)):
        if cell.cell_type == "code" and SKIP_TAGS & set(tags(cell)):
            assert cell.source == run["source"], f"{lesson.name} changed while it ran"
            picture = pictures.get(index)
            outputs = [as_committed(output, picture) for output in run["outputs"]]
            cell.outputs = [nbformat.from_dict(output) for output in outputs]
            cell.execution_count = None
    nbformat.write(notebook, lesson)


def test_what_a_page_cell_shows_is_committed_under_it():
    """A reader of a committed lesson sees under each cell that needs a page what it showed
    in a real JupyterLab (``make browser-outputs`` writes it): output, no error, no widget
    that cannot draw without its kernel."""
    missing = []
    for lesson in browser_lessons():
        for cell in page_cells(lesson):
            where = f"{lesson.name}: {cell.source.splitlines()[0][:60]!r}"
            kinds = [output.output_type for output in cell.outputs]
            if not kinds or "error" in kinds:
                missing.append(f"{where} shows {kinds or 'nothing'}")
            for output in cell.outputs:
                if any("widget" in key for key in output.get("data", {})):
                    missing.append(f"{where} keeps a widget's view")
    assert browser_lessons() and not missing, "run `make browser-outputs`:\n" + "\n".join(missing)


# Served from 127.0.0.1, the lessons' pages take the direct route; tests/test_hub.py runs
# them for several students on a real JupyterHub, where they go through the proxy.
@pytest.mark.parametrize("route", ["direct"])
@pytest.mark.timeout(1800)
def test_lessons_in_a_browser(route, labs, chromes, tmp_path):
    needs_chromium()
    lessons = browser_lessons()
    if not lessons:
        pytest.skip("no lesson creates a browser client (set WSPATTERNS_BROWSER_NOTEBOOKS)")
    lab, chrome = labs(route), chromes()
    folder = lab.root / "lessons"
    shutil.copytree(LESSONS, folder, dirs_exist_ok=True)
    for lesson in lessons:
        shutil.copy(lesson, folder / lesson.name)
        path = f"lessons/{lesson.name}"
        harness.open_notebook(chrome, lab, path)
        cells = harness.run_all(chrome)
        harness.screenshot_widgets(chrome, screenshots(tmp_path), f"{lab.route}-{lesson.stem}")
        assert harness.errors_in(cells) == [], lesson.name
        if os.environ.get("WSPATTERNS_SAVE_OUTPUTS"):
            save_page_outputs(lesson, cells, harness.pictures_of_clients(chrome))
        answer = harness.execute(chrome, CHECK_LESSON)
        assert answer["error"] is None, answer
        facts = facts_in(answer["stdout"])
        # A lesson with tabs only keeps no browser client: its cells wait for each tab to
        # reach the program, and fail (errors_in above) if one does not.
        if uses_browser(lesson, CLIENT_CALL):
            assert facts, f"{lesson.name} kept no browser client to check"
            assert sum(client["sent"] + client["received"] for client in facts) > 0
        for client in facts:
            assert client["route"] == lab.route, client
            assert client["connection"] is not None, client
            assert (client["recorded_from"], client["recorded_to"]) == (
                client["sent"],
                client["received"],
            ), client
        assert harness.console_errors(chrome) == [], lesson.name
        harness.shutdown_kernels(lab)


# The terminal's page


@pytest.mark.timeout(300)
def test_the_terminal_server_serves_a_page_and_says_who_comes_and_goes(tmp_path):
    needs_chromium()
    from selenium.webdriver.common.by import By

    process = subprocess.Popen(
        [sys.executable, "-m", "wspatterns", "serve", "echo", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    chrome = None
    try:
        first = process.stdout.readline()
        page = process.stdout.readline().split()[4]
        assert first.startswith("serving echo on ws://127.0.0.1:")
        chrome = harness.start_chromium()
        chrome.get(page + "?name=tabby")

        def state() -> str:
            return chrome.find_element(By.CSS_SELECTOR, ".wsp-state").text

        harness.wait_for(lambda: state() == "open", harness.seconds(30), "the page connects")
        assert re.fullmatch(
            r"\d\d:\d\d:\d\d tabby connected from 127\.0\.0\.1:\d+ \(1 open\)\n",
            process.stdout.readline(),
        )
        box = chrome.find_element(By.CSS_SELECTOR, ".wsp-input")
        box.send_keys("typed in a tab")
        chrome.find_element(By.CSS_SELECTOR, ".wsp-send").click()
        harness.wait_for(
            lambda: chrome.find_elements(By.CSS_SELECTOR, ".wsp-in .wsp-text"),
            harness.seconds(30), "the echo arrives",
        )  # fmt: skip
        received = chrome.find_element(By.CSS_SELECTOR, ".wsp-in .wsp-text").text
        assert received == "typed in a tab"
        harness.screenshot_widgets(chrome, screenshots(tmp_path), "terminal-page")
        assert harness.console_errors(chrome) == []
        harness.close_tab(chrome)
        assert re.fullmatch(
            r"\d\d:\d\d:\d\d tabby closed: 1001 going away \(0 open\)\n", process.stdout.readline()
        )
    finally:
        if chrome is not None:
            chrome.quit()
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=harness.seconds(20))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    assert process.returncode == 0
