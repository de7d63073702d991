"""A program of your own, started from the notebook as a plain process, watched, and stopped.

``chat = await start_app("chat_server.py", name="chat-1")`` runs ``python
chat_server.py`` in a process of its own, with ``PORT`` in its environment (a
free port unless you give one), and returns once that process listens on it.
The program is plain websockets: the kit only reads what it prints and, if it
opted in with ``**recorded()`` (see :mod:`~wspatterns.apps.recording`), what
crossed its connections: ``await chat.flow()``.

``await chat.stop()`` sends SIGTERM, as a deployment does, and waits for the
program to finish on its own; ``await chat.crash()`` sends SIGKILL, as a crash
would. Either way, whatever the program started (a process of its own, and the
processes that one started) ends with it: the program runs in a process group a
watchdog holds (see :class:`~wspatterns.runtime.processes.ChildProcess`). The
kit's registry holds every program it started: ``stop_all()``, the end of the
kernel and a kernel restart leave none running, and neither does a kernel that
is killed (only a process that left the program's group, as a daemon does, is
out of reach). What a program prints is kept and shown within bounds
(:mod:`~wspatterns.apps.output`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

from ..errors import KitTimeoutError, MissingFileError, ProcessFailed
from ..flow import Flow, merge
from ..flow.events import Event, imported
from ..flow.merging import crashed
from ..reports import ErrorReport
from ..runtime import connect, lifecycle
from ..runtime.processes import ChildProcess, as_text, free_port, glimpse, read_output_line
from ..settings import DEFAULT, timeout_seconds
from ..waiting import POLL, wait_until
from .output import Output, StderrReports
from .recording import KIT_LINE, NAME_VARIABLE, TOKEN_VARIABLE

#: The longest pause between two scans for a program's listening socket (see App._listens).
SCAN_PAUSE_MOST = 0.25


class App(ChildProcess):
    """A program started by :func:`start_app`: where it serves, what it printed, its flow.

    ``url`` is ``ws://127.0.0.1:PORT/`` and ``page`` the same address in HTTP;
    ``output`` holds the lines it printed (stdout and stderr, as they came: the first
    and the latest, if it printed many); ``reports``, what it wrote on stderr, as shown
    under the cells; ``local`` is the flow the kit's clients opened with :meth:`connect`
    record into; ``returncode`` is None while it runs, then its exit status (``-9``
    when killed).
    """

    role = "program"
    watched = True  # a learner's program may start processes of its own

    def __init__(self, path: Path, name: str, port: int, env: dict[str, str], local: Flow):
        extra = {**env, "PORT": str(port), NAME_VARIABLE: name, TOKEN_VARIABLE: local.token}
        super().__init__([], env=extra)
        self.path = path
        self.name = name
        self.role = f"program {name!r} ({path.name})"
        self.port = port
        self.local = local
        self._output = Output()
        self._stderr = StderrReports(name)
        self._last_flow: dict[str, Any] | None = None
        # One future per command sent, oldest first: the program answers them in turn.
        self._questions: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._answered = False  # whether it ever did: then it passes **recorded()
        self._stdout_task: asyncio.Task[None] | None = None
        # What _listens() saw last: the process's count of open files, when to scan anyway.
        self._files_seen = -1
        self._scan_pause = 4 * POLL
        self._next_scan = 0.0

    def command(self) -> list[str]:
        return [sys.executable, "-u", str(self.path)]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def page(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def output(self) -> list[str]:
        """The lines it printed, stdout and stderr as they came; of many, the first and the
        latest, and how many between were not kept."""
        return self._output.lines()

    @property
    def reports(self) -> list[ErrorReport]:
        """What it wrote on stderr, as reports shown under the cells: the latest ones."""
        return list(self._stderr.kept)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    # Starting

    async def start_listening(self, timeout: float | None) -> None:
        """Launch the program and wait until it listens on its port."""
        await self.launch()
        self._stdout_task = asyncio.create_task(self._read_stdout())
        # Held under its name, so that a program started again under it replaces this one.
        lifecycle.forget("process", id(self), self)
        lifecycle.add("process", ("app", self.name), self)
        try:
            await wait_until(lambda: self.returncode is not None or self._listens(), timeout)
        except TimeoutError:
            raise ProcessFailed(
                f"the {self.role} did not listen on port {self.port} within {timeout:g} s"
                f"{self._last_words()}"
            ) from None
        if self.returncode is not None:
            raise ProcessFailed(await self.gone() or f"the {self.role} ended")

    def _listens(self) -> bool:
        """Whether this very process (not another on a shared port) listens on the port.

        Scanning the machine's connections takes milliseconds (tens on a busy machine), with
        the event loop held; counting the process's open files, microseconds. So the scan
        runs when that count has changed (a socket was opened, and listens microseconds
        later), or else after a pause that doubles up to :data:`SCAN_PAUSE_MOST`.
        """
        try:
            process = psutil.Process(self.pid)
            files, now = process.num_fds(), time.monotonic()
            if files == self._files_seen and now < self._next_scan:
                return False
            self._files_seen = files
            self._scan_pause = min(2 * self._scan_pause, SCAN_PAUSE_MOST)
            self._next_scan = now + self._scan_pause
            sockets = process.net_connections(kind="tcp")
        except (psutil.Error, ValueError):
            return False
        return any(s.status == psutil.CONN_LISTEN and s.laddr.port == self.port for s in sockets)

    # What it says

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout, kit_line = self.process.stdout, KIT_LINE.encode()
        try:
            # The kit's own lines are read whole (a flow is tens of MB); the program's, cut.
            while (read := await read_output_line(stdout, whole=kit_line)) is not None:
                text = as_text(*read)
                if text.startswith(KIT_LINE):
                    self._told(text.removeprefix(KIT_LINE))
                else:
                    self._output.add(text)
        finally:
            while self._questions:  # the program is gone: nobody will answer them
                question = self._questions.popleft()
                if not question.done():
                    question.set_exception(ProcessFailed(f"the {self.role} ended"))

    def _told(self, text: str) -> None:
        """What the program told the kit: its last flow, or the answer to the oldest question."""
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and "final" in answer:
            self._last_flow = answer["final"]
            return
        self._answered = True
        if not self._questions:
            return  # nobody asked: not the kit's line after all
        question = self._questions.popleft()
        if question.done():
            return  # given up on (too slow)
        if isinstance(answer, dict):
            question.set_result(answer)
        else:
            question.set_exception(ProcessFailed(f"the {self.role} answered {glimpse(text)}"))

    def heard(self, line: str) -> None:
        # What the program writes on stderr (a traceback, websockets' log) is kept with
        # its output and shown under the next cell, naming the program.
        self._output.add(line)
        self._stderr.add(line)

    async def _ask(self, command: str, timeout: float | None) -> dict[str, Any]:
        if self.returncode is not None:
            raise ProcessFailed(f"the {self.role} has ended ({self.returncode})")
        if self._stdout_task is None or self._stdout_task.done():
            raise ProcessFailed(f"the {self.role} cannot be heard: its output has ended")
        question: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._questions.append(question)  # stays there if given up on: its answer is dropped
        self.send(command)
        try:
            async with asyncio.timeout(timeout):
                return await question
        except TimeoutError:
            why = (
                "it has answered before; busy, or a big flow? Give it a longer timeout="
                if self._answered else "does it pass **recorded() to serve()?"
            )  # fmt: skip
            raise ProcessFailed(
                f"the {self.role} did not answer {command!r} within {timeout:g} s: {why}"
            ) from None

    async def export(self, timeout: float | None = DEFAULT) -> dict[str, Any]:
        """What the program's flow holds now (once it ended: the last it told).

        Raises ProcessFailed if it does not answer within ``timeout`` seconds (``TIMEOUT``
        when left out; None: never).
        """
        if self.returncode is None:
            self._last_flow = (await self._ask("flow", timeout_seconds(timeout)))["flow"]
        if self._last_flow is None:
            raise ProcessFailed(f"the {self.role} ended and left no flow ({self.returncode})")
        return self._last_flow

    async def clients(self, timeout: float | None = DEFAULT) -> list[str]:
        """The names of the clients connected to the program now, as its flow knows them."""
        flow = await self.export(timeout)
        last: dict[int, Event] = {}  # the latest opening or end of each connection
        for each in imported(flow["fields"], flow["events"]):
            if isinstance(each, Event) and each.kind in ("open", "end"):
                last[each.connection] = each
        return sorted({event.client for event in last.values() if event.kind == "open"})

    async def flow(self, timeout: float | None = DEFAULT) -> Flow:
        """One flow: the kit's clients of this program, and what the program recorded."""
        return merge(self.local, await self.export(timeout))

    async def clear(self, timeout: float | None = DEFAULT) -> None:
        """Forget what was recorded so far, in the program and by the clients here."""
        await self._ask("clear", timeout_seconds(timeout))
        self.local.clear()

    async def get(self, path: str = "/", timeout: float | None = DEFAULT) -> tuple[int, str]:
        """``GET path`` over plain HTTP, as a browser or a load balancer would: (status, body).

        Raises TimeoutError if the whole answer has not come within ``timeout`` seconds.
        """
        limit = timeout_seconds(timeout)
        try:
            async with asyncio.timeout(limit):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                try:
                    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                    writer.write((request + "Connection: close\r\n\r\n").encode())
                    answer = await reader.read()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:
            raise KitTimeoutError(
                f"the {self.role} did not answer GET {path} within {limit:g} s "
                "(pass timeout= to wait longer)."
            ) from None
        head, _, body = answer.decode(errors="replace").partition("\r\n\r\n")
        return int(head.split()[1]), body

    def connect(self, name: str, path: str = "/", **options: Any) -> connect:
        """A kit client named ``name`` to ``path`` (with its query), recorded in ``local``."""
        return connect(self.url.rstrip("/") + path, name=name, flow=self.local, **options)

    # Stopping

    async def stop(self, timeout: float | None = DEFAULT) -> int | None:  # type: ignore[override]
        """SIGTERM to the program and whatever it started, then wait up to ``timeout`` s
        (``TIMEOUT`` when left out; None: as long as it takes) for the program to end on its
        own (killed after that); what it started is killed once it has ended. Returns its
        exit status; its last flow is kept for :meth:`flow`."""
        if self.returncode is None:
            self.signal_group(signal.SIGTERM)
            await self.exited(timeout_seconds(timeout))
        await self._finish()
        return self.returncode

    async def crash(self) -> int | None:
        """SIGKILL, as a crash: the program ends at once, its connections drop without a
        closing handshake. The kit asks for its flow just before, to show what it held."""
        if self.returncode is None:
            with contextlib.suppress(ProcessFailed):
                await self.export()
        killed = time.monotonic_ns()
        self.kill()
        await self._finish()
        if self._last_flow is not None:  # what its clients saw: their connections lost
            crashed(self._last_flow, killed, f"{self.name} killed")
        return self.returncode

    async def _finish(self) -> None:
        """Kill what is left of its group, read its last lines (its last flow), reap it, and
        leave the registry."""
        await self.close(grace=0)
        lifecycle.forget("process", ("app", self.name), self)

    def _readers(self) -> list[asyncio.Task[None]]:
        stdout = [] if self._stdout_task is None else [self._stdout_task]
        return [*super()._readers(), *stdout]

    async def retire(self, why: str) -> None:
        await self.stop(timeout=2)

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"ended ({self.returncode})"
        return f"<App {self.name!r} ({self.path.name}) at {self.url} {state}>"


async def start_app(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    flow: Flow | None = None,
    timeout: float | None = DEFAULT,
) -> App:
    """Run ``python path`` as a process of its own and return once it listens on ``port``.

    The program reads its port from ``$PORT`` (a free one unless ``port`` is given: give
    another program's port to share it, with ``reuse_port=True`` in both). ``env`` adds to
    its environment: the place for a secret, which a command line would show to every user.
    ``name`` (the file's name by default) is what the flow calls it; a program started
    before under the same name is stopped first. ``flow`` is shared by the kit's clients of
    several programs (by default, each program has its own). Raises
    :class:`~wspatterns.errors.ProcessFailed` with the program's last words if it ends or
    does not listen within ``timeout`` seconds (``TIMEOUT`` when left out; None: never).
    """
    script = Path(path)
    if not script.is_file():
        raise MissingFileError(f"no program {str(script)!r} here ({Path.cwd()})")
    name = name or script.stem
    await lifecycle.retire("process", ("app", name), f"a newer start_app(name={name!r})")
    app = App(script.resolve(), name, free_port() if port is None else port, env or {},
              Flow() if flow is None else flow)  # fmt: skip
    try:
        await app.start_listening(timeout_seconds(timeout))
    except BaseException:
        await app._finish()
        raise
    return app


async def flow_of(*apps: App, timeout: float | None = DEFAULT) -> Flow:
    """One flow: what several programs recorded and the kit's clients of them, merged."""
    exports = await asyncio.gather(*(app.export(timeout) for app in apps))
    locals_ = list({id(app.local): app.local for app in apps}.values())
    return merge(*locals_, *exports)
