"""Clients of the kit: websockets' own client, named and recorded.

``async with connect(server) as websocket:`` opens a plain
:class:`websockets.asyncio.client.ClientConnection` that also records what it
sends and receives into the server's flow. ``recv()`` and ``async for`` wait
as long as they do in websockets: for ever, if nothing comes. What the kit
adds is a word: when a notebook cell has waited on a client for ``timeout``
seconds, one line under the cell says which client waits for what, and the
wait goes on. Opening the connection and ``wait_closed()`` are bounded: by
``timeout`` (``TIMEOUT`` when left out; None: never, and no word either).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import itertools
import time
from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import Any, Literal, overload

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidMessage, InvalidStatus, InvalidURI
from websockets.protocol import State
from websockets.typing import Data
from websockets.uri import parse_uri

from .. import internals, reports
from ..errors import (
    HandshakeRejectedError,
    InvalidNameError,
    InvalidTargetError,
    KitTimeoutError,
    NothingListeningError,
    NotWebSocketServerError,
    WrongTypeError,
)
from ..flow import Flow, Recording
from ..settings import DEFAULT, TIMEOUT, timeout_seconds
from ..waiting import within
from . import lifecycle
from .loops import await_on_loop, finish_on_loop
from .server import CONNECTION_HEADER, NAME_HEADER, NAME_LIMIT, Server, server_at, usable_name

_client_numbers = itertools.count(1)

#: Seconds a client stopped from plain code (a name replaced, the end of the interpreter)
#: waits for its server's closing handshake before it drops the connection: not long, as
#: that server may run on the very loop whose thread waits.
CLOSE_GRACE = 0.1


class Client(Recording, ClientConnection):
    """A websockets client connection with a name, recording into a flow.

    Everything is plain :class:`websockets.asyncio.client.ClientConnection`:
    ``recv()`` and ``async for`` wait until a message or the close arrives. When
    a notebook cell has waited ``timeout`` seconds on ``recv()``, the kit prints
    one line saying so (once per wait); bound a wait yourself with
    ``async with asyncio.timeout(seconds):``.
    """

    name: str = "client"
    key: tuple[str, str] = ("", "")
    timeout: float | None = TIMEOUT
    server_name: str = "server"
    _waiting_since: float | None = None  # when the latest recv() began
    _waiting_task: asyncio.Task[Any] | None = None  # the task that called it
    _waiting_after = 0  # how many messages had been received then
    _hint: asyncio.TimerHandle | None = None

    # websockets' own overloads: recv(decode=True) gives a str, recv(decode=False) bytes.
    @overload
    def recv(self, decode: Literal[True]) -> Coroutine[Any, Any, str]: ...

    @overload
    def recv(self, decode: Literal[False]) -> Coroutine[Any, Any, bytes]: ...

    @overload
    def recv(self, decode: bool | None = None) -> Coroutine[Any, Any, Data]: ...

    def recv(self, decode: bool | None = None) -> Coroutine[Any, Any, Data]:
        """Receive the next message: websockets' own ``recv()`` (``async for`` calls this
        too), returned as it is once the kit noted when the wait began, for its hint.

        Not a coroutine of its own: one more coroutine around websockets' cost a kit
        client 2 % of its round trips (benchmarks/README.md)."""
        if self.timeout is not None:
            self._waiting_since = time.monotonic()
            self._waiting_task = asyncio.current_task(self.loop)
            if self.recorder is not None:
                self._waiting_after = self.recorder.received
            if self._hint is None:
                self._hint = self.loop.call_later(self.timeout, self._check_wait)
        return super().recv(decode)

    def _still_waiting(self) -> bool:
        """True if the latest ``recv()`` is still waiting: no message came since it began,
        its task goes on, and websockets has a ``recv()`` under way (if it says)."""
        task, recorder = self._waiting_task, self.recorder
        if task is None or task.done() or self.state is State.CLOSED:
            return False
        if recorder is not None and recorder.received != self._waiting_after:
            return False
        return internals.receiving(self) is not False

    def _check_wait(self) -> None:
        """Say once, under the cell, that a wait has lasted ``timeout`` s; one timer per client."""
        since, limit = self._waiting_since, self.timeout
        self._hint = None
        if since is None or limit is None or not self._still_waiting():
            return  # not waiting now: the next recv() sets a new timer
        waited = time.monotonic() - since
        if waited < limit:  # a later recv(): look again when it has waited long enough
            self._hint = self.loop.call_later(limit - waited, self._check_wait)
        elif reports.waits_in_cell(self._waiting_task):
            reports.note(
                f"{self.name} has waited {limit:g} s in recv() for a message from "
                f"{self.server_name}, and goes on waiting. If that is not what you expect, "
                "interrupt the kernel (Kernel > Interrupt, or press I twice)."
            )

    async def wait_closed(self, *, timeout: float | None = DEFAULT) -> None:
        """Wait until the connection is closed; raise TimeoutError after ``timeout`` s
        (left out: the ``timeout`` of :class:`connect`, itself ``TIMEOUT`` when left out;
        None: never)."""
        limit = timeout_seconds(timeout, self.timeout)
        await within(
            limit,
            super().wait_closed(),
            lambda: (
                f"{self.name} was still open after {limit:g} s "
                "(pass timeout= to wait_closed() or connect() to wait longer)."
            ),
        )

    async def retire(self, why: str) -> None:
        """Close, from any loop: on the client's own (another thread's, maybe), which does
        the closing handshake; a loop stopped meanwhile gets the connection dropped."""
        limit = None if self.close_timeout is None else self.close_timeout + 1
        await await_on_loop(self.loop, self.close(), limit, self.transport.abort)

    def retire_now(self, why: str) -> None:
        """Stop from plain code: close, as :meth:`retire` does, but wait at most
        :data:`CLOSE_GRACE` s for the server's answer, then drop the connection; from the
        thread running its loop, which cannot wait, drop it at once."""
        self.close_timeout = CLOSE_GRACE  # websockets' own bound: past it, close() aborts
        try:
            finish_on_loop(self.loop, self.close(), CLOSE_GRACE + 1, self.transport.abort)
        except Exception:  # its loop did not run the close in time: it drops it when it can
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile
                self.loop.call_soon_threadsafe(self.transport.abort)

    def __repr__(self) -> str:
        return f"<Client {self.name!r} {self.state.name}>"

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._hint is not None:
            self._hint.cancel()
            self._hint = None
        lifecycle.forget("client", self.key, self)


class connect:  # noqa: N801 - used like websockets' connect, which is a class too
    """Open a client to a :class:`Server` or a ``ws://`` URL.

    ``async with connect(server) as websocket:`` closes it at the end of the
    block; ``websocket = await connect(server)`` keeps it open until you close
    it or call :func:`stop_all`. The client ignores system proxies (pass
    ``proxy=`` to use one). Opening gives up after ``timeout`` seconds (``TIMEOUT``
    when left out; None: never); ``recv()`` waits as long as it takes, with a word
    under the cell after ``timeout`` seconds (None: no word). Connecting under a ``name`` in use
    closes the old client first. It records into the server's flow, or into
    ``flow=``. Other ``options`` go to :func:`websockets.asyncio.client.connect`.
    """

    def __init__(
        self,
        target: Server | str,
        *,
        name: str | None = None,
        flow: Flow | None = None,
        timeout: float | None = DEFAULT,
        **options: Any,
    ) -> None:
        self.url, server = resolve(target)
        self.timeout = timeout_seconds(timeout)
        if name is None:
            name = server.next_client_name() if server else f"client-{next(_client_numbers)}"
        elif usable_name(name) != name:
            raise InvalidNameError(
                f"connect() cannot name a client {name!r}: a name has 1 to {NAME_LIMIT} "
                "characters, no control characters, and no spaces at either end."
            )
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

        def opened() -> None:
            if client.request is not None:  # always, once the handshake succeeded
                client.record_open(client.request.path)

        # Frames may follow the handshake response in the same packet: record from there.
        internals.after_client_handshake(client.protocol, opened)
        return client

    async def _open(self) -> Client:
        key = (self.url, self.name)
        await lifecycle.retire("client", key, f"a newer connect() as {self.name!r} replaced it")
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
            raise NothingListeningError(
                errno.ECONNREFUSED,
                f"nothing is listening at {self.url}: is the server running? "
                "Start one with `server = await serve(handler)` and connect to `server`.",
            ) from None
        except InvalidStatus as exc:
            raise _rejected(self.url, exc) from None
        except InvalidMessage as exc:
            raise _not_websocket(self.url, exc) from None
        except TimeoutError:
            raise KitTimeoutError(
                f"{self.url} did not finish the opening handshake within "
                f"{options['open_timeout']:g} s. If that server runs on this kernel's "
                "event loop, is a blocking call in this cell keeping the loop from answering?"
            ) from None
        if not isinstance(client, Client):  # a create_connection= of the caller's made it
            await client.close()
            raise WrongTypeError(
                f"connect() needs connections it makes itself; create_connection= made {client!r}"
            )
        client.name, client.key = self.name, key
        client.timeout, client.server_name = self.timeout, self._server_name
        reports.watch_cells()
        lifecycle.add("client", key, client)
        self._client = client
        return client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        return await self._open()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()

    def __repr__(self) -> str:
        return f"<connect({self.url!r}) not opened yet: write `await connect(...)`>"


def _rejected(url: str, exc: InvalidStatus) -> HandshakeRejectedError:
    """What to raise when ``url`` answered the opening handshake with a status, not 101."""
    response = exc.response
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if 200 <= response.status_code < 300:
        software = response.headers.get("Server")
        by = f" ({software})" if software else ""
        message = (
            f"{url} is not a WebSocket server: it answered {status}, as a web server answers "
            f"a page{by}. Is this the WebSocket port?"
        )
    else:
        said = bytes(response.body or b"").decode(errors="replace").strip().partition("\n")[0]
        message = (
            f"{url} refused the WebSocket connection: {status}"
            + (f", {said[:200]!r}" if said else "")
            + ". Is the path right, and does that server want more (a token, a name, "
            "another Origin)?"
        )
    return HandshakeRejectedError(message, response)


def _not_websocket(url: str, exc: InvalidMessage) -> NotWebSocketServerError:
    """What to raise when ``url`` did not answer the opening handshake in HTTP/1.1."""
    cause = exc.__cause__
    line = internals.status_line_read(exc)
    if isinstance(cause, EOFError):
        said = "it closed the connection without answering the opening handshake"
    elif line is not None:
        said = f"it answered {line!r}, as an older web server does (WebSocket needs HTTP/1.1)"
    else:
        said = f"its answer is not a WebSocket handshake ({cause or exc})"
    return NotWebSocketServerError(
        f"{url} is not a WebSocket server: {said}. Is this the WebSocket port?"
    )


def resolve(target: Any) -> tuple[str, Server | None]:
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
        uri = parse_uri(target)
    except InvalidURI as exc:
        if target.startswith(("http://", "https://")):
            fix = f"WebSocket URLs start with ws:// or wss://: try {'ws' + target[4:]!r}."
        elif "://" not in target:
            fix = f"Add the scheme: try {'ws://' + target!r}."
        else:
            fix = "A WebSocket URL looks like 'ws://127.0.0.1:8765/path'."
        message = f"{target!r} is not a valid WebSocket URL ({exc}). {fix}"
        raise InvalidTargetError(message) from None
    return target, server_at(uri.host, uri.port)
