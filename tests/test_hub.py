"""A class on one real JupyterHub: several students run the same lessons at the same time.

The hub is deploy/jupyterhub_config.py, as a teacher starts it, reached at this
machine's non-loopback address, so every page is served as a remote hub's are,
under ``/user/NAME/``, and browser clients go through jupyter-server-proxy by
themselves. Each student logs in through the hub's login page in a headless
Chromium of their own and presses Run All; nobody sets a variable or edits a cell.

Without Chromium, the hub's proxy or a non-loopback address, these tests are
skipped saying what is missing, except on CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from . import browser_harness as harness
from . import hub_harness
from .test_browser import CHECK_LESSON, facts_in

ROOT = Path(__file__).parent.parent
LESSONS = ROOT / "notebooks"
STUDENTS = ("ada", "ben", "cy")
#: Every lesson with browser clients or tabs, and 05 for Redis and worker processes.
CLASS_LESSONS = [
    "00b_seeing_the_flow.ipynb",
    "04_registration_and_broadcast.ipynb",
    "05_pubsub_across_processes.ipynb",
    "06_chat_application.ipynb",
    "06b_chat_across_processes.ipynb",
]

pytestmark = pytest.mark.timeout(1800)


def needs_a_hub() -> str:
    """This machine's outside address; skip (fail on CI) naming what a hub needs and lacks."""
    missing = []
    if harness.chromium_paths() is None:
        missing.append(f"Chromium ({harness.INSTALL})")
    if not hub_harness.PROXY.exists():
        missing.append(f"the hub's proxy ({hub_harness.INSTALL_PROXY})")
    address = hub_harness.outside_address()
    if address is None:
        missing.append("a non-loopback network address to serve the hub on")
    if missing:
        why = "the JupyterHub tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} (CI must run them)")
        pytest.skip(why)
    assert address is not None
    return address


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    address = needs_a_hub()
    work = tmp_path_factory.mktemp("hub")
    started = hub_harness.start_hub(work, LESSONS, address)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def students(hub):
    """Three students, each logged in through the hub's page in a Chromium of their own."""
    class_ = [hub_harness.Student(name, hub) for name in STUDENTS]
    try:
        together(lambda student: student.log_in(), class_)
        yield class_
    finally:
        for student in class_:
            student.quit()


def together(work, students):
    """``work(student)`` for every student at once, each in a thread; their results in order."""
    with ThreadPoolExecutor(len(students)) as pool:
        return list(pool.map(work, students))


class PortWatch:
    """Who listens on which port, sampled while a class works: no port may be two students'.

    Two processes listen on one port only with SO_REUSEPORT (lesson 06b does it on
    purpose, within one student); between students it would mix their messages.
    """

    def __init__(self, hub: hub_harness.Hub):
        self.hub = hub
        self.owners: dict[int, set[str]] = defaultdict(set)
        self.samples = 0
        self.shared: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PortWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(harness.seconds(30))

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def sample(self) -> None:
        whose: dict[int, str] = {}
        for name, server in self.hub.servers().items():
            try:
                tree = [server, *server.children(recursive=True)]
            except psutil.Error:
                continue
            whose.update({each.pid: name for each in tree})
        now: dict[int, set[str]] = defaultdict(set)
        for connection in psutil.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN and connection.pid in whose:
                now[connection.laddr.port].add(whose[connection.pid])
        for port, names in now.items():
            self.owners[port] |= names
            if len(names) > 1:
                self.shared.append(f"port {port}: {sorted(names)}")
        self.samples += 1


def run_lesson(student: hub_harness.Student, lesson: str) -> dict:
    """Open ``lesson``, Run All, and collect what a test checks; the kernel is shut down after."""
    kernel = student.open(lesson)
    started = time.monotonic()
    cells = student.run_all()
    seconds = time.monotonic() - started
    facts = student.execute(CHECK_LESSON)
    result = {
        "name": student.name,
        "kernel": kernel,
        "errors": harness.errors_in(cells),
        "facts": facts,
        "console": harness.lesson_console_errors(student.chrome),
        "seconds": seconds,
    }
    student.shut_down_kernel()
    return result


@pytest.mark.parametrize("lesson", CLASS_LESSONS)
def test_a_class_runs_the_lesson_at_the_same_time(hub, students, lesson):
    with PortWatch(hub) as ports:
        results = together(lambda student: run_lesson(student, lesson), students)
    for result in results:
        assert result["kernel"] == "wspatterns", result["name"]
        assert result["errors"] == [], (result["name"], lesson)
        assert result["facts"]["error"] is None, result
        for client in facts_in(result["facts"]["stdout"]):
            # A page from the hub's address reaches the kernel's servers through the proxy.
            assert client["route"] == "proxy", (result["name"], client)
            assert client["connection"] is not None, (result["name"], client)
            assert (client["recorded_from"], client["recorded_to"]) == (
                client["sent"],
                client["received"],
            ), (result["name"], client)
        assert result["console"] == [], (result["name"], lesson)
    assert ports.samples > 0 and ports.owners, "the watch saw no student's server listen"
    assert ports.shared == []


# Faults: a kernel killed or restarted, a tab closed, two lessons at once, the proxy restarted


def commands(processes: list[psutil.Process]) -> set[str]:
    """The words of their command lines, paths cut to file names (redis-server, chat_node.py)."""
    return {Path(word).name for each in processes for word in hub_harness.command_of(each).split()}


def test_a_student_in_trouble_breaks_nothing_of_the_others(hub, students):
    """Ada's kernel is killed mid-lesson, Ben restarts his, Cy runs two lessons at once
    and closes one tab mid-lesson: the others' lessons run to the end, nothing is left."""
    ada, ben, cy = students
    cy_again = hub_harness.Student("cy", hub)  # Cy's second tab, with the same login
    cy_again.log_in()
    try:

        def ada_killed():
            ada.open("05_pubsub_across_processes.ipynb")
            cells = ada.run_through('start_workers(2, hub="redis"')  # Redis and two workers
            kernel = ada.kernel()
            started = kernel.children(recursive=True)
            running = commands(started)
            kernel.kill()  # SIGKILL, as the out-of-memory killer does
            return cells, (started, running)

        def ben_restarts():
            ben.open("06b_chat_across_processes.ipynb")
            cells = ben.run_through("members.append(Member(")  # Redis, two programs, clients
            started = ben.kernel().children(recursive=True)
            running = commands(started)
            ben.restart_kernel()
            ben.open("06b_chat_across_processes.ipynb")  # then, in the fresh kernel, from the top
            return cells, (started, running), ben.run_all()

        def cy_lesson_05():
            return run_lesson(cy, "05_pubsub_across_processes.ipynb")

        def cy_closes_06b():
            cy_again.open("06b_chat_across_processes.ipynb")
            cells = cy_again.run_through("members.append(Member(")
            cy_again.quit()  # the tab closes mid-lesson: what the kernel started goes on
            return cells

        with ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(work)
                for work in (ada_killed, ben_restarts, cy_lesson_05, cy_closes_06b)
            ]
            (
                (ada_ran, (ada_started, ada_had)),
                (ben_ran, (ben_started, ben_had), ben_again),
                cy_05,
                cy_ran,
            ) = [future.result(timeout=harness.seconds(900)) for future in futures]
        for name, cells in {"ada": ada_ran, "ben": ben_ran, "cy": cy_ran}.items():
            assert harness.errors_in(cells) == [], name
        assert {"redis-server", "wspatterns.pubsub.worker_process"} <= ada_had
        assert {"redis-server", "chat_node.py"} <= ben_had
        assert hub_harness.outlived(ada_started) == [], "what ada's kernel started outlived it"
        assert hub_harness.outlived(ben_started) == [], (
            "what ben's kernel started outlived its restart"
        )
        assert harness.errors_in(ben_again) == [], "ben's lesson after the restart"
        assert cy_05["errors"] == [], "cy's lesson 05, beside her other tab"
        for student in (ada, ben):
            student.shut_down_kernel()
    finally:
        cy_again.quit()


PROXY_RESTART = [
    "import asyncio\nfrom wspatterns import browser, serve\n\n\n"
    "async def echo(websocket):\n    async for message in websocket:\n"
    "        await websocket.send(message)\n\n\nserver = await serve(echo)",
    "alice = await browser(server, name='alice')\nawait alice.send('before')\n"
    "print(await alice.recv())",
    # Run once the hub's proxy has died and come back.
    "async with asyncio.timeout(30):\n    await alice.wait_closed(timeout=None)\n"
    "print(alice.state.name, alice.close_code)\nprint(alice.why)",
    "bob = await browser(server, name='bob')\nawait bob.send('after')\nprint(await bob.recv())",
]


def test_the_proxy_restarts_under_a_class_browser_clients_say_so_and_new_ones_work(hub, students):
    ada = students[0]
    harness.write_notebook(hub.homes / "ada" / "proxy_restart.ipynb", PROXY_RESTART)
    ada.open("proxy_restart.ipynb")
    assert harness.text_of(ada.run_cell(0)) == ""
    assert harness.text_of(ada.run_cell(1)) == "before\n"
    proxy = hub.proxy()
    proxy.kill()  # the hub notices within seconds and starts a new one
    harness.wait_for(
        lambda: (hub.proxy() or proxy).pid != proxy.pid and ada.kernel_connected(),
        harness.seconds(120), "the hub restarts its proxy, and the page reaches its kernel again",
    )  # fmt: skip
    state, why = harness.text_of(ada.run_cell(2)).splitlines()
    # The page's socket went down with the proxy (1006); the server may say first (1005).
    assert state in ("CLOSED 1006", "CLOSED 1005"), state
    assert "proxy" in why or "1006" in why, why
    assert harness.text_of(ada.run_cell(3)) == "after\n"
    assert ada.execute("await server.stop()")["error"] is None
    ada.shut_down_kernel()


def test_when_the_hub_stops_nothing_is_left(hub, students):
    for student in students:
        student.quit()
    assert hub_harness.BROWSERS_LEFT == []
    left_by_hub = hub.stop()
    assert left_by_hub == []
    # Whatever a student's server started has its HOME among the hub's homes: none may remain.
    strays = []
    for each in psutil.process_iter():
        try:
            home = each.environ().get("HOME", "")
        except psutil.Error:
            continue
        if home.startswith(str(hub.homes)):
            strays.append(f"{each.pid} {hub_harness.command_of(each)[:120]}")
    assert strays == []


def test_only_a_chat_pages_retries_are_left_out_of_a_lessons_console():
    retry = (
        "http://192.0.2.2:56297/user/ada/proxy/50977/lobby?name=erin&token=x 19 WebSocket "
        "connection to 'ws://192.0.2.2:56297/user/ada/proxy/50977/lobby?name=erin&token=x' "
        "failed: "
    )
    assert harness.is_chat_page_retry(retry)
    assert not harness.is_chat_page_retry(
        "http://127.0.0.1:8888/lab 2 WebSocket connection to 'ws://127.0.0.1:4000/?name=alice' "
        "failed: "
    )  # a browser client of the kit's: an error
    assert not harness.is_chat_page_retry("http://127.0.0.1:8888/lab 7 Uncaught TypeError: x")
    assert not harness.is_chat_page_retry(retry.replace("failed: ", "failed: Error 403"))
