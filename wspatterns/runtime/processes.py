"""Child processes of the kit: started from Python, told what to do on stdin, always stopped.

A :class:`ChildProcess` runs ``python -m MODULE ARGS`` in a session of its own:
its whole process group can be killed, Ctrl+C in a terminal reaches only the
parent, and Linux ends it if the parent dies. The kit's registry holds it
until it is closed: ``stop_all()`` and the end of the interpreter stop it.
What a child must keep to itself (a password) goes in its environment, not in
ARGS: every user of the machine can read a command line, only its owner an
environment. The child's side: :func:`say` one line at a time on stdout,
:func:`obey` the parent's commands on stdin, :func:`until_signal`. The parent's
side reads a child's lines with :func:`read_line`, however long they are (a
flow of 100,000 events is one line of tens of MB).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..errors import ProcessFailed
from . import lifecycle

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


def glimpse(line: str, most: int = 200) -> str:
    """``line`` as ``repr()`` shows it, cut after ``most`` characters, for an error message."""
    if len(line) <= most:
        return repr(line)
    return f"{line[:most]!r}… ({len(line):,} characters)"


class ChildProcess:
    """A ``python -m MODULE`` process of the kit, started in a session of its own.

    Its own process group can be killed whole, and Ctrl+C in a terminal reaches only us.
    ``env`` is added to this process's environment for it: the place for a secret.
    """

    module = ""  # run as python -m MODULE ARGS
    role = ""  # what error messages call it
    report = ""  # what stop() reads back

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = env or {}  # added to this process's environment for the child
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_tail: deque[str] = deque(maxlen=5)
        self._stderr_task: asyncio.Task[None] | None = None
        self._line: asyncio.Task[bytes] | None = None  # the line read() waits for

    def command(self) -> list[str]:
        """What runs: ``python -m MODULE ARGS``; a subclass may run a script by path instead."""
        return [sys.executable, "-m", self.module, *self.args]

    async def launch(self) -> None:
        """Start the process; it is stopped by close(), stop_all() or the interpreter's end."""
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
            env={**os.environ, **self.env} if self.env else None,
        )  # fmt: skip
        lifecycle.add("process", id(self), self)
        self._stderr_task = asyncio.create_task(self._keep_stderr_tail())

    async def _keep_stderr_tail(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await read_line(self.process.stderr):
            if line.strip():
                text = line.decode(errors="replace").rstrip()
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

    async def read(self, timeout: float, what: str) -> str:
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 2)
                if self._stderr_task is not None:  # launch() started it
                    await asyncio.wait_for(asyncio.shield(self._stderr_task), 1)  # its last words
            raise ProcessFailed(
                f"the {self.role} process exited with code {self.process.returncode} "
                f"before its {what}{self._last_words()}"
            )
        return line.decode().strip()

    async def read_json(self, timeout: float, what: str) -> dict[str, Any]:
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

    async def gone(self) -> str | None:
        """If the process has exited (or does within a second), say how; else None."""
        assert self.process is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 1)
            if self._stderr_task is not None:  # launch() started it
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1)
        if self.process.returncode is None:
            return None
        return f"the {self.role} process exited with code {self.process.returncode}" + (
            self._last_words()
        )

    def _last_words(self) -> str:
        return f"; its last words: {self.stderr_tail[-1]}" if self.stderr_tail else ""

    def kill(self) -> None:
        """Kill the process and anything it started, at once."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def close(self, grace: float = 5.0) -> None:
        """Ask the process to quit (end of stdin), kill it after ``grace`` s, and reap it."""
        process = self.process
        if process is None:
            return
        try:
            if process.returncode is None and grace > 0:
                assert process.stdin is not None
                with contextlib.suppress(OSError, RuntimeError):
                    process.stdin.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), grace)
        finally:
            self.kill()  # its group, too: whatever it started goes with it
            lifecycle.forget("process", id(self), self)
            for task in (self._stderr_task, self._line):
                if task is not None:
                    task.cancel()
            self._line = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)

    async def retire(self, why: str) -> None:
        await self.close(grace=1.0)

    def retire_now(self, why: str) -> None:
        self.kill()

    async def __aexit__(self, exc_type: Any, *exc_info: Any) -> None:
        # After an error or a cancellation, nobody is waiting for a polite goodbye.
        await self.close(grace=5.0 if exc_type is None else 0)
