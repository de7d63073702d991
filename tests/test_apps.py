"""A learner's program as a process: started, recorded, stopped with SIGTERM or killed, and gone.

Programs here are plain websockets, as lesson 06 writes them; the kit only starts them,
reads their flow when they opt in with ``**recorded()``, and stops them.
"""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import psutil
import pytest
import websockets
from jupyter_client.manager import KernelManager
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

import wspatterns
from wspatterns.apps import free_port, recorded, start_app
from wspatterns.apps.output import OUTPUT_FIRST, OUTPUT_LATEST, REPORTS_KEPT, SHOWN_PER_CELL
from wspatterns.apps.recording import NAME_VARIABLE
from wspatterns.errors import ProcessFailed
from wspatterns.flow import CAP
from wspatterns.flow.events import HEAD
from wspatterns.flow.recording import without_secrets
from wspatterns.runtime.processes import LINE_KEPT

from .utils import BOUND, MS, eventually, execute, kernel_manager, run_python

PROGRAM = """
import asyncio, http, os, signal
from websockets.asyncio.server import serve
from wspatterns.apps import recorded

async def echo(websocket):
    async for message in websocket:
        if message == "fail":
            raise KeyError("a learner's bug")
        await websocket.send(message)

def health(connection, request):
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\\n")

async def main():
    options = {} if os.environ.get("UNRECORDED") else recorded()
    async with serve(echo, "127.0.0.1", int(os.environ["PORT"]), process_request=health,
                     reuse_port=True, **options) as server:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.close)
        print("serving", flush=True)
        await server.serve_forever()
    print("stopped", flush=True)

asyncio.run(main())
"""


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "echo_app.py"
    path.write_text(PROGRAM)
    return path


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# The program's side


def test_run_by_hand_a_program_gets_nothing_from_recorded(monkeypatch):
    monkeypatch.delenv(NAME_VARIABLE, raising=False)
    assert recorded() == {}


def test_a_flow_keeps_no_secret_of_a_url():
    assert without_secrets("/lobby?name=a&token=s3cr3t&Key=k") == "/lobby?name=a&token=***&Key=***"
    assert without_secrets("/lobby") == "/lobby"
    assert without_secrets("/?room=kitchen") == "/?room=kitchen"


# Starting, talking, stopping


async def test_a_program_is_started_recorded_and_stopped_with_sigterm(program):
    app = await start_app(program, name="echo-1")
    assert await app.get("/healthz") == (200, "OK\n")
    client = await app.connect("alice", "/room?token=s3cr3t")
    await client.send("hi")
    assert await client.recv() == "hi"
    assert await app.clients() == ["alice"]
    flow = await app.flow()
    # Both ends of one connection, paired: the program's end and the notebook's.
    ends = {(event.at, event.sender) for event in flow if event.kind == "message"}
    assert ends == {("client", "client"), ("server", "client"), ("client", "server"),
                    ("server", "server")}  # fmt: skip
    assert len({event.connection for event in flow}) == 1
    assert {event.detail for event in flow if event.kind == "open"} == {"/room?token=***"}

    assert await app.stop() == 0  # SIGTERM: the program ended by itself
    assert app.output == ["serving", "stopped"]
    with pytest.raises(ConnectionClosedOK):
        await client.recv()
    assert client.close_code == 1001
    final = await app.flow()  # what the program told as it ended: its close and its end
    closes = [event for event in final if event.kind == "close" and event.at == "server"]
    assert [(event.sender, event.code) for event in closes] == [("server", 1001), ("client", 1001)]
    assert any(event.kind == "end" and event.at == "server" for event in final)
    assert gone(app.pid)


async def test_a_crash_drops_the_connections_and_keeps_the_flow_seen_before(program):
    app = await start_app(program, name="echo-1")
    client = await app.connect("bob")
    await client.send("before")
    await client.recv()
    assert await app.crash() == -signal.SIGKILL
    with pytest.raises(ConnectionClosedError):
        await client.recv()
    assert client.close_code == 1006
    flow = await app.flow()
    server_side = [(event.kind, event.code, event.detail) for event in flow if event.at == "server"]
    # What it recorded before it died, then the crash, as the kit saw it: the end of bob's
    # connection, lost, with nothing said by the server.
    assert server_side == [
        ("open", None, "/"), ("message", None, ""), ("message", None, ""),
        ("end", 1006, "echo-1 killed"),
    ]  # fmt: skip
    assert "connection lost (1006: echo-1 killed)" in flow.sequence().text
    assert flow.dropped == 0 and flow.recorded == len(flow)
    assert gone(app.pid)


async def test_two_programs_share_a_port_and_each_start_waits_for_its_own(program):
    first = await start_app(program, name="echo-1")
    second = await start_app(program, name="echo-2", port=first.port, flow=first.local)
    listening = [
        conn.pid for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == first.port
    ]  # fmt: skip
    assert sorted(listening) == sorted([first.pid, second.pid])
    await first.crash()
    client = await second.connect("carol")  # the same address: only the second answers now
    await client.send("still here")
    assert await client.recv() == "still here"


async def test_a_program_slow_to_listen_is_waited_for_without_a_scan_at_every_look(
    program, monkeypatch
):
    # A scan of the machine's connections holds the loop for milliseconds (tens, with
    # thousands of sockets open): start_app scans when the program opened a file, or seldom.
    slow = program.with_name("slow_app.py")
    slow.write_text("import time\ntime.sleep(1)\n" + PROGRAM)
    scans = []
    scan = psutil.Process.net_connections
    monkeypatch.setattr(
        psutil.Process, "net_connections", lambda *args, **kw: scans.append(1) or scan(*args, **kw)
    )
    app = await start_app(slow, name="slow")
    try:
        assert await app.get("/healthz") == (200, "OK\n")
    finally:
        await app.stop()
    assert len(scans) <= 40  # a scan at each look, every 5 ms, would have made some 200


async def test_a_port_taken_by_a_program_that_does_not_share_fails_with_its_last_words(program):
    from .utils import echo

    taker = await wspatterns.serve(echo)
    with pytest.raises(ProcessFailed, match="exited with code 1.*last words: OSError"):
        await start_app(program, name="echo-1", port=taker.port)
    assert wspatterns.runtime.lifecycle.of_kind("process") == []


async def test_a_program_that_records_nothing_says_what_is_missing(program):
    app = await start_app(program, name="echo-1", env={"UNRECORDED": "1"}, timeout=BOUND)
    with pytest.raises(ProcessFailed, match=r"does it pass \*\*recorded\(\) to serve\(\)"):
        await app.export(timeout=0.5)


async def test_a_flow_at_the_cap_comes_back_whole_every_time_and_the_program_goes_on(program):
    app = await start_app(program, name="echo-1")
    client = await app.connect("alice")
    count = CAP // 2 + 10  # echoed: two events each in the program, past its cap

    def numbered(number: int) -> str:  # é and " weigh on the flow's JSON
        return f'{number:06} é" ' + "x" * 40

    async def send_all() -> None:
        for number in range(count):
            await client.send(numbered(number))

    sending = asyncio.create_task(send_all())  # and read meanwhile, or both sides would wait
    for number in range(count):
        async with asyncio.timeout(BOUND):
            assert await client.recv() == numbered(number)
    await sending
    # The program's flow: its open, then each message received and echoed (it reads a few
    # before it echoes them); the cap keeps the last CAP events, the latest messages each way.
    for _ in range(2):  # whole, and whole again: the first read leaves nothing behind
        flow = await app.flow()
        served = [event for event in flow.events if event.at == "server"]
        assert len(served) == CAP
        for sender in ("client", "server"):
            heads = [event.head for event in served if event.sender == sender]
            latest = range(count - len(heads), count)
            assert heads == [numbered(number).encode()[:HEAD] for number in latest]
    # A read given up on is not blamed on **recorded(), and its answer is not the next one's.
    with pytest.raises(ProcessFailed, match="did not answer 'flow' within") as failure:
        await app.export(timeout=0.001)
    assert "recorded()" not in str(failure.value)
    await app.clear()
    await client.send("small")
    async with asyncio.timeout(BOUND):
        assert await client.recv() == "small"
    assert len([event for event in await app.flow() if event.kind == "message"]) == 4
    assert await app.stop() == 0
    assert app.output == ["serving", "stopped"]  # the program's own lines, to its last
    closes = [(event.at, event.code) for event in await app.flow() if event.kind == "close"]
    assert ("server", 1001) in closes  # its last flow, told as it ended


async def test_a_cap_set_in_the_environment_is_the_programs_too(program, monkeypatch):
    monkeypatch.setenv("WSPATTERNS_CAP", "30")  # read by the program's kit when it starts
    app = await start_app(program, name="echo-1")
    client = await app.connect("alice")
    for number in range(40):
        await client.send(f"{number}")
        async with asyncio.timeout(BOUND):
            await client.recv()
    flow = await app.flow()
    served = [event for event in flow.events if event.at == "server"]
    assert len(served) == 30  # the program's cap; 81 were recorded there
    assert [event.head for event in served[-2:]] == [b"39", b"39"]
    assert len(client.flow.events) == 81  # this process kept its own cap, read at its start
    await app.stop()


async def test_what_a_program_writes_on_stderr_is_shown_naming_it(program, capsys):
    app = await start_app(program, name="echo-1")
    client = await app.connect("dave")
    await client.send("fail")
    with pytest.raises(ConnectionClosedError):
        await client.recv()
    await eventually(lambda: any("KeyError" in (r.hint or "") for r in app.reports), "a report")
    report = app.reports[0]
    assert str(report).startswith("wspatterns: [echo-1] connection handler failed")
    assert 'KeyError: "a learner\'s bug"' in str(report)
    assert "[echo-1] connection handler failed" in capsys.readouterr().err


async def test_starting_again_under_a_name_stops_the_one_before(program):
    first = await start_app(program, name="echo-1")
    second = await start_app(program, name="echo-1")  # a cell run again
    assert gone(first.pid) and not gone(second.pid)
    assert first.output == ["serving", "stopped"]  # stopped with SIGTERM, not killed


# What a program prints: kept and shown within bounds

# Printed by the program before it serves: LINES lines of 100 bytes and one line of LONG
# bytes on STREAM, then "flooded" there.
FLOOD = """
import os, sys
stream = getattr(sys, os.environ["STREAM"])
for number in range(int(os.environ.get("LINES", "0"))):
    stream.write(f"line {number:06} " + "x" * 87 + "\\n")
if os.environ.get("LONG"):
    stream.write("y" * int(os.environ["LONG"]) + "\\n")
stream.write("flooded\\n")
stream.flush()
"""


@pytest.fixture
def flood(tmp_path):
    path = tmp_path / "flood_app.py"
    path.write_text(FLOOD + PROGRAM)
    return path


def flood_line(number: int) -> str:
    return f"line {number:06} " + "x" * 87


async def test_a_programs_output_keeps_its_first_and_latest_lines_and_cuts_a_long_one(flood):
    env = {"STREAM": "stdout", "LINES": "1000", "LONG": "1000000"}
    app = await start_app(flood, name="flood", env=env)
    await eventually(lambda: app.output[-2:] == ["flooded", "serving"], "its last lines")
    cut = "y" * LINE_KEPT + f" … ({1_000_000 - LINE_KEPT:,} more bytes)"
    # 1003 lines: the first 100, the latest 400, and how many between were not kept.
    first = [flood_line(n) for n in range(OUTPUT_FIRST)]
    latest = [flood_line(n) for n in range(603, 1000)]
    assert app.output == [*first, "… 503 more lines, not kept", *latest, cut, "flooded", "serving"]
    assert await app.clients() == []  # the kit's own lines, on the same stdout, still whole
    assert await app.stop() == 0
    assert app.output[-3:] == ["flooded", "serving", "stopped"]


async def test_outside_a_notebook_a_programs_stderr_is_printed_at_once_and_the_latest_kept(
    flood, capsys
):
    app = await start_app(flood, name="flood", env={"STREAM": "stderr", "LINES": "300"})
    await eventually(lambda: "flooded" in app.output[-2:], "its last line")
    assert [report.summary for report in app.reports] == [
        *(f"[flood] {flood_line(n)}" for n in range(201, 300)),
        "[flood] flooded",
    ]  # the latest REPORTS_KEPT
    assert len(app.reports) == REPORTS_KEPT
    printed = capsys.readouterr().err.splitlines()
    assert printed == [f"wspatterns: [flood] {flood_line(n)}" for n in range(300)] + [
        "wspatterns: [flood] flooded"
    ]  # nothing waits outside a notebook: nothing to count


def test_under_each_cell_a_program_shows_its_first_lines_on_stderr_and_counts_the_rest(
    monkeypatch, capsys
):
    from types import SimpleNamespace

    from wspatterns import reports
    from wspatterns.apps.output import StderrReports

    shell = SimpleNamespace(events=SimpleNamespace(register=lambda *args: None))
    monkeypatch.setattr(reports, "ipython", lambda: shell)  # as in a notebook
    monkeypatch.setattr(reports, "_hooked", False)
    stderr = StderrReports("flood")

    def cell_ends() -> list[str]:
        reports._print_pending()  # what IPython calls once a cell has run
        return capsys.readouterr().err.splitlines()

    for number in range(SHOWN_PER_CELL + 70):
        stderr.add(f"oops {number}")
    assert cell_ends() == [f"wspatterns: [flood] oops {n}" for n in range(SHOWN_PER_CELL)] + [
        f"wspatterns: [flood] … 70 more lines on stderr, not shown here: app.output keeps the "
        f"first {OUTPUT_FIRST} and the latest {OUTPUT_LATEST}"
    ]
    for line in ("Traceback (most recent call last):", '  File "x.py", line 1', "KeyError: 1"):
        stderr.add(line)  # the next cell: its own lines, a traceback as one report
    stderr.add("done")
    assert cell_ends() == [
        "wspatterns: [flood] Traceback (most recent call last):",
        '  File "x.py", line 1',
        "KeyError: 1",
        "wspatterns: [flood] done",
    ]
    assert len(stderr.kept) == SHOWN_PER_CELL + 3  # each report shown, and the count


FLOOD_IN_KERNEL = """
gc.collect()
tracemalloc.reset_peak()
before = tracemalloc.get_traced_memory()[0]
app = await start_app({path!r}, name="flood", env={env!r}, timeout=60)
await wait_until(lambda: "flooded" in app.output[-2:], 120)
gc.collect()
now, peak = tracemalloc.get_traced_memory()
print("GROWTH", now - before, peak - before, len(app.output), len(app.reports),
      max(map(len, app.output)))
await app.stop()
"""


@pytest.mark.parametrize("stream", ["stderr", "stdout"])
def test_a_flood_of_10_mb_leaves_the_kernel_flat_and_one_line_counts_the_rest(
    flood, kernel, stream
):
    execute(kernel, "import gc, tracemalloc\nfrom wspatterns.apps import start_app\n"
            "from wspatterns.waiting import wait_until\ntracemalloc.start()")  # fmt: skip
    lines = 100_000  # 10 MB, in lines of 100 bytes
    shown = execute(kernel, FLOOD_IN_KERNEL.format(path=str(flood),
                    env={"STREAM": stream, "LINES": str(lines)}))  # fmt: skip
    [growth] = [each for each in shown["stdout"].splitlines() if each.startswith("GROWTH")]
    now, peak, outputs, kept, _ = map(int, growth.split()[1:])
    # What the kernel holds once it has read them all, and at most meanwhile: 10 MB read
    # line after line once held +52 MB on stderr.
    assert now < 2_000_000 and peak < 4_000_000, growth
    assert outputs == OUTPUT_FIRST + 1 + OUTPUT_LATEST
    if stream == "stderr":  # 100,001 lines: 50 shown under the cell, one line counts the rest
        assert kept <= SHOWN_PER_CELL + 1
        printed = shown["stderr"].splitlines()
        assert printed == [
            f"wspatterns: [flood] {flood_line(n)}" for n in range(SHOWN_PER_CELL)
        ] + [
            f"wspatterns: [flood] … {lines + 1 - SHOWN_PER_CELL:,} more lines on stderr, not "
            f"shown here: app.output keeps the first {OUTPUT_FIRST} and the latest {OUTPUT_LATEST}"
        ]
    else:
        assert kept == 0 and "[flood]" not in shown["stderr"]
    # One line of 10 MB: its first 4 KiB kept, the rest counted.
    shown = execute(kernel, FLOOD_IN_KERNEL.format(path=str(flood),
                    env={"STREAM": stream, "LONG": str(10_000_000)}))  # fmt: skip
    [growth] = [each for each in shown["stdout"].splitlines() if each.startswith("GROWTH")]
    now, peak, *_, longest = map(int, growth.split()[1:])
    assert now < 2_000_000 and peak < 4_000_000, growth
    assert longest == len("y" * LINE_KEPT + f" … ({10_000_000 - LINE_KEPT:,} more bytes)")


# Nothing left running


async def test_stop_all_leaves_no_program(program):
    apps = [await start_app(program, name=f"echo-{n}") for n in (1, 2)]
    pids = [app.pid for app in apps]
    await wspatterns.stop_all()
    assert all(gone(pid) for pid in pids)
    assert psutil.wait_procs([psutil.Process(p) for p in pids if not gone(p)], timeout=5)[1] == []


def test_a_program_dies_with_a_killed_parent(program):
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from wspatterns.apps import start_app

        async def main():
            app = await start_app({str(program)!r})
            print(app.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    result = run_python(script)
    assert result.returncode == -signal.SIGKILL
    pid = int(result.stdout)
    asyncio.run(eventually(lambda: gone(pid), f"program {pid} to die with its parent"))


# A program's own processes

# Started by the program before it serves: a child that starts a grandchild, both sleeping,
# both holding the program's stdout and stderr; the grandchild ignores SIGTERM.
FAMILY = """
import subprocess, sys
GRANDCHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
CHILD = ("import subprocess, sys, time; "
         f"subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}]); time.sleep(600)")
subprocess.Popen([sys.executable, "-c", CHILD])
"""


@pytest.fixture
def family(tmp_path):
    """A program that starts a child and a grandchild; any of them left after the test is
    killed (by pid), so that a failing test leaves nothing behind."""
    path = tmp_path / "family_app.py"
    path.write_text(FAMILY + PROGRAM)
    started: list[psutil.Process] = []
    yield path, started
    for each in started:
        with contextlib.suppress(psutil.Error):
            each.kill()


async def tree_of(app, started: list[psutil.Process]) -> list[psutil.Process]:
    """The program, its child and its grandchild, once both are running; noted in
    ``started`` for the fixture to clean up."""
    program = psutil.Process(app.pid)
    await eventually(lambda: len(program.children(recursive=True)) == 2, "child and grandchild")
    tree = [program, *program.children(recursive=True)]
    started.extend(tree)
    return tree


def left_of(tree: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``tree`` still running after a bounded wait (zombies count as gone: their
    parent died, and reaping them is up to the machine's init)."""

    def running(each: psutil.Process) -> bool:  # this very process (is_running: not a reused pid)
        with contextlib.suppress(psutil.Error):
            return each.is_running() and each.status() != psutil.STATUS_ZOMBIE
        return False

    deadline = time.monotonic() + BOUND
    while (alive := [each for each in tree if running(each)]) and time.monotonic() < deadline:
        time.sleep(10 * MS)
    return alive


def in_group(group: int) -> list[int]:
    """The processes of process group ``group`` still running (not zombies)."""
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == group and not gone(pid):
                members.append(pid)
    return members


async def test_stop_ends_the_programs_whole_tree_at_once(family):
    path, started = family
    app = await start_app(path, name="family")
    tree = await tree_of(app, started)
    group = os.getpgid(app.pid)
    client = await app.connect("alice")
    began = time.monotonic()
    assert await app.stop() == 0  # SIGTERM to the group: the program ended by itself
    took = time.monotonic() - began
    assert took < 1000 * MS, f"stop() took {took:.1f} s"  # the pipes its children held: 12 s
    assert left_of(tree) == []  # the grandchild ignored SIGTERM: killed once the program ended
    assert in_group(group) == []  # and nothing else of its group, the watchdog included
    assert app.output == ["serving", "stopped"]
    with pytest.raises(ConnectionClosedOK):
        await client.recv()
    closes = [(event.at, event.code) for event in await app.flow() if event.kind == "close"]
    assert ("server", 1001) in closes  # its last flow, told as it ended, still read


async def test_stop_all_ends_the_programs_whole_tree(family):
    path, started = family
    app = await start_app(path, name="family")
    tree = await tree_of(app, started)
    await wspatterns.stop_all()
    assert left_of(tree) == []


@pytest.mark.parametrize("program_is", ["running", "ended"])
def test_the_end_of_the_interpreter_ends_the_programs_whole_tree(family, program_is):
    path, started = family
    script = textwrap.dedent(
        f"""
        import asyncio, os, psutil, signal
        from wspatterns.apps import start_app
        from wspatterns.waiting import wait_until

        async def main():
            app = await start_app({str(path)!r}, name="family")
            program = psutil.Process(app.pid)
            await wait_until(lambda: len(program.children(recursive=True)) == 2, 10)
            print(app.pid, *(each.pid for each in program.children(recursive=True)), flush=True)
            if {program_is!r} == "ended":  # by itself, leaving its children behind
                os.kill(app.pid, signal.SIGKILL)
                await wait_until(lambda: app.returncode is not None, 10)

        asyncio.run(main())
        """
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    tree = [psutil.Process(int(pid)) for pid in result.stdout.split() if not gone(int(pid))]
    started.extend(tree)
    assert left_of(tree) == []


def test_a_killed_parent_leaves_nothing_of_the_programs_tree(family):
    path, started = family
    script = textwrap.dedent(
        f"""
        import asyncio, os, psutil, signal
        from wspatterns.apps import start_app
        from wspatterns.waiting import wait_until

        async def main():
            app = await start_app({str(path)!r}, name="family")
            program = psutil.Process(app.pid)
            await wait_until(lambda: len(program.children(recursive=True)) == 2, 10)
            print(app.pid, *(each.pid for each in program.children(recursive=True)), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no stop()

        asyncio.run(main())
        """
    )
    result = run_python(script)
    assert result.returncode == -signal.SIGKILL, result.stderr
    tree = [psutil.Process(int(pid)) for pid in result.stdout.split() if not gone(int(pid))]
    started.extend(tree)
    assert left_of(tree) == []  # the watchdog: SIGTERM to the group, SIGKILL 2 s later


START_IN_KERNEL = """
from wspatterns.apps import start_app
app = await start_app({path!r}, name="echo-1")
import os
print("PID", app.pid, os.getpid())
"""


def pids_started_in(manager: KernelManager, program) -> tuple[int, int]:
    """The program's pid, and the kernel's."""
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        said = []
        client.execute_interactive(
            START_IN_KERNEL.format(path=str(program)),
            timeout=60,
            output_hook=lambda msg: said.append(msg["content"].get("text", "")),
        )
    finally:
        client.stop_channels()
    [line] = [line for line in "".join(said).splitlines() if line.startswith("PID")]
    _, program_pid, kernel_pid = line.split()
    return int(program_pid), int(kernel_pid)


@pytest.mark.parametrize("how", ["shutdown", "restart", "kill"])
def test_no_program_outlives_its_kernel(program, how, tmp_path):
    manager = kernel_manager(tmp_path)
    manager.start_kernel(cwd=str(program.parent))
    try:
        pid, kernel = pids_started_in(manager, program)
        assert not gone(pid)
        if how == "shutdown":
            manager.shutdown_kernel(now=False)
        elif how == "restart":
            manager.restart_kernel(now=False)
        else:
            os.kill(kernel, signal.SIGKILL)  # no atexit: the parent-death signal ends it
        deadline = time.monotonic() + BOUND
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(pid), f"program {pid} outlived its kernel ({how})"
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)


# The lessons' own programs: notebooks/chat/, as lessons 06 and 06b write them

LESSONS = Path(__file__).parent.parent / "notebooks"
CHAT = LESSONS / "chat"


def written_by_the_lessons() -> dict[str, str]:
    """What the lessons' ``%%writefile chat/...`` cells write, by file name."""
    written: dict[str, str] = {}
    for lesson in sorted(LESSONS.glob("*.ipynb")):
        for cell in nbformat.read(lesson, as_version=4).cells:
            first, _, body = cell.source.partition("\n")
            if cell.cell_type == "code" and first.startswith("%%writefile chat/"):
                name = first.split()[1].removeprefix("chat/")
                assert name not in written, f"{name} is written twice ({lesson.name})"
                written[name] = body + "\n"
    return written


def test_the_chat_files_are_the_ones_the_lessons_write():
    """Lesson 06b runs on the committed files, 06 run or not: they are what the cells show."""
    committed = {path.name: path.read_text() for path in CHAT.iterdir() if path.is_file()}
    assert written_by_the_lessons() == committed


@pytest.fixture
def lesson_files(tmp_path):
    """A copy of the lessons' chat/ folder, in ``tmp_path``."""
    shutil.copytree(
        CHAT, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


async def test_the_lesson_program_run_by_hand_is_plain_websockets(lesson_files):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSPATTERNS_APP")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-u", "chat_guard.py", cwd=lesson_files,
        env={**env, "PORT": str(port), "CHAT_TOKEN": "s3cr3t"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert (await process.stdout.readline()).decode() == f"serving on port {port}\n"
        url = f"ws://127.0.0.1:{port}/lobby?name=ann&token=s3cr3t"
        async with websockets.connect(url, proxy=None) as ann:
            assert json.loads(await ann.recv()) == {"joined": "ann"}
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosedOK):
                await ann.recv()
            assert ann.close_code == 1001
        out, err = await asyncio.wait_for(process.communicate(), BOUND)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert out.decode() == "stopped: every handler has returned\n"
    assert err == b""  # nothing of the kit: recorded() gave {}


async def test_the_lesson_program_lets_in_pages_of_its_own_host_and_the_token_only(lesson_files):
    chat = await start_app(lesson_files / "chat_guard.py", name="chat", env={"CHAT_TOKEN": "t0k"})
    try:
        url = chat.url.rstrip("/")
        host = url.removeprefix("ws://")
        # Through a hub, the request names the hub's host, and so does the page's origin.
        hub = "ws://hub.example:8000/?name=ann&token=t0k"
        through_hub = {"host": "127.0.0.1", "port": chat.port, "origin": "http://hub.example:8000"}
        allowed = {
            "no Origin": (f"{url}/?name=ann&token=t0k", {}),
            "its own page": (f"{url}/?name=ann&token=t0k", {"origin": f"http://{host}"}),
            "its page through a hub's proxy": (hub, through_hub),
        }
        for why, (address, options) in allowed.items():
            async with websockets.connect(address, proxy=None, **options) as ann:
                assert json.loads(await ann.recv()) == {"joined": "ann"}, why
        refused = {
            "another site's page": ({"origin": "https://elsewhere.example"}, "t0k"),
            "no token": ({}, ""),
            "a token outside ASCII": ({}, "%C3%A9"),  # compare_digest on str would raise: 500
        }
        for why, (options, token) in refused.items():
            with pytest.raises(websockets.InvalidStatus) as answer:
                async with websockets.connect(f"{url}/?token={token}", proxy=None, **options):
                    pass
            assert answer.value.response.status_code == 403, why
        assert chat.reports == []
    finally:
        await chat.stop()


@pytest.mark.timeout(300)
async def test_the_lesson_page_comes_back_after_a_crash_with_backoff(lesson_files):
    from . import browser_harness as harness
    from .test_browser import needs_chromium

    needs_chromium()
    from selenium.webdriver.common.by import By

    env = {"CHAT_TOKEN": "s3cr3t"}
    first = await start_app(lesson_files / "chat_guard.py", name="chat-1", env=env)
    chrome = await asyncio.to_thread(harness.start_chromium)
    try:
        await asyncio.to_thread(chrome.get, first.page + "lobby?name=tabby&token=s3cr3t")

        def log() -> list[str]:
            return [item.text for item in chrome.find_elements(By.CSS_SELECTOR, "#log li")]

        await eventually(lambda: "connected" in log(), "the page connects", harness.seconds(30))
        assert await first.clients() == ["tabby"]
        await first.crash()  # no server at all for a while: the page fails and waits longer
        await eventually(lambda: len([line for line in log() if "again in" in line]) >= 3,
                         "three failed attempts", harness.seconds(30))  # fmt: skip
        second = await start_app(lesson_files / "chat_guard.py", name="chat-2", env=env,
                                 port=first.port)  # fmt: skip
        await eventually(lambda: log().count("connected") == 2, "back", harness.seconds(30))
        assert await second.clients() == ["tabby"]
        closes = [line for line in log() if line.startswith("closed")]
        assert closes[0].startswith("closed (1006)")  # the crash: no close frame
        waits = [float(line.split("again in ")[1].removesuffix(" s")) for line in closes]
        # Each wait is the delay times a jitter from 0.5 to 1.5, the delay doubling from 250 ms.
        for number, wait in enumerate(waits):
            delay = min(0.25 * 2**number, 8)
            assert delay * 0.5 - 0.05 <= wait <= delay * 1.5 + 0.05, (number, waits)
    finally:
        await asyncio.to_thread(chrome.quit)
