import asyncio
import re
import signal
import socket
import sys
import urllib.request
from asyncio.subprocess import PIPE

import pytest
from websockets.asyncio.client import connect

from wspatterns.cli import ABOUT
from wspatterns.patterns import PATTERNS

from .utils import MS, run_python

WSPATTERNS = [sys.executable, "-m", "wspatterns"]


def test_help_lists_the_serve_command():
    result = run_python("from wspatterns.cli import main; main()", "--help")
    assert result.returncode == 0
    assert "serve" in result.stdout


def test_serve_help_lists_and_explains_every_pattern():
    result = run_python("from wspatterns.cli import main; main()", "serve", "--help")
    assert result.returncode == 0
    for name in PATTERNS:
        assert f"{name}:" in " ".join(result.stdout.split())


STARTED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _kill_what_a_failed_test_left():
    """A test that fails before stopping its server would leave it running for the next ones."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def start(*args: str):
    process = await asyncio.create_subprocess_exec(*WSPATTERNS, *args, stdout=PIPE, stderr=PIPE)
    STARTED.append(process)
    line = await asyncio.wait_for(process.stdout.readline(), 10_000 * MS)
    if line.startswith(b"serving "):  # then where a browser finds its page
        await asyncio.wait_for(process.stdout.readline(), 10_000 * MS)
    return process, line.decode()


# What a server says of each connection that opens or closes: "12:00:00 client-1 connected ..."
ANNOUNCED = re.compile(rb"\d\d:\d\d:\d\d \S+ (connected from|closed: )")


async def printed(process) -> bytes:
    """The next line the pattern itself printed, past the lines about connections."""
    while ANNOUNCED.match(line := await asyncio.wait_for(process.stdout.readline(), 10_000 * MS)):
        pass
    return line


async def stop_quietly(process):
    """Ctrl+C the server, which must exit with 0 and nothing on stderr."""
    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), 10_000 * MS)
    assert process.returncode == 0 and stderr == b""


async def test_serve_echo_answers_and_stops_on_ctrl_c():
    process, line = await start("serve", "echo", "--port", "0")
    assert line.startswith("serving echo on ws://127.0.0.1:")
    url = line.split()[3]
    async with connect(url, proxy=None) as websocket:
        await websocket.send("from a terminal client")
        assert await websocket.recv() == "from a terminal client"
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(websocket.wait_closed(), 10_000 * MS)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 10_000 * MS)
    assert websocket.close_code == 1001
    assert process.returncode == 0
    opened, closed, stopped = stdout.decode().splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d client-1 connected from 127\.0\.0\.1:\d+ \(1 open\)", opened
    )
    assert re.fullmatch(r"\d\d:\d\d:\d\d client-1 closed: 1001 going away \(0 open\)", closed)
    assert stopped == "stopped"
    assert stderr == b""


async def test_serve_also_answers_a_browser_with_a_page_of_its_own():
    process, line = await start("serve", "echo", "--port", "0")
    page = "http" + line.split()[3].removeprefix("ws")
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(page, timeout=10).read())
    assert b"<title>wspatterns: echo</title>" in body and b"new WebSocket(url)" in body
    await stop_quietly(process)


async def test_serve_on_a_taken_port_says_what_to_do():
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *WSPATTERNS, "serve", "echo", "--port", str(port), stdout=PIPE, stderr=PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 10_000 * MS)
    assert process.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in stderr.decode()
    assert "--port 0" in stderr.decode()
    assert "Traceback" not in stderr.decode()


def test_unknown_pattern_is_refused():
    result = run_python("from wspatterns.cli import main; main()", "serve", "nonsense")
    assert result.returncode == 2
    assert "invalid choice: 'nonsense'" in result.stderr


def test_every_pattern_is_explained():
    assert set(ABOUT) == set(PATTERNS)


async def test_serve_consumer_prints_what_it_receives():
    process, line = await start("serve", "consumer", "--port", "0")
    async with connect(line.split()[3], proxy=None) as websocket:
        await websocket.send("hello from a terminal")
        said = await printed(process)
    assert said.decode() == "received 'hello from a terminal'\n"
    process.send_signal(signal.SIGINT)
    await asyncio.wait_for(process.communicate(), 10_000 * MS)
    assert process.returncode == 0


async def test_serve_producer_sends_the_time():
    process, line = await start("serve", "producer", "--port", "0")
    async with connect(line.split()[3], proxy=None) as websocket:
        now = await asyncio.wait_for(websocket.recv(), 10_000 * MS)
    assert len(now) == 8 and now[2] == now[5] == ":"  # HH:MM:SS
    await stop_quietly(process)


async def test_serve_consumer_producer_sends_the_time_while_it_prints_what_it_receives():
    process, line = await start("serve", "consumer-producer", "--port", "0")
    async with connect(line.split()[3], proxy=None) as websocket:
        await websocket.send("both ways")
        said = await printed(process)
        now = await asyncio.wait_for(websocket.recv(), 10_000 * MS)
    assert said.decode() == "received 'both ways'\n"
    assert len(now) == 8 and now[2] == now[5] == ":"
    await stop_quietly(process)


async def test_serve_workers_prints_every_job():
    process, line = await start("serve", "multiple-consumers", "--port", "0")
    async with connect(line.split()[3], proxy=None) as websocket:
        for number in range(4):
            await websocket.send(f"job {number}")
        said = [await printed(process) for _ in range(4)]
    assert sorted(said) == [f"received 'job {number}'\n".encode() for number in range(4)]
    await stop_quietly(process)


async def test_bench_broadcast_runs_a_tiny_sweep_and_prints_the_table():
    process = await asyncio.create_subprocess_exec(
        *WSPATTERNS, "bench", "broadcast", "--strategies", "default", "task", "--clients", "2",
        "--seconds", "0.3", "--rate", "20", stdout=PIPE, stderr=PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60_000 * MS)
    assert process.returncode == 0, stderr.decode()
    header, *rows, footer = stdout.decode().splitlines()
    assert header.split()[:3] == ["strategy", "clients", "slow_client"]
    assert [row.split()[:2] for row in rows] == [["default", "2"], ["task", "2"]]
    assert all(row.split()[-1] == "True" for row in rows)  # complete, with an empty note
    assert footer.startswith("(2 runs in ")
    assert "broadcast 2/2: task, 2 clients: p99 " in stderr.decode()


def test_bench_broadcast_refuses_what_cannot_run():
    bench = "from wspatterns.cli import main; raise SystemExit(main())", "bench", "broadcast"
    result = run_python(*bench, "--clients", "10", "0")
    assert result.returncode == 2
    assert "clients must be 1 or more in each run; got 0" in result.stderr
    result = run_python(*bench, "--strategies", "fastest")
    assert result.returncode == 2
    assert "invalid choice: 'fastest'" in result.stderr


def test_setup_installs_the_kernel_and_settings_under_the_prefix_only(tmp_path):
    import json

    from wspatterns.lab import setup

    written = setup(str(tmp_path))
    kernel = json.loads((tmp_path / "share/jupyter/kernels/wspatterns/kernel.json").read_text())
    assert kernel["display_name"] == "Python (wspatterns)"
    server = json.loads((tmp_path / "etc/jupyter/jupyter_server_config.json").read_text())
    assert server["MultiKernelManager"]["default_kernel_name"] == "wspatterns"
    lab = json.loads((tmp_path / "share/jupyter/lab/settings/overrides.json").read_text())
    assert lab["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert all(tmp_path in path.parents for path in written)
    # Run again with a setting of someone else's in the file: kept.
    (tmp_path / "etc/jupyter/jupyter_server_config.json").write_text('{"ServerApp": {"x": 1}}')
    setup(str(tmp_path))
    server = json.loads((tmp_path / "etc/jupyter/jupyter_server_config.json").read_text())
    assert server["ServerApp"] == {"x": 1} and "MultiKernelManager" in server
