"""Child processes of the kit: started from Python, told what to do on stdin, always stopped.

A :class:`ChildProcess` runs ``python -m MODULE ARGS`` in a process group of its
own: the group can be killed whole, with whatever the child started, Ctrl+C in a
terminal reaches only the parent, and Linux ends the child if the parent dies.
A child that runs code the kit did not write (a learner's program, a
redis-server) is *watched*: a tiny watchdog holds its group, so that the group
is killed even when the parent is killed, and is never mistaken for another
once the child has ended. Only a process that leaves the group (``setsid``, as
a daemon does) escapes. The kit's registry holds a child until it is closed
(unless a handle of its own holds it: a redis-server's RedisServer):
``stop_all()`` and the end of the interpreter stop it. What a child must keep
to itself (a password) goes in its environment, not in ARGS: every user of the
machine can read a command line, only its owner an environment. The child's
side: :func:`say` one line at a time on stdout, :func:`obey` the parent's
commands on stdin, :func:`until_signal`. The parent's side reads the kit's
lines with :func:`read_line`, however long they are (a flow of 100,000 events
is one line of tens of MB), and anything else a child prints with
:func:`read_output_line`, which keeps only the first :data:`LINE_KEPT` bytes of
a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..errors import ProcessFailed
from ..waiting import wait_until
from . import lifecycle

#: How much of one line a child prints the kit keeps: its first 4 KiB; the rest is counted.
#: The kit's own lines (a flow) are read whole.
LINE_KEPT = 4 * 1024

#: Seconds the kit waits for a child's last lines once nothing that could write them is left.
LAST_WORDS = 2.0

#: What watches a watched child's process group (see :meth:`ChildProcess.launch`): a shell
#: that leads the group, ignores the SIGTERM that stop() sends the group, and reads its stdin,
#: a pipe only the kit's process writes to. When that process is gone, however it ended
#: (a SIGKILL too), the pipe ends: the watchdog sends the group SIGTERM, then SIGKILL.
WATCHDOG = """\
trap '' TERM INT HUP
while read -r _; do :; done
kill -TERM 0
sleep 2
kill -KILL 0
"""

# The child's side


def die_with_parent() -> None:
    """In a child, before exec: ask Linux to SIGTERM it when its parent dies.

    Linux means the parent *thread*: start children from a thread that lives as long as
    the process (a kernel's main thread does).
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def say(what: str | dict[str, Any]) -> None:
    """One line on stdout, JSON for anything but a plain string, flushed at once."""
    print(what if isinstance(what, str) else json.dumps(what), flush=True)


async def stdin_lines() -> AsyncIterator[str]:
    """The lines of stdin, stripped, until it ends; nothing if stdin cannot be read."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):  # a regular file, or no stdin at all
        return
    while line := await reader.readline():
        yield line.decode().strip()


async def obey(start: Callable[[], None], stop: Callable[[], None]) -> None:
    """Follow the parent's commands, one per line on stdin: start, stop, quit (or stdin ends)."""
    async for command in stdin_lines():
        if command == "start":
            start()
        elif command == "stop":
            stop()
        elif command == "quit":
            return


async def until_signal(work: Awaitable[object]) -> None:
    """Await ``work`` until it ends or SIGTERM / SIGINT arrives, whichever comes first."""
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    task = asyncio.ensure_future(work)
    waiting = asyncio.ensure_future(signalled.wait())
    try:
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, waiting):
            pending.cancel()
        await asyncio.gather(task, waiting, return_exceptions=True)
    if task.done() and not task.cancelled() and (error := task.exception()) is not None:
        raise error


# The parent's side


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` right now, for a child to listen on (another program could
    take it before the child does)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


async def read_line(stream: asyncio.StreamReader) -> bytes:
    """The next line of ``stream``, newline included, however long; ``b""`` once it ends.

    asyncio's own ``readline()`` refuses a line longer than the stream's limit (64 KiB)
    and loses its place in the stream. Cancelled midway, this loses the part read so far:
    run it in a task that outlives the wait, as :meth:`ChildProcess.read` does.
    """
    pieces: list[bytes] = []
    while True:
        try:
            pieces.append(await stream.readuntil(b"\n"))
        except asyncio.IncompleteReadError as end:  # the stream ended, maybe mid-line
            pieces.append(end.partial)
        except asyncio.LimitOverrunError as over:  # no newline within the limit yet
            pieces.append(await stream.readexactly(over.consumed))
            continue
        return b"".join(pieces)


async def read_output_line(
    stream: asyncio.StreamReader, most: int = LINE_KEPT, whole: bytes = b""
) -> tuple[bytes, int] | None:
    """The next line of ``stream``, without its newline, cut to its first ``most`` bytes,
    and how many bytes were cut off it; None once the stream ends.

    A line that starts with ``whole`` (the kit's own line) is kept whole, however long.
    Of a longer line, no more than ``most`` bytes and one of the stream's chunks (64 KiB)
    are ever held. Cancelled midway, this loses the part read so far, as :func:`read_line`.
    """
    kept: list[bytes] = []
    size = cut = 0
    first = True
    keep_all = False
    while True:
        try:
            piece, last = await stream.readuntil(b"\n"), True
        except asyncio.IncompleteReadError as end:  # the stream ended, maybe mid-line
            if first and not end.partial:
                return None
            piece, last = end.partial, True
        except asyncio.LimitOverrunError as over:  # no newline within the limit yet
            piece, last = await stream.readexactly(over.consumed), False
        if last:
            piece = piece.removesuffix(b"\n")
        if first:
            keep_all, first = bool(whole) and piece.startswith(whole), False
        room = len(piece) if keep_all else max(0, min(len(piece), most - size))
        if room:
            kept.append(piece[:room])
            size += room
        cut += len(piece) - room
        if last:
            return b"".join(kept), cut


def as_text(line: bytes, cut: int) -> str:
    """A line :func:`read_output_line` read, as text; a line cut short says how much was cut."""
    text = line.decode(errors="replace")
    return f"{text} … ({cut:,} more bytes)" if cut else text


def glimpse(line: str, most: int = 200) -> str:
    """``line`` as ``repr()`` shows it, cut after ``most`` characters, for an error message."""
    if len(line) <= most:
        return repr(line)
    return f"{line[:most]!r}… ({len(line):,} characters)"


class ChildProcess:
    """A ``python -m MODULE`` process of the kit, started in a process group of its own.

    Its group can be killed whole, with whatever it started, and Ctrl+C in a terminal reaches
    only us. ``env`` is added to this process's environment for it: the place for a secret.
    It belongs to the event loop that launched it: await its methods there.
    """

    module = ""  # run as python -m MODULE ARGS
    role = ""  # what error messages call it
    report = ""  # what stop() reads back
    #: Whether a watchdog holds its group: for a child that may start processes of its own.
    watched = False
    #: Whether its stdout is a log, kept with its stderr (:attr:`stderr_tail`), rather than
    #: the kit's lines, which :meth:`read` reads.
    stdout_is_log = False
    #: Whether the kit's registry holds it; not when another handle owns it (a RedisServer).
    registered = True

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = env or {}  # added to this process's environment for the child
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_tail: deque[str] = deque(maxlen=5)
        self._stderr_task: asyncio.Task[None] | None = None
        self._line: asyncio.Task[bytes] | None = None  # the line read() waits for
        self._watchdog: asyncio.subprocess.Process | None = None
        self._group: int | None = None  # its process group, while it may be signalled
        self.cwd: str | None = None  # the directory it runs in; None: this process's

    def command(self) -> list[str]:
        """What runs: ``python -m MODULE ARGS``; a subclass may run a script by path instead."""
        return [sys.executable, "-m", self.module, *self.args]

    async def launch(self) -> None:
        """Start the process; it is stopped by close(), stop_all() or the interpreter's end.

        A watched child joins the group of a watchdog (:data:`WATCHDOG`) started first: as
        long as the watchdog lives, the group's number is the child's group's, even once
        the child has ended, so the kit can kill what the child left behind; and when this
        process dies, the watchdog kills the group. (A group, not a session of its own as
        other children have: a process joins only a group of its own session.)
        """
        if self.watched:
            self._watchdog = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", WATCHDOG, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                process_group=0,
            )  # fmt: skip
            group: dict[str, Any] = {"process_group": self._watchdog.pid}
        else:
            group = {"start_new_session": True}
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT if self.stdout_is_log else asyncio.subprocess.PIPE,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
                env={**os.environ, **self.env} if self.env else None,
                cwd=self.cwd,
                **group,
            )  # fmt: skip
        except BaseException:
            await self._end_watchdog()
            raise
        self._group = self.process.pid if self._watchdog is None else self._watchdog.pid
        if self.registered:
            lifecycle.add("process", id(self), self)
        self._stderr_task = asyncio.create_task(self._keep_stderr_tail())

    async def _keep_stderr_tail(self) -> None:
        assert self.process is not None
        output = self.process.stdout if self.stdout_is_log else self.process.stderr
        assert output is not None
        while (read := await read_output_line(output)) is not None:
            if read[0].strip():
                text = as_text(*read).rstrip()
                self.stderr_tail.append(text)
                self.heard(text)

    def heard(self, line: str) -> None:
        """Called with each line the process writes on stderr; for subclasses."""

    def start(self) -> None:
        """Measure from now (a server also starts broadcasting)."""
        self.send("start")

    async def stop(self, timeout: float = 30) -> dict[str, Any]:
        """Stop measuring (a server pauses) and return what was measured since ``start()``."""
        self.send("stop")
        return await self.read_json(timeout, self.report)

    def send(self, command: str) -> None:
        """Write one command line to the process; a process already gone is noticed on reading."""
        assert self.process is not None and self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            self.process.stdin.write(command.encode() + b"\n")

    async def read(self, timeout: float | None, what: str) -> str:
        """The next line the process prints; ProcessFailed if it ends or takes over ``timeout``.

        A line not read in time is not lost: the next call returns it.
        """
        assert self.process is not None and self.process.stdout is not None
        if self._line is None:
            self._line = asyncio.create_task(read_line(self.process.stdout))
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the line does, and a cancelled experiment would run on.
            async with asyncio.timeout(timeout):
                line = await asyncio.shield(self._line)  # a long line goes on arriving
        except TimeoutError:
            raise ProcessFailed(
                f"the {self.role} process gave no {what} within {timeout:g} s{self._last_words()}"
            ) from None
        finally:
            if self._line.done():
                self._line = None
        if not line:
            await self.exited(2)
            await self._heard_all(1)  # its last words
            raise ProcessFailed(
                f"the {self.role} process exited with code {self.process.returncode} "
                f"before its {what}{self._last_words()}"
            )
        return line.decode().strip()

    async def read_json(self, timeout: float | None, what: str) -> dict[str, Any]:
        """The next line, read as JSON; ProcessFailed as :meth:`read`, or if it is not JSON."""
        return self.parse(await self.read(timeout, what), what)

    def parse(self, line: str, what: str) -> dict[str, Any]:
        """``line`` read as JSON; ProcessFailed, showing the line's start, if it is not JSON."""
        try:
            report: dict[str, Any] = json.loads(line)
            return report
        except ValueError:
            raise ProcessFailed(
                f"the {self.role} process printed {glimpse(line)}, not a {what}"
            ) from None

    async def exited(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` s (None: as long as it takes) for the process itself to end;
        whether it has.

        Not asyncio's ``process.wait()``: that waits for the process's pipes to close too,
        which whatever the process started holds open as long as it lives.
        """
        process = self.process
        assert process is not None
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: process.returncode is not None, timeout)
        return process.returncode is not None

    async def gone(self) -> str | None:
        """If the process has exited (or does within a second), say how; else None."""
        assert self.process is not None
        if not await self.exited(1):
            return None
        await self._heard_all(1)
        return f"the {self.role} process exited with code {self.process.returncode}" + (
            self._last_words()
        )

    def _readers(self) -> list[asyncio.Task[None]]:
        """The tasks that read what the process prints, each until its end: what
        :meth:`close` waits for; a subclass adds its own."""
        return [] if self._stderr_task is None else [self._stderr_task]

    async def _heard_all(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the readers to reach the end of what it printed."""
        readers = [task for task in self._readers() if not task.done()]
        if readers:
            await asyncio.wait(readers, timeout=timeout)

    def _last_words(self) -> str:
        return f"; its last words: {self.stderr_tail[-1]}" if self.stderr_tail else ""

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the process and whatever it started: its process group.

        Only while the group is surely its own: while the process runs, or, for a watched
        one, while its watchdog holds the group (a group's number is freed with its last
        process and may then be another's).
        """
        process, watchdog = self.process, self._watchdog
        if process is None or self._group is None:
            return
        if process.returncode is None or (watchdog is not None and watchdog.returncode is None):
            with contextlib.suppress(OSError):
                os.killpg(self._group, signum)

    def kill(self) -> None:
        """Kill the process and anything it started, at once."""
        self.signal_group(signal.SIGKILL)

    async def close(self, grace: float = 5.0) -> None:
        """Ask the process to quit (end of stdin), kill it and whatever it started after
        ``grace`` s (at once if the process has ended), read its last lines, and reap it."""
        process = self.process
        if process is None:
            return
        try:
            if process.returncode is None and grace > 0:
                assert process.stdin is not None
                with contextlib.suppress(OSError, RuntimeError):
                    process.stdin.close()
                await self.exited(grace)
        finally:
            self.kill()  # its group, too: whatever it started goes with it
            self._group = None
            lifecycle.forget("process", id(self), self)
            await self._heard_all(LAST_WORDS)  # nothing is left to hold its pipes open
            for task in (self._stderr_task, self._line):
                if task is not None:
                    task.cancel()
            self._line = None
            await self.exited(5)
            await self._end_watchdog()

    async def _end_watchdog(self) -> None:
        """Kill and reap the watchdog, if any (its group is dead or being killed)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        # os.kill, not watchdog.kill(): that polls first (subprocess' send_signal), and a
        # poll reaps a watchdog the group's SIGKILL just ended before asyncio's child
        # watcher does, which then logs "Unknown child process pid ..." under the cell.
        # Until asyncio reaps it, its pid is still its own (a zombie's), so the kill is safe.
        if watchdog.returncode is None:
            with contextlib.suppress(OSError):
                os.kill(watchdog.pid, signal.SIGKILL)
        if watchdog.stdin is not None:
            watchdog.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watchdog.wait(), 5)

    async def retire(self, why: str) -> None:
        await self.close(grace=1.0)

    def retire_now(self, why: str) -> None:
        self.kill()

    async def __aexit__(self, exc_type: Any, *exc_info: Any) -> None:
        # After an error or a cancellation, nobody is waiting for a polite goodbye.
        await self.close(grace=5.0 if exc_type is None else 0)
