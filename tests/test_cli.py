import asyncio
import re
import resource
import signal
import socket
import subprocess
import sys
import urllib.request
from asyncio.subprocess import PIPE
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import connect

from wspatterns.cli import ABOUT
from wspatterns.patterns import PATTERNS

from .utils import BOUND, MS, run_python

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


MAIN = "from wspatterns.cli import main; raise SystemExit(main())"


def refused_in_one_line(result: subprocess.CompletedProcess, command: str) -> str:
    """The one error line of a command argparse refused (exit code 2, usage, one line)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    usage, _, error = result.stderr.rstrip("\n").rpartition("\n")
    assert usage.startswith(f"usage: python -m wspatterns {command} ")
    assert error.startswith(f"python -m wspatterns {command}: error: "), result.stderr
    return error


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http"])
def test_serve_refuses_a_port_that_is_not_one_in_one_line(port):
    result = run_python(MAIN, "serve", "echo", "--port", port, timeout=BOUND)
    error = refused_in_one_line(result, "serve")
    assert error.endswith(
        f"argument --port: {port!r} is not a port: give a number from 0 to 65535 (0: any free one)"
    )


def test_serve_refuses_a_host_it_cannot_find_or_listen_on_in_one_line():
    result = run_python(MAIN, "serve", "echo", "--host", "nosuch.invalid", timeout=BOUND)
    error = refused_in_one_line(result, "serve")
    assert "argument --host: no address found for 'nosuch.invalid'" in error
    assert "127.0.0.1 (this machine only)" in error
    # An address, but another machine's (TEST-NET-2, RFC 5737: never assigned)
    result = run_python(
        MAIN, "serve", "echo", "--host", "198.51.100.7", "--port", "0", timeout=BOUND
    )
    error = refused_in_one_line(result, "serve")
    assert error.endswith(
        "argument --host: 198.51.100.7 is not an address of this machine "
        "(Cannot assign requested address)"
    )


def machine_addresses() -> set[str]:
    return {
        snic.address.partition("%")[0]
        for snics in psutil.net_if_addrs().values()
        for snic in snics
        if snic.family == socket.AF_INET
    }


async def test_serve_on_every_interface_warns_in_one_line_and_says_where_to_connect():
    process = await asyncio.create_subprocess_exec(
        *WSPATTERNS, "serve", "echo", "--host", "0.0.0.0", "--port", "0", stdout=PIPE, stderr=PIPE
    )
    STARTED.append(process)
    serving = (await asyncio.wait_for(process.stdout.readline(), BOUND)).decode()
    page = (await asyncio.wait_for(process.stdout.readline(), BOUND)).decode()
    warning = (await asyncio.wait_for(process.stderr.readline(), BOUND)).decode()
    here = re.fullmatch(
        r"serving echo on ws://127\.0\.0\.1:(\d+)/ \(Ctrl\+C to stop\)"
        r"(?:; from other machines: (.*))?\n",
        serving,
    )
    assert here, serving
    port = here[1]
    assert warning == (
        "warning: --host 0.0.0.0 listens on every interface: anyone who can reach this machine "
        f"can connect to port {port}, with no password "
        "(--host 127.0.0.1 keeps it to this machine)\n"
    )
    elsewhere = here[2].split(", ") if here[2] else []
    pages = [url.replace("ws://", "http://") for url in elsewhere]
    also = f"; from other machines: {', '.join(pages)}" if pages else ""
    assert page == f"a browser client: open http://127.0.0.1:{port}/ in a browser{also}\n"
    addresses = [url.removeprefix("ws://").rpartition(":")[0] for url in elsewhere]
    assert set(addresses) <= machine_addresses() - {"127.0.0.1"}
    for url in [f"ws://127.0.0.1:{port}/", *elsewhere]:  # each of them answers
        async with connect(url, proxy=None, open_timeout=BOUND) as websocket:
            await websocket.send(url)
            assert await asyncio.wait_for(websocket.recv(), BOUND) == url
    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), BOUND)
    assert process.returncode == 0 and stderr == b""  # the warning, once


@pytest.mark.parametrize("rate", ["1e-9", "0", "-5", "nan", "inf", "1e9", "fast"])
def test_bench_refuses_a_rate_it_cannot_measure_in_one_line(rate):
    result = run_python(MAIN, "bench", "broadcast", "--rate", rate, timeout=BOUND)
    error = refused_in_one_line(result, "bench broadcast")
    assert f"argument --rate: rate must be 0.1 to 10,000 broadcasts a second; got {rate!r}" in error


def test_bench_refuses_a_window_without_a_broadcast_in_it():
    result = run_python(MAIN, "bench", "broadcast", "--rate", "0.1", timeout=BOUND)
    error = refused_in_one_line(result, "bench broadcast")
    assert error.endswith(
        "--seconds 2 at --rate 0.1 measures less than one broadcast: "
        "give --seconds 10 or more, or a higher --rate"
    )


def with_file_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def test_bench_refuses_more_clients_than_the_file_limit_holds_before_starting():
    # 100 files a process: 68 clients fit (32 are Python's own); 200, or 68 and a slow one, do not.
    bench = [sys.executable, "-c", MAIN, "bench", "broadcast", "--strategies", "default"]
    for clients, slow in [(["10", "200"], []), (["68"], ["--slow-client"])]:
        result = subprocess.run(
            [*bench, "--clients", *clients, *slow],
            capture_output=True, text=True, timeout=BOUND, preexec_fn=with_file_limit(100),
        )  # fmt: skip
        error = refused_in_one_line(result, "bench broadcast")
        count = int(clients[-1]) + len(slow)
        assert (
            f"{count} clients need {count + 32} open files in each of the bench's two processes"
            in error
        )
        assert "this system allows a process 100 (`ulimit -Hn`)" in error
        assert f"raise it with `ulimit -n {count + 32}`" in error
        assert error.endswith("or run at most 68 clients")
        assert result.stdout == ""  # nothing started


@pytest.mark.skipif(
    not Path("/proc/sys/net/ipv4/ip_local_port_range").exists(), reason="Linux only"
)
def test_bench_refuses_more_clients_than_local_ports():
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    unlimited = "import resource; resource.getrlimit = lambda _: (resource.RLIM_INFINITY,) * 2\n"
    clients = str(high - low + 2)
    result = run_python(unlimited + MAIN, "bench", "broadcast", "--clients", clients, timeout=BOUND)
    error = refused_in_one_line(result, "bench broadcast")
    assert (
        f"need {high - low + 2:,} local ports, but the system hands out {high - low + 1:,}" in error
    )


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
