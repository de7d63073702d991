"""Servers and clients that live inside a running Jupyter kernel.

A Jupyter kernel already runs an asyncio event loop, so a server started with
``await serve(handler)`` keeps serving after its cell ends, across cells and
while the kernel is idle. This module makes that safe to do again and again:

* servers and clients have names; serving or connecting under a name that is
  in use stops the old one first, so re-running a cell leaks nothing;
* every wait is bounded by ``TIMEOUT`` seconds unless you pass ``timeout=``;
* what a handler raises is kept on ``server.errors`` and shown (see
  :mod:`wspatterns.errors`);
* ``stop_all()`` stops everything, and so does the end of the interpreter.

``serve_in_thread`` runs a server on its own loop in a daemon thread, for
code that cannot ``await``: sync clients, third-party libraries, scripts.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import functools
import inspect
import itertools
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, InvalidURI
from websockets.protocol import State
from websockets.uri import parse_uri

from . import errors
from .errors import ErrorReport, InvalidTargetError, PortInUseError, ServerStoppedError
from .flow import Flow, Recording

#: Seconds any wait in the kit may take before it gives up, unless told otherwise.
TIMEOUT: float = float(os.environ.get("WSPATTERNS_TIMEOUT", "10"))

#: Seconds a handler gets to return after its connection is closed by ``stop()``.
STOP_GRACE: float = 2.0

Handler = Callable[[ServerConnection], Awaitable[None]]
T = TypeVar("T")

# A kit client tells the server its name, so both ends call it the same, and
# which connection of which flow it records as, so both ends' records pair up.
NAME_HEADER = "X-WSPatterns-Name"
CONNECTION_HEADER = "X-WSPatterns-Connection"

_servers: dict[str, Server] = {}
_clients: dict[tuple[str, str], Client] = {}  # by (url, name)
_registry_lock = threading.RLock()
_client_numbers = itertools.count(1)
_DEFAULT: Any = object()


# Servers


class _ServerConnection(Recording, ServerConnection):
    """A websockets server connection that records into its server's flow, under a name."""

    name: str = "client"

    def __init__(self, *args: Any, kit: Server, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kit = kit
        # The handshake response is the moment to start: the request names the
        # client, and frames flow right after. The wrapper removes itself.
        self.protocol.send_response = self._send_response

    def _send_response(self, response: Any) -> None:
        protocol, request = self.protocol, self.request
        del protocol.send_response
        if request is not None:
            self._start_recording(request)
        protocol.send_response(response)
        if request is not None and response.status_code == 101:
            self.record_open(request.path)

    def _start_recording(self, request: Any) -> None:
        kit = self.kit
        self.name = request.headers.get(NAME_HEADER) or kit.next_client_name()
        token, _, number = request.headers.get(CONNECTION_HEADER, "").partition(".")
        same_flow = token == kit.flow.token and number.isdigit()
        connection = int(number) if same_flow else kit.flow.new_connection()
        self.start_recording(kit.flow, connection, kit.name, self.name, "server")

    def __repr__(self) -> str:
        return f"<ServerConnection {self.name!r} {self.state.name}>"


class Server:
    """A websockets server started by :func:`serve`, and what it has seen.

    ``url``, ``port`` and ``connections`` describe it; ``errors`` lists what its
    handler raised. ``await server.stop()`` stops it; using a stopped server
    raises :class:`~wspatterns.errors.ServerStoppedError`.
    """

    def __init__(self, handler: Handler, name: str, host: str, flow: Flow | None = None) -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.handler = handler
        self.flow = Flow() if flow is None else flow
        self.errors: list[ErrorReport] = []
        self._ws: Any = None  # websockets.asyncio.server.Server once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._numbers = itertools.count(1)
        self._stopped: str | None = None  # why it stopped, once it has
        self._quiet = False  # at interpreter exit, keep errors without printing them

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._stopped is None and self._ws is not None

    @property
    def connections(self) -> set[ServerConnection]:
        """The connections open right now (empty once stopped)."""
        if not self.running:
            return set()
        return set(self._ws.connections)

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
        ``errors``. Stopping twice does nothing.
        """
        await self._stop("you stopped it with stop(); serve it again to restart it", timeout)

    async def _stop(self, why: str, grace: float) -> None:
        """Stop once, from any loop, saying ``why`` to whoever uses this handle later."""
        if self._mark_stopped(why):
            await _await_on_loop(self._loop, self._shutdown(grace), grace * 3, self)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        count = len(self.connections)
        parts = [f"{count} connection" + ("" if count == 1 else "s")]
        if self.errors:
            parts.append(f"{len(self.errors)} error" + ("" if len(self.errors) == 1 else "s"))
        kind = type(self).__name__
        return f"<{kind} {self.name!r} at {self.url} {state}, {', '.join(parts)}>"

    # Inside the kit

    async def _start(self, port: int, options: dict[str, Any]) -> None:
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

    def _new_connection(self, *args: Any, **kwargs: Any) -> _ServerConnection:
        return _ServerConnection(*args, kit=self, **kwargs)

    async def _serve_one(self, connection: ServerConnection) -> None:
        try:
            await self.handler(connection)
        except ConnectionClosed:
            if self._stopped is None:  # not when the kit itself is closing it
                self._report_failure(connection)
            raise
        except Exception:
            self._report_failure(connection)
            raise  # websockets then closes the connection with 1011, as it would without us

    def _report_failure(self, connection: ServerConnection) -> None:
        exc = sys.exc_info()[1]
        name = getattr(connection, "name", None) or "a client"
        if isinstance(connection, Recording):
            connection.record_error(exc)
        still_open = getattr(connection, "state", None) is State.OPEN
        self._report(
            errors.handler_failed(
                self.name, _name_of(self.handler), name, exc, still_open=still_open
            )
        )

    def _report(self, report: ErrorReport) -> None:
        self.errors.append(report)
        if not self._quiet:
            errors.show(report)

    def _mark_stopped(self, why: str) -> bool:
        """Record why the server stops; False if it had stopped already."""
        with _registry_lock:
            if self._stopped is not None:
                return False
            self._stopped = why
            if _servers.get(self.name) is self:
                del _servers[self.name]
        return self._ws is not None

    async def _shutdown(self, grace: float) -> None:
        """Close the server and its connections; runs on the server's own loop."""
        ws = self._ws
        ws.close(close_connections=True)
        try:
            async with asyncio.timeout(grace):
                await ws.wait_closed()
            return
        except TimeoutError:
            stuck = [task for task in ws.handler_tasks if not task.done()]
        for task in stuck:
            task.cancel()
        self._report(
            ErrorReport(
                self.name,
                None,
                None,
                f"{len(stuck)} handler(s) of server {self.name!r} kept running {grace:g} s "
                "after their connection closed; the kit cancelled them.",
                "A handler notices a closed connection only while it awaits recv(), send() "
                "or wait_closed(); a loop that does neither never ends on its own.",
            )
        )
        try:
            async with asyncio.timeout(grace):
                await ws.wait_closed()
        except TimeoutError:
            self._close_now()

    def _close_now(self) -> None:
        """Stop at once, without awaiting: for when the server's loop cannot run."""
        if self._ws is None:
            return
        self._ws.server.close()  # releases the listening socket immediately
        for connection in list(self._ws.all_connections):
            connection.transport.abort()
        for task in list(self._ws.handler_tasks):
            task.cancel()


class ThreadServer(Server):
    """A server running on its own event loop in a daemon thread.

    It answers while the calling thread is blocked, so sync clients can use it
    from a notebook cell. ``stop()`` is a plain (not async) call.
    """

    def __init__(self, handler: Handler, name: str, host: str, flow: Flow | None = None) -> None:
        super().__init__(handler, name, host, flow)
        self._thread: threading.Thread | None = None

    @property
    def connections(self) -> set[ServerConnection]:
        if not self.running:
            return set()
        return _call_in_loop(self._loop, lambda: set(self._ws.connections), TIMEOUT)

    def stop(self, timeout: float = STOP_GRACE) -> None:  # type: ignore[override]
        """Stop the server, close its connections, end its thread. Blocks at most ~3 × timeout."""
        if self._mark_stopped("you stopped it with stop(); serve it again to restart it"):
            self._stop_thread(timeout)

    def _stop_thread(self, grace: float) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop)
        try:
            future.result(grace * 3)
        except TimeoutError:
            future.cancel()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(grace * 3)


def serve(
    handler: Handler,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    flow: Flow | None = None,
    **options: Any,
) -> _Serving:
    """Start a websockets server on the running event loop: ``server = await serve(handler)``.

    ``handler`` is any ``async def handler(websocket)``, as in the websockets
    docs. ``port=0`` picks a free port (read it from ``server.url``). ``name``
    defaults to the handler's name; serving again under a name in use stops
    the old server first, so re-running a cell is safe. What crosses the
    server's connections is recorded in ``server.flow``, a new
    :class:`~wspatterns.Flow` unless you pass one to share. Other ``options``
    go to :func:`websockets.asyncio.server.serve`. Also usable as
    ``async with serve(handler) as server:``.

    Raises TypeError for a handler websockets could not call,
    :class:`~wspatterns.errors.PortInUseError` if the port is taken.
    """
    _check_handler(handler)
    return _Serving(handler, name or _name_of(handler), host, port, flow, options)


class _Serving:
    """What ``serve()`` returns: await it, or use it with ``async with``."""

    def __init__(self, handler, name, host, port, flow, options) -> None:
        self._args = (handler, name, host, port, flow, options)
        self._server: Server | None = None

    async def _start(self) -> Server:
        handler, name, host, port, flow, options = self._args
        await _retire(name, f"a newer serve(...) under the name {name!r} replaced it")
        server = Server(handler, name, host, flow)
        await server._start(port, dict(options))
        _register_server(server)
        self._server = server
        return server

    def __await__(self):
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(self, *exc_info) -> None:
        if self._server is not None:
            await self._server.stop()

    def __repr__(self) -> str:
        return f"<serve({self._args[1]!r}) not started yet: write `await serve(...)`>"


def serve_in_thread(
    handler: Handler,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    flow: Flow | None = None,
    timeout: float | None = None,
    **options: Any,
) -> ThreadServer:
    """Start a server on its own event loop in a daemon thread; a plain (not async) call.

    Use it when the client cannot await: ``websockets.sync.client``, a
    third-party library, code in a plain function. Same arguments and naming
    rules as :func:`serve`; stop it with ``server.stop()``.
    """
    _check_handler(handler)
    name = name or _name_of(handler)
    timeout = TIMEOUT if timeout is None else timeout
    _retire_blocking(name, f"a newer serve_in_thread(...) under the name {name!r} replaced it")
    loop = asyncio.new_event_loop()
    server = ThreadServer(handler, name, host, flow)
    server._thread = threading.Thread(
        target=_run_loop_forever, args=(loop,), name=f"wspatterns server {name}", daemon=True
    )
    server._thread.start()
    future = asyncio.run_coroutine_threadsafe(server._start(port, dict(options)), loop)
    try:
        future.result(timeout)
    except BaseException:
        future.cancel()
        loop.call_soon_threadsafe(loop.stop)
        server._thread.join(timeout)
        raise
    _register_server(server)
    return server


def servers() -> list[Server]:
    """The servers the kit is running now, oldest first."""
    with _registry_lock:
        return list(_servers.values())


# Clients


class Client(Recording, ClientConnection):
    """A websockets client connection whose waits for messages end after ``timeout`` seconds.

    Everything else is plain :class:`websockets.asyncio.client.ClientConnection`.
    ``recv()`` and ``async for message in client`` raise TimeoutError once they
    have waited ``timeout`` seconds (up to a quarter more) for a message; like
    a cancelled ``recv()``, that loses nothing. What the client sends and
    receives is recorded in ``client.flow``.
    """

    name: str = "client"
    key: tuple[str, str] = ("", "")
    timeout: float | None = TIMEOUT
    _watchdog: asyncio.TimerHandle | None = None
    _watched: asyncio.Future | None = None
    _since = 0.0

    def _process_response(self, response: Any) -> None:
        # Frames may follow the handshake response in the same packet: recording
        # starts here, between the two, and the wrapper removes itself.
        protocol = self.protocol
        del protocol.process_response
        protocol.process_response(response)  # raises if the server refused
        self.record_open(self.request.path)

    def start_watchdog(self) -> None:
        """Check a few times per ``timeout`` whether a recv() has waited too long.

        A timer per recv() would cost more than all the kit's other work on a
        message; one watchdog per client costs nothing per message.
        """
        if self.timeout is not None:
            self._watchdog = self.loop.call_later(self.timeout / 4, self._check_waiting)

    def _check_waiting(self) -> None:
        # websockets parks a waiting recv() on this future; failing it is how
        # websockets itself ends a recv() when the connection closes.
        waiter = getattr(getattr(self.recv_messages, "frames", None), "get_waiter", None)
        now = self.loop.time()
        if waiter is None or waiter.done():
            self._watched = None
        elif waiter is not self._watched:
            self._watched, self._since = waiter, now
        elif now - self._since >= self.timeout and not (self.recorder and self.recorder.partial):
            # (Mid-way through a fragmented message it waits on: the keepalive
            # ping closes a connection whose peer has gone silent.)
            waiter.set_exception(
                TimeoutError(
                    f"{self.name} received no message within {self.timeout:g} s "
                    "(pass timeout= to connect() to wait longer)."
                )
            )
            self._watched = None
        if self.state is not State.CLOSED:
            self.start_watchdog()

    async def wait_closed(self, *, timeout: float | None = _DEFAULT) -> None:
        """Wait until the connection is closed; raise TimeoutError after ``timeout`` s."""
        limit = self.timeout if timeout is _DEFAULT else timeout
        await _within(
            limit,
            super().wait_closed(),
            lambda: (
                f"{self.name} was still open after {limit:g} s "
                "(pass timeout= to wait_closed() or connect() to wait longer)."
            ),
        )

    def __repr__(self) -> str:
        return f"<Client {self.name!r} {self.state.name}>"

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._watchdog is not None:
            self._watchdog.cancel()
        with _registry_lock:
            if _clients.get(self.key) is self:
                del _clients[self.key]


class connect:
    """Open a client to a :class:`Server` or a ``ws://`` URL.

    ``async with connect(server) as websocket:`` closes it at the end of the
    block; ``websocket = await connect(server)`` keeps it open until you close
    it or call :func:`stop_all`. The client ignores system proxies (pass
    ``proxy=`` to use one) and gives up on opening or receiving after
    ``timeout`` seconds (``timeout=None``: never). Connecting under a ``name`` in use closes the old
    client first. It records into the server's flow, or into ``flow=``.
    Other ``options`` go to :func:`websockets.asyncio.client.connect`.
    """

    def __init__(
        self,
        target: Server | str,
        *,
        name: str | None = None,
        flow: Flow | None = None,
        timeout: float | None = _DEFAULT,
        **options: Any,
    ) -> None:
        self.url, server = _resolve(target)
        self.timeout = TIMEOUT if timeout is _DEFAULT else timeout
        if name is None:
            name = server.next_client_name() if server else f"client-{next(_client_numbers)}"
        self.name = name
        self.flow = flow if flow is not None else server.flow if server else Flow()
        self._server_name = server.name if server else "server"
        options.setdefault("proxy", None)
        options.setdefault("open_timeout", self.timeout)
        options.setdefault("close_timeout", self.timeout)
        self._options = options
        self._client: Client | None = None

    def _new_client(self, connection: int, *args: Any, **kwargs: Any) -> Client:
        client = Client(*args, **kwargs)
        client.start_recording(self.flow, connection, self._server_name, self.name, "client")
        client.protocol.process_response = client._process_response
        return client

    async def _open(self) -> Client:
        key = (self.url, self.name)
        await _forget_client(key)
        connection = self.flow.new_connection()
        options = dict(self._options)
        options["additional_headers"] = {
            **dict(options.get("additional_headers") or {}),
            NAME_HEADER: self.name,
            CONNECTION_HEADER: f"{self.flow.token}.{connection}",
        }
        options.setdefault("create_connection", functools.partial(self._new_client, connection))
        try:
            client = await ws_connect(self.url, **options)
        except ConnectionRefusedError:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED,
                f"nothing is listening at {self.url}: is the server running? "
                "Start one with `server = await serve(handler)` and connect to `server`.",
            ) from None
        except TimeoutError:
            raise TimeoutError(
                f"{self.url} did not finish the opening handshake within "
                f"{options['open_timeout']:g} s. If that server runs on this kernel's "
                "event loop, is a blocking call in this cell keeping the loop from answering?"
            ) from None
        client.name, client.key = self.name, key
        if isinstance(client, Client):
            client.timeout = self.timeout
            client.start_watchdog()
        with _registry_lock:
            _clients[key] = client
        self._client = client
        return client

    def __await__(self):
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        return await self._open()

    async def __aexit__(self, *exc_info) -> None:
        if self._client is not None:
            await self._client.close()

    def __repr__(self) -> str:
        return f"<connect({self.url!r}) not opened yet: write `await connect(...)`>"


# Stopping everything


async def stop_all(timeout: float = STOP_GRACE) -> None:
    """Close every client and stop every server the kit started, wherever they run."""
    with _registry_lock:
        clients = list(_clients.values())
        running = list(_servers.values())
    for client in clients:
        await _forget_client(client.key)
    for server in running:
        if isinstance(server, ThreadServer):
            await asyncio.to_thread(server.stop, timeout)
        else:
            await server.stop(timeout)


def _stop_all_at_exit() -> None:
    """Stop what is left when the interpreter ends: quietly, within a few seconds."""
    with _registry_lock:
        clients = list(_clients.values())
        running = list(_servers.values())
    for server in running:
        server._quiet = True
    # A kernel that shuts down has stopped its loop without closing it: the loop
    # still works, so clients and servers on it get a proper close, and no task
    # is left pending for the garbage collector to complain about.
    loops = {s._loop for s in running if not isinstance(s, ThreadServer)}
    loops |= {client.loop for client in clients}
    for loop in loops:
        if loop is not None and not loop.is_closed() and not loop.is_running():
            mine = [s for s in running if s._loop is loop and not isinstance(s, ThreadServer)]
            theirs = [c for c in clients if c.loop is loop]
            loop.run_until_complete(_close_quietly(theirs, mine))
    for server in running:
        if isinstance(server, ThreadServer):
            server.stop(timeout=1)
    # Whatever is left lives on a closed loop: the operating system reclaims its sockets.


async def _close_quietly(clients: list[Client], running: list[Server]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await client.close()
    for server in running:
        if server._mark_stopped("the interpreter exited"):
            await server._shutdown(1)


# Running a coroutine from sync code


def run(coro: Coroutine[Any, Any, T], *, timeout: float | None = _DEFAULT) -> T:
    """Run ``coro`` to completion from sync code and return its result.

    In a plain script this is ``asyncio.run``, and whatever the kit started
    inside is stopped at the end. Inside a running loop (a notebook cell)
    ``asyncio.run`` refuses, so this makes that loop re-entrant with
    nest-asyncio2 and runs ``coro`` on it; the patch is applied only then,
    never on import. Gives up with TimeoutError after ``timeout`` seconds.
    """
    if not inspect.iscoroutine(coro):
        hint = " Call it: run(main()), not run(main)." if inspect.iscoroutinefunction(coro) else ""
        raise TypeError(f"run() needs a coroutine, got {coro!r}.{hint}")
    limit = TIMEOUT if timeout is _DEFAULT else timeout

    def gave_up() -> str:
        return f"run() gave up after {limit:g} s (pass timeout= to allow longer)."

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_stopping_all_after(_within(limit, coro, gave_up)))
    import nest_asyncio2

    nest_asyncio2.apply(loop)
    return loop.run_until_complete(_within(limit, coro, gave_up))


async def _within(limit: float | None, awaitable: Awaitable[T], message: Callable[[], str]) -> T:
    """Await ``awaitable``, or raise TimeoutError(message()) after ``limit`` seconds."""
    if limit is None:
        return await awaitable
    try:
        async with asyncio.timeout(limit):
            return await awaitable
    except TimeoutError:
        raise TimeoutError(message()) from None


async def _stopping_all_after(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    finally:
        await stop_all()


# Plumbing


def _check_handler(handler: Any) -> None:
    """Refuse, with the fix in the message, a handler websockets could not call."""
    if not callable(handler):
        raise TypeError(
            f"serve() needs a handler function, like `async def handler(websocket): ...`; "
            f"got {handler!r}."
        )
    name = _name_of(handler)
    if name == "<lambda>":
        name = "handler"
    if inspect.isasyncgenfunction(handler):
        raise TypeError(
            f"handler {name!r} is an async generator (it contains `yield`); a handler "
            "sends with `await websocket.send(...)` instead of yielding."
        )
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with async __call__
    if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
        raise TypeError(
            f"handler {name!r} is not an async function: write `async def {name}(websocket):`. "
            "websockets runs one handler coroutine per connection."
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(object())
    except TypeError:
        required = [
            p
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(required) == 2:
            fix = (
                f"Since websockets 13 a handler gets only the connection: drop "
                f"{required[1].name!r} and read websocket.request.path instead."
            )
        else:
            fix = f"Write it as `async def {name}(websocket):`."
        raise TypeError(
            f"handler {name}{signature} must take exactly one argument, the connection. {fix}"
        ) from None


def _name_of(handler: Any) -> str:
    inner = getattr(handler, "func", handler)  # functools.partial
    return getattr(inner, "__name__", None) or type(inner).__name__


def _resolve(target: Any) -> tuple[str, Server | None]:
    """The URL to connect to, and the kit server behind it if there is one."""
    if isinstance(target, Server):
        target.check_running()
        return target.url, target
    if not isinstance(target, str):
        raise InvalidTargetError(
            f"connect() needs a server from serve() or a URL like 'ws://127.0.0.1:8765/'; "
            f"got {target!r}."
        )
    try:
        parse_uri(target)
    except InvalidURI as exc:
        if target.startswith(("http://", "https://")):
            fix = f"WebSocket URLs start with ws:// or wss://: try {'ws' + target[4:]!r}."
        elif "://" not in target:
            fix = f"Add the scheme: try {'ws://' + target!r}."
        else:
            fix = "A WebSocket URL looks like 'ws://127.0.0.1:8765/path'."
        message = f"{target!r} is not a valid WebSocket URL ({exc}). {fix}"
        raise InvalidTargetError(message) from None
    with _registry_lock:
        known = next((s for s in _servers.values() if _same_address(s, target)), None)
    return target, known


def _same_address(server: Server, url: str) -> bool:
    uri = parse_uri(url)
    return uri.port == server.port and uri.host in (server.host, "localhost")


def _port_taken(host: str, port: int) -> str:
    with _registry_lock:
        owner = next((s for s in _servers.values() if s.port == port), None)
    if owner is not None:
        return (
            f"port {port} on {host} is used by the kit's server {owner.name!r}: stop it "
            f"(`await server.stop()`), or serve under name={owner.name!r} to replace it."
        )
    return (
        f"port {port} on {host} is already in use by another program. Pass port=0 to let "
        f"the system pick a free port, or stop the program using it (`lsof -i :{port}`)."
    )


def _register_server(server: Server) -> None:
    global _at_exit_registered
    with _registry_lock:
        _servers[server.name] = server
        if not _at_exit_registered:
            atexit.register(_stop_all_at_exit)
            _at_exit_registered = True


_at_exit_registered = False


async def _retire(name: str, why: str) -> None:
    """Stop the server called ``name``, if any, from async code."""
    with _registry_lock:
        old = _servers.get(name)
    if isinstance(old, ThreadServer):
        if old._mark_stopped(why):
            await asyncio.to_thread(old._stop_thread, STOP_GRACE)
    elif old is not None:
        await old._stop(why, STOP_GRACE)


def _retire_blocking(name: str, why: str) -> None:
    """Stop the server called ``name``, if any, from sync code."""
    with _registry_lock:
        old = _servers.get(name)
    if old is None or not old._mark_stopped(why):
        return
    if isinstance(old, ThreadServer):
        old._stop_thread(STOP_GRACE)
    elif old._loop.is_running() and not _is_current(old._loop):
        asyncio.run_coroutine_threadsafe(old._shutdown(STOP_GRACE), old._loop).result(
            STOP_GRACE * 3
        )
    elif not old._loop.is_closed():
        old._close_now()  # its loop is this thread's, busy running us: no waiting possible


async def _await_on_loop(loop, coro, limit: float, server: Server | None = None) -> None:
    """Await ``coro`` on ``loop``, which may be ours, another thread's, or gone."""
    if loop is None or loop.is_closed():
        coro.close()
        return
    if _is_current(loop):
        await coro
    elif loop.is_running():
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        await asyncio.wait_for(asyncio.wrap_future(future), limit)
    else:
        coro.close()
        if server is not None:
            server._close_now()


def _is_current(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _forget_client(key: tuple[str, str]) -> None:
    with _registry_lock:
        old = _clients.pop(key, None)
    if old is None:
        return
    if _is_current(old.loop):
        await old.close()
    elif not old.loop.is_closed():
        old.loop.call_soon_threadsafe(old.transport.abort)


def _call_in_loop(loop, function: Callable[[], T], limit: float) -> T:
    async def call() -> T:
        return function()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(limit)


def _run_loop_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class _ProblemsToServer(logging.Handler):
    """Route what websockets logs about a kit server to that server's ``errors``."""

    def emit(self, record: logging.LogRecord) -> None:
        server = getattr(record, "wspatterns_server", None)
        if server is None or record.getMessage() == "connection handler failed":
            return  # the kit reported that one already, pointing at the learner's code
        exc = record.exc_info[1] if record.exc_info else None
        server._report(
            ErrorReport(server.name, None, exc, f"server {server.name!r}: {record.getMessage()}.")
        )


_WS_LOGGER = logging.getLogger("wspatterns.websockets")
_WS_LOGGER.setLevel(logging.WARNING)
_WS_LOGGER.propagate = False
_WS_LOGGER.addHandler(_ProblemsToServer())
