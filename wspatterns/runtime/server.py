"""Servers that live inside a running kernel: ``server = await serve(handler)``.

A Jupyter kernel already runs an event loop, so a server started in a cell
keeps serving after the cell ends. The kit names each server (the handler's
name unless told otherwise), so serving again under a name in use stops the
old one first; it records what crosses its connections in ``server.flow``;
and it keeps what a handler raised on ``server.errors``, shown under the next
cell (see :mod:`wspatterns.reports`).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import itertools
import logging
import sys
from collections.abc import Awaitable, Generator
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

from websockets.asyncio.server import Server as WebSocketsServer
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.protocol import State

from .. import internals, reports
from ..errors import HandlerNotAwaitableError, PortInUseError, ServerStoppedError
from ..flow import Flow, Recording
from ..reports import ErrorReport
from ..settings import STOP_GRACE, Handler
from . import lifecycle
from .handlers import check_handler, name_of
from .loops import await_on_loop, finish_on_loop

# A kit client tells the server its name, so both ends call it the same, and
# which connection of which flow it records as, so both ends' records pair up.
NAME_HEADER = "X-WSPatterns-Name"
CONNECTION_HEADER = "X-WSPatterns-Connection"

#: A client that cannot set headers (a browser) names itself in the URL's query instead:
#: ``ws://127.0.0.1:8765/?name=alice``.
NAME_PARAMETER = "name"

#: The longest name a client may give itself, in the header or in the URL; a longer one is
#: ignored, and the server names the client ``client-N``.
NAME_LIMIT = 64

#: What a server stopped with ``stop()`` says when used again.
STOPPED_BY_YOU = "you stopped it with stop(); serve it again to restart it"


class RecordsConnections(Protocol):
    """What a recording connection asks of its server: a :class:`Server`, or a plain
    websockets program's recorder (:func:`wspatterns.apps.recorded`)."""

    name: str
    flow: Flow

    def next_client_name(self) -> str: ...


class KitServerConnection(Recording, ServerConnection):
    """A websockets server connection that records into its server's flow, under a name.

    Everything else is plain :class:`websockets.asyncio.server.ServerConnection`.
    """

    name: str = "client"

    def __init__(self, *args: Any, kit: RecordsConnections, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kit = kit
        # The request names the client, and frames flow right after the response.
        internals.after_server_handshake(self.protocol, self._handshake_sent)

    def _handshake_sent(self, response: Response) -> None:
        request = self.request
        if request is None:
            return
        kit = self.kit
        named, path = named_in_query(request.path)
        in_header = usable_name(request.headers.get(NAME_HEADER, ""))
        self.name = in_header or named or kit.next_client_name()
        if response.status_code != 101:
            return  # answered with plain HTTP (a page, a refusal): no connection to record
        token, _, number = request.headers.get(CONNECTION_HEADER, "").partition(".")
        same_flow = token == kit.flow.token and number.isdigit()
        connection = int(number) if same_flow else kit.flow.new_connection()
        self.start_recording(kit.flow, connection, kit.name, self.name, "server")
        self.record_open(path)

    def __repr__(self) -> str:
        return f"<ServerConnection {self.name!r} {self.state.name}>"


def usable_name(name: str) -> str | None:
    """``name`` without spaces at either end, if it can name a client: 1 to
    :data:`NAME_LIMIT` characters, none of them a control character; else None."""
    name = name.strip()
    return name if 0 < len(name) <= NAME_LIMIT and name.isprintable() else None


def named_in_query(path: str) -> tuple[str | None, str]:
    """The name ``path``'s query gives its client (``/?name=alice``), and the path without it.

    The name is None when the query gives none, or one :func:`usable_name` refuses.
    """
    base, mark, query = path.partition("?")
    if not mark:
        return None, path
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [value for key, value in pairs if key == NAME_PARAMETER]
    rest = urlencode([(key, value) for key, value in pairs if key != NAME_PARAMETER])
    return usable_name(names[-1] if names else ""), base + (f"?{rest}" if rest else "")


class Server:
    """A websockets server started by :func:`serve`, and what it has seen.

    ``url``, ``port`` and ``connections`` describe it; ``errors`` lists what its
    handler raised; ``flow`` what crossed its connections. ``await server.stop()``
    stops it; using a stopped server raises :class:`~wspatterns.errors.ServerStoppedError`.
    ``quiet`` keeps errors on ``errors`` without printing them (the exercises'
    checkers explain them in their own words).
    """

    def __init__(
        self, handler: Handler, name: str, host: str, flow: Flow | None = None, quiet: bool = False
    ) -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.handler = handler
        self.flow = Flow() if flow is None else flow
        self.errors: list[ErrorReport] = []
        self.quiet = quiet
        self._ws: WebSocketsServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._numbers = itertools.count(1)
        self._stopped: str | None = None  # why it stopped, once it has
        # What each handler task is running: its connection, and what the handler returned.
        self._running: dict[asyncio.Task[Any], tuple[ServerConnection, Awaitable[None]]] = {}
        self._closed_by_kit: set[asyncio.Task[Any]] = set()  # handlers that refused to stop

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._stopped is None and self._ws is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the server runs on (the kernel's, or its thread's)."""
        return self._loop

    @property
    def connections(self) -> set[ServerConnection]:
        """The connections open right now (empty once stopped)."""
        if not self.running:
            return set()
        return self._open_connections()

    def _open_connections(self) -> set[ServerConnection]:
        return set() if self._ws is None else set(self._ws.connections)

    def handler_tasks(self) -> list[asyncio.Task[None]]:
        """The tasks running a handler right now, one per connection not yet finished."""
        if self._ws is None:
            return []
        return [task for task in internals.handler_tasks(self._ws) if not task.done()]

    def connections_of(self, client: str) -> list[ServerConnection]:
        """This server's ends of the connections from the client called ``client``.

        A connection stays listed until its handler has returned, even after it closed.
        """
        if self._ws is None:
            return []
        served = internals.served_connections(self._ws)
        return [each for each in served if getattr(each, "name", None) == client]

    def check_running(self) -> None:
        """Raise :class:`ServerStoppedError`, saying why, if this server has stopped."""
        if self._stopped is not None:
            raise ServerStoppedError(f"server {self.name!r} is stopped: {self._stopped}.")

    def next_client_name(self) -> str:
        return f"client-{next(self._numbers)}"

    async def stop(self, timeout: float = STOP_GRACE) -> None:
        """Stop serving and close every connection with code 1001 (going away).

        Handlers get ``timeout`` seconds to return once their connection is
        closed; one that does not is cancelled, and that is reported in
        ``errors``. One that catches the cancellation and goes on is named in
        ``errors`` and its coroutine closed, so that the loop can end. Stopping
        twice does nothing.
        """
        await self._stop_because(STOPPED_BY_YOU, timeout)

    async def retire(self, why: str) -> None:
        await self._stop_because(why, STOP_GRACE)

    def retire_now(self, why: str) -> None:
        """Stop from plain code: wait for the server's loop if another thread runs it."""
        if lifecycle.exiting():
            self.quiet = True
        if not self._mark_stopped(why):
            return
        loop = self._loop
        # A kernel that shuts down has stopped its loop without closing it: it still works,
        # so connections get a proper close, in a second, and no task is left pending.
        grace = STOP_GRACE if loop is not None and loop.is_running() else 1
        finish_on_loop(loop, self._shutdown(grace), grace * 3, self._close_now)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        count = len(self.connections)
        parts = [f"{count} connection" + ("" if count == 1 else "s")]
        if self.errors:
            parts.append(f"{len(self.errors)} error" + ("" if len(self.errors) == 1 else "s"))
        kind = type(self).__name__
        return f"<{kind} {self.name!r} at {self.url} {state}, {', '.join(parts)}>"

    # Starting

    async def start(self, port: int, options: dict[str, Any]) -> None:
        """Listen on ``port`` (0: any free one) on the running loop; called once, by serve()."""
        self._loop = asyncio.get_running_loop()
        options.setdefault("create_connection", self._new_connection)
        options.setdefault("logger", logging.LoggerAdapter(_WS_LOGGER, {"wspatterns_server": self}))
        try:
            self._ws = await ws_serve(self._serve_one, self.host, port, **options)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(exc.errno, _port_taken(self.host, port)) from None
            raise
        self.port = self._ws.sockets[0].getsockname()[1]

    def _new_connection(self, *args: Any, **kwargs: Any) -> KitServerConnection:
        return KitServerConnection(*args, kit=self, **kwargs)

    async def _serve_one(self, connection: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            running = self.handler(connection)
            if not inspect.isawaitable(running):
                raise self._not_awaitable(connection, running)
            self._running[task] = (connection, running)
            await running
        except ConnectionClosed:
            if self._stopped is not None:
                return  # the kit itself closed it: nothing to report, nor for websockets to log
            self._report_failure(connection)
            raise
        except HandlerNotAwaitableError:
            raise  # reported already; websockets closes the connection with 1011
        except Exception:
            if task in self._closed_by_kit:
                return  # what ended it was the kit closing it, reported already
            self._report_failure(connection)
            raise  # websockets then closes the connection with 1011, as it would without us
        finally:
            self._running.pop(task, None)
            self._closed_by_kit.discard(task)

    # Reporting

    def _report_failure(self, connection: ServerConnection) -> None:
        exc = sys.exc_info()[1]
        assert exc is not None
        name = getattr(connection, "name", None) or "a client"
        if isinstance(connection, Recording):
            connection.record_error(exc)
        still_open = getattr(connection, "state", None) is State.OPEN
        self.report(
            reports.handler_failed(
                self.name, name_of(self.handler), name, exc, still_open=still_open
            )
        )

    def _not_awaitable(
        self, connection: ServerConnection, running: object
    ) -> HandlerNotAwaitableError:
        """Report, and return to raise, that the handler returned ``running``, not an awaitable."""
        name = name_of(self.handler)
        exc = HandlerNotAwaitableError(
            f"handler {name!r} returned {running!r}, which cannot be awaited."
        )
        client = getattr(connection, "name", None) or "a client"
        if isinstance(connection, Recording):
            connection.record_error(exc)
        define = "handler" if name == "<lambda>" else name
        self.report(
            ErrorReport(
                self.name,
                client,
                exc,
                f"handler {name!r} of server {self.name!r} returned {running!r} for {client}, "
                "not something to await (websockets awaits what a handler returns); websockets "
                "closed that connection with code 1011.",
                f"Write it as `async def {define}(websocket):`; a plain function may also "
                "return a coroutine, as `lambda websocket: echo(websocket)` does.",
            )
        )
        return exc

    def report(self, report: ErrorReport) -> None:
        """Keep ``report`` on ``errors`` and, unless ``quiet``, show it."""
        self.errors.append(report)
        if not self.quiet:
            reports.show(report)

    def reported(self, exc: BaseException) -> bool:
        """True if ``exc`` itself is the exception of a report on ``errors``."""
        return any(exc is report.exception for report in reversed(self.errors))

    # Stopping

    async def _stop_because(self, why: str, grace: float) -> None:
        """Stop once, from any loop, saying ``why`` to whoever uses this handle later."""
        if self._mark_stopped(why):
            await await_on_loop(self._loop, self._shutdown(grace), grace * 3, self._close_now)

    def _mark_stopped(self, why: str) -> bool:
        """Record why the server stops; False if it had stopped already or never started."""
        if self._stopped is not None:
            return False
        self._stopped = why
        lifecycle.forget("server", self.name, self)
        return self._ws is not None

    async def _shutdown(self, grace: float) -> None:
        """Close the server and its connections; runs on the server's own loop.

        Handlers still running ``grace`` s after their connection closed are cancelled; one
        that catches the cancellation and goes on gets its coroutine closed (as Python closes
        a coroutine it collects), since asyncio.run() and a kernel's end would wait for it
        for ever. Bounded by about 2.5 × ``grace``.
        """
        ws = self._ws
        assert ws is not None
        ws.close(close_connections=True)
        try:
            async with asyncio.timeout(grace):
                await ws.wait_closed()
            return
        except TimeoutError:
            stuck = self.handler_tasks()
        refused: set[asyncio.Task[None]] = set()
        if stuck:
            for task in stuck:
                task.cancel()
            self.report(
                ErrorReport(
                    self.name,
                    None,
                    None,
                    f"{len(stuck)} handler(s) of server {self.name!r} kept running {grace:g} s "
                    "after their connection closed; the kit cancelled them.",
                    "A handler notices a closed connection only while it awaits recv(), "
                    "send() or wait_closed(); a loop that does neither never ends on its own.",
                )
            )
            _, refused = await asyncio.wait(stuck, timeout=grace)
        if refused:
            await self._close_refusing(refused, grace / 2)
        try:
            async with asyncio.timeout(grace / 4 if refused else grace):
                await ws.wait_closed()
        except TimeoutError:
            self._close_now()

    async def _close_refusing(self, tasks: set[asyncio.Task[Any]], grace: float) -> None:
        """End the handlers that caught their cancellation and went on, saying which."""
        handler = name_of(self.handler)
        who: dict[asyncio.Task[Any], tuple[str, str]] = {}
        for task in tasks:
            self._closed_by_kit.add(task)
            connection, running = self._running.get(task, (None, None))
            client = getattr(connection, "name", None) or "a client"
            who[task] = client, f"handler {handler!r} of server {self.name!r}, serving {client},"
            if inspect.iscoroutine(running):
                try:
                    running.close()  # GeneratorExit where it waits: its finally blocks run
                except RuntimeError:
                    pass  # it caught GeneratorExit too, and awaited again: it runs on
            task.cancel()  # wakes the task, whose handler has ended (or goes on refusing)
        _, still = await asyncio.wait(tasks, timeout=grace)
        for task, (client, handler_of) in who.items():
            if task in still:
                summary = (
                    f"{handler_of} did not stop: it caught the cancellation, and went on when "
                    "the kit closed it too. It is still running, and asyncio.run() or the end "
                    "of the kernel will wait for it for ever: interrupt (Ctrl+C, or Kernel > "
                    "Interrupt), or restart the kernel."
                )
            else:
                summary = (
                    f"{handler_of} did not stop when the kit cancelled it: it caught the "
                    "CancelledError and went on. The kit closed its coroutine (GeneratorExit "
                    "where it waited, so its finally blocks ran), or asyncio.run() and the "
                    "end of the kernel would have waited for it for ever."
                )
            self.report(
                ErrorReport(
                    self.name,
                    client,
                    None,
                    summary,
                    "Let cancellation through: re-raise asyncio.CancelledError if you catch "
                    "it (or catch Exception, which does not include it).",
                )
            )

    def _close_now(self) -> None:
        """Stop at once, without awaiting: for when the server's loop cannot run."""
        if self._ws is not None:
            internals.stop_listening_now(self._ws)


def serve(
    handler: Handler,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    flow: Flow | None = None,
    quiet: bool = False,
    **options: Any,
) -> Serving:
    """Start a websockets server on the running event loop: ``server = await serve(handler)``.

    ``handler`` is any ``async def handler(websocket)``, as in the websockets
    docs, or any callable that returns an awaitable, as websockets accepts
    (``lambda websocket: echo(websocket)``); one that returns something else
    is reported as a handler error when a client connects. ``port=0`` picks a
    free port (read it from ``server.url``). ``name`` defaults to the
    handler's name; serving again under a name in use stops the old server
    first, so re-running a cell is safe. What crosses the server's connections
    is recorded in ``server.flow``, a new :class:`~wspatterns.Flow` unless you
    pass one to share. ``quiet=True`` keeps handler errors on
    ``server.errors`` without printing them. Other ``options`` go to
    :func:`websockets.asyncio.server.serve`. Also usable as
    ``async with serve(handler) as server:``.

    Raises TypeError for a handler websockets could not call,
    :class:`~wspatterns.errors.PortInUseError` if the port is taken.
    """
    check_handler(handler)
    return Serving(Server(handler, name or name_of(handler), host, flow, quiet), port, options)


class Serving:
    """What ``serve()`` returns: await it, or use it with ``async with``."""

    def __init__(self, server: Server, port: int, options: dict[str, Any]) -> None:
        self.server = server
        self._port = port
        self._options = options

    async def _start(self) -> Server:
        server = self.server
        why = f"a newer serve(...) under the name {server.name!r} replaced it"
        await lifecycle.retire("server", server.name, why)
        await server.start(self._port, dict(self._options))
        lifecycle.add("server", server.name, server)
        return server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.server.stop()

    def __repr__(self) -> str:
        return f"<serve({self.server.name!r}) not started yet: write `await serve(...)`>"


def servers() -> list[Server]:
    """The servers the kit is running now, oldest first."""
    return [each for each in lifecycle.of_kind("server") if isinstance(each, Server)]


def server_at(host: str | None, port: int | None) -> Server | None:
    """The kit's running server listening on ``host`` (or localhost) and ``port``, if any."""
    for server in servers():
        if server.port == port and host in (server.host, "localhost"):
            return server
    return None


def _port_taken(host: str, port: int) -> str:
    owner = next((s for s in servers() if s.port == port), None)
    if owner is not None:
        return (
            f"port {port} on {host} is used by the kit's server {owner.name!r}: stop it "
            f"(`await server.stop()`), or serve under name={owner.name!r} to replace it."
        )
    return (
        f"port {port} on {host} is already in use by another program. Pass port=0 to let "
        f"the system pick a free port, or stop the program using it (`lsof -i :{port}`)."
    )


class _ProblemsToServer(logging.Handler):
    """Route what websockets logs about a kit server to that server's ``errors``."""

    def emit(self, record: logging.LogRecord) -> None:
        server = getattr(record, "wspatterns_server", None)
        exc = record.exc_info[1] if record.exc_info else None
        if server is None or exc is not None and server.reported(exc):
            return  # what a handler raised, reported already, pointing at the learner's code
        server.report(
            ErrorReport(server.name, None, exc, f"server {server.name!r}: {record.getMessage()}.")
        )


_WS_LOGGER = logging.getLogger("wspatterns.websockets")
_WS_LOGGER.setLevel(logging.WARNING)
_WS_LOGGER.propagate = False
_WS_LOGGER.addHandler(_ProblemsToServer())
