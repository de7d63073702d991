"""Browser clients: a real ``WebSocket`` in the notebook's page, scripted from a cell.

``alice = await browser(server, name="alice")`` draws a small client under the
cell. Its JavaScript opens a WebSocket from the page to the server, as any web
application's would, and the server records it in its flow under its name, like
any client. Python drives it and reads it back: ``await alice.send(...)``,
``await alice.recv()``, ``await alice.close(code, reason)``, ``alice.state``.

The page does the networking, so the kernel learns what happened by message,
and every wait is bounded (``TIMEOUT``, or ``timeout=``; None waits for ever). A page closed or
reloaded ends the connection with 1001 (going away), and the client with it.
Without a page to draw it (plain Python, nbval), creating one says so in a line
and every wait on it raises :class:`NoFrontEndError` at once.

A page numbers what it tells the kernel (``seq``, from 1 per page) and tells it again
until the kernel acknowledges it: ipykernel handles a widget's message beside a
running cell, but one arriving just as a cell ends waits behind every cell that Run All
queued, while the next cell may be waiting for it. The kernel takes each number once and
in order, holding back one that overtook a missing one, and acknowledges the last it
took (``{"do": "ack", "seq": n}``), which frees the page's copies.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close
from websockets.protocol import State
from websockets.typing import Data

from .. import reports
from ..errors import InvalidArgumentError, WrongTypeError, WSPatternsError
from ..runtime import lifecycle
from ..runtime.client import resolve
from ..runtime.server import Server
from ..settings import DEFAULT, STOP_GRACE, timeout_seconds
from ..waiting import wait_until, within
from .frontends import missing_front_end
from .routes import Route, asked_route, target

if TYPE_CHECKING:
    from .view import BrowserView

_numbers = itertools.count(1)
ACK_DELAY = 0.05  # seconds: one acknowledgement covers what a page said meanwhile
_watched: set[int] = set()  # ids of server connections a browser client already follows


class NoFrontEndError(WSPatternsError, RuntimeError):
    """A browser client was waited on where no page can draw it (plain Python, nbval)."""


class BrowserConnectionError(WSPatternsError, ConnectionError):
    """The page could not open its WebSocket; the message says what it tried and why."""


class BrowserNotOpenError(WSPatternsError, RuntimeError):
    """A browser client was asked to send while its page's WebSocket was not open (yet)."""


class BrowserClient:
    """A WebSocket client living in the notebook's page, driven from Python.

    ``name`` is what the server's flow calls it; ``route`` the way its page took
    (``"direct"`` or ``"proxy"``) and ``url`` where it connected; ``state`` a
    websockets :class:`~websockets.protocol.State`; ``close_code`` and
    ``close_reason`` what ended it, as the browser saw it. ``why`` says why the
    page took its route, or why it failed. ``sent`` and ``received`` count its
    messages; ``connection`` is its number in the server's flow, once open.
    """

    def __init__(
        self, url: str, name: str, route: Route, server: Server | None, asked_by: str = ""
    ) -> None:
        self.name = name
        self.server_url = url
        self.server = server
        self.route = ""
        self.url = ""
        self.why = ""
        self.state = State.CONNECTING
        self.close_code: int | None = None
        self.close_reason = ""
        self.sent = 0
        self.received = 0
        self.connection: int | None = None
        self.no_front_end = missing_front_end()
        self._target = target(url, name, route, asked_by)
        self._view: BrowserView | None = None
        self._page: str | None = None
        self._failure: str | None = None
        self._inbox: deque[Data] = deque()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()  # what _until() waits on; _wake() notifies it
        self._waiting = 0  # how many _until() wait on it
        self._notifying: asyncio.Task[None] | None = None  # _wake()'s notify, not yet run
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._follower: asyncio.Task[None] | None = None
        self._page_closed = asyncio.Event()
        self._taken: dict[str, int] = {}  # per page, the last number taken in order
        self._held: dict[str, dict[int, tuple[dict[str, Any], list[bytes]]]] = {}  # overtakers
        self._to_ack: set[str] = set()  # pages owed an acknowledgement
        self._acking: asyncio.TimerHandle | None = None

    # Waiting on the page

    async def wait_open(self, *, timeout: float | None = DEFAULT) -> None:
        """Wait until the page's WebSocket is open; raise if it failed or took too long."""
        self._check_page()
        limit = timeout_seconds(timeout)
        await self._until(self._settled, limit, lambda: self._late_opening(limit))
        if self._failure is not None:
            raise BrowserConnectionError(f"{self.name} could not connect: {self._failure}")
        if self.state is State.CLOSED and self.connection is None and self._following:
            raise BrowserConnectionError(
                f"{self.name} could not connect: its page's WebSocket closed "
                f"({self.close_code}) before the server saw it."
            )

    def _settled(self) -> bool:
        """Open (and, where the kit can see the server's end, seen there too), or over."""
        if self.state is State.CLOSED or self._failure is not None:
            return True
        # A proxy opens the page's socket before reaching the server: wait for the server.
        return self.state is State.OPEN and (self.connection is not None or not self._following)

    async def send(self, message: str | bytes, *, timeout: float | None = DEFAULT) -> None:
        """Have the page send ``message`` (str: a text frame; bytes: a binary one).

        Returns once the page has handed it to its WebSocket. Raises ConnectionClosed
        if the connection is closed, TimeoutError if the page does not answer in time.
        """
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise WrongTypeError(f"a browser sends str or bytes, not {type(message).__name__}")
        self._check_page()
        if self.state is not State.OPEN:
            self._raise_if_closed()
            raise BrowserNotOpenError(f"{self.name} is not open yet: `await browser(...)` opens it")
        number = next(self._ids)
        ack: asyncio.Future[None] = self._loop.create_future()
        self._acks[number] = ack
        if isinstance(message, str):
            self._tell({"do": "send", "id": number, "text": message})
        else:
            self._tell({"do": "send", "id": number, "binary": True}, [bytes(message)])
        limit = timeout_seconds(timeout)
        try:
            await within(limit, ack, lambda: f"{self.name}'s page did not send within {limit:g} s.")
        finally:
            self._acks.pop(number, None)

    async def recv(self, *, timeout: float | None = DEFAULT) -> Data:
        """The next message the page received (str or bytes), in order.

        Raises ConnectionClosed once the connection is closed and every message
        received before was read (BrowserConnectionError if it never really opened);
        TimeoutError after ``timeout`` seconds (``TIMEOUT`` when left out; None waits for
        ever) if nothing came.
        """
        self._check_page()
        limit = timeout_seconds(timeout)
        await self._until(
            lambda: bool(self._inbox) or self.state is State.CLOSED,
            limit,
            lambda: f"{self.name}'s page received nothing in {limit:g} s (pass timeout=).",
        )
        if self._inbox:
            return self._inbox.popleft()
        raise self._closed()

    def __aiter__(self) -> AsyncIterator[Data]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Data]:
        """Each message, until the connection closes normally (1000, 1001), as websockets does."""
        while True:
            try:
                yield await self.recv(timeout=None)
            except ConnectionClosedOK:
                return

    async def close(
        self, code: int = 1000, reason: str = "", *, timeout: float | None = DEFAULT
    ) -> None:
        """Have the page close its WebSocket with ``code`` and ``reason``, and wait until closed.

        A browser may only close with 1000 or 3000-4999, and a reason of at most 123
        bytes (the WebSocket API refuses the rest); ValueError says so.
        """
        if code != 1000 and not 3000 <= code <= 4999:
            raise InvalidArgumentError(
                f"a browser may close with 1000 or a code from 3000 to 4999, not {code}: "
                "the other codes are the server's or the protocol's to send."
            )
        if len(reason.encode()) > 123:
            raise InvalidArgumentError(
                f"a close reason holds at most 123 bytes; this one has {len(reason.encode())}."
            )
        self._check_page()
        if self.state is State.CLOSED:
            return
        self._tell({"do": "close", "code": code, "reason": reason})
        await self.wait_closed(timeout=timeout)

    async def wait_closed(self, *, timeout: float | None = DEFAULT) -> None:
        """Wait until the connection is closed; TimeoutError after ``timeout`` seconds."""
        self._check_page()
        limit = timeout_seconds(timeout)
        await self._until(
            lambda: self.state is State.CLOSED,
            limit,
            lambda: f"{self.name} was still {self.state.name.lower()} after {limit:g} s.",
        )

    # What the page says

    def hear(self, content: dict[str, Any], buffers: list[bytes]) -> None:
        """Take one message from a page (called by the widget, on any thread).

        A numbered one (``seq``) is taken once, in its page's order: a copy told again
        is dropped, one that overtook a missing one waits for it.
        """
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.hear, content, buffers)
            return
        seq, page = content.get("seq"), str(content.get("page"))
        if not isinstance(seq, int):
            self._handle(content, buffers)
            self._wake()
            return
        self._ack_soon(page)
        held = self._held.setdefault(page, {})
        if seq > self._taken.get(page, 0):
            held[seq] = (content, buffers)
        try:
            while (following := self._taken.get(page, 0) + 1) in held:
                self._taken[page] = following  # taken, even if handling it raises
                self._handle(*held.pop(following))
        finally:
            if not held:
                del self._held[page]
            self._wake()

    def _handle(self, content: dict[str, Any], buffers: list[bytes]) -> None:
        event, page = content.get("event"), content.get("page")
        if event == "hello":
            self._greet(str(page))
        elif page == self._page:
            self._take(str(event), content, buffers)

    def _ack_soon(self, page: str) -> None:
        """Acknowledge to ``page`` what it said, in one message for all said meanwhile."""
        self._to_ack.add(page)
        if self._acking is None:
            self._acking = self._loop.call_later(ACK_DELAY, self._ack)

    def _ack(self) -> None:
        self._acking = None
        pages, self._to_ack = self._to_ack, set()
        for page in pages:
            self._tell({"do": "ack", "page": page, "seq": self._taken.get(page, 0)})

    def _greet(self, page: str) -> None:
        if self._page is None and self.state is State.CONNECTING and self._failure is None:
            self._page = page
            self._tell({"do": "connect", **self._target})
            return
        ended = self.state is State.CLOSED or self._failure is not None
        if ended:
            why = f"{self.name} has ended ({self.close_code}); run its cell again for a new one."
        else:
            why = f"{self.name} is connected from another page."
        self._tell({"do": "stand-by", "page": page, "why": why, "ended": ended})

    def _take(self, event: str, content: dict[str, Any], buffers: list[bytes]) -> None:
        if event == "connecting":
            self.route, self.url, self.why = content["route"], content["url"], content["why"]
        elif event == "open":
            self.state = State.OPEN
            self._follow_server_end()
        elif event == "message":
            self.received += 1
            self._inbox.append(bytes(buffers[0]) if content.get("binary") else content["text"])
        elif event == "sent":
            self.sent += 1  # asked for by the kernel, or typed in the page
            ack = self._acks.get(content.get("id") or 0)
            if ack is not None and not ack.done():
                ack.set_result(None)
        elif event == "refused":
            ack = self._acks.get(content.get("id") or 0)
            if ack is not None and not ack.done():
                ack.set_exception(
                    BrowserNotOpenError(f"{self.name}'s page refused: {content['why']}")
                )
        elif event == "close":
            self._page_closed.set()
            if self.state is State.CLOSED:  # the server's end said it first: the page knows more
                self.why = f"its page saw the connection close with {content['code']}"
            self._end(content["code"], content.get("reason") or "")
        elif event == "failed":
            self._failure = str(content["why"])
            self.route, self.url, self.why = content["route"], content["url"], self._failure
            self._end(1006, "")

    def _end(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        closed = self._closed()
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(closed)
        lifecycle.forget("client", (self.server_url, self.name), self)

    @property
    def _following(self) -> bool:
        """Whether the kit watches the server's end of this client (a kit server, this loop)."""
        return self.server is not None and self.server.loop is self._loop

    def _follow_server_end(self) -> None:
        """Watch the server's end too, so a page that vanished still ends the client."""
        if self.server is not None and self._following:
            self._follower = self._loop.create_task(self._follow(self.server))

    async def _follow(self, server: Server) -> None:
        def found() -> list[Any]:
            return [
                each
                for each in server.connections_of(self.name)
                if each.state is State.OPEN and id(each) not in _watched
            ]

        # Through a proxy, the page's socket opens before the proxy has reached the server.
        try:
            await wait_until(lambda: len(found()) == 1 or self.state is State.CLOSED)
        except TimeoutError:
            return
        if self.state is State.CLOSED:
            return
        [connection] = found()
        recorder = getattr(connection, "recorder", None)
        self.connection = recorder.who.connection if recorder is not None else 0
        _watched.add(id(connection))
        self._wake()
        try:
            await connection.wait_closed()
            try:  # a live page says how it ended, and says it first
                async with asyncio.timeout(STOP_GRACE):
                    await self._page_closed.wait()
            except TimeoutError:
                code, reason = connection.close_code or 1006, connection.close_reason or ""
                self.why = (
                    f"the server saw it end ({code}) and its page said nothing within "
                    f"{STOP_GRACE:g} s: the page was closed or reloaded, or lost its way to "
                    "the kernel (a proxy restarted?)"
                )
                self._end(code, reason)
                self._wake()
                self._tell({"do": "ended", "page": None, "why": f"{self.name} ended: {self.why}."})
        finally:
            _watched.discard(id(connection))

    # Plumbing

    def show(self, display: Callable[[Any], None] | None) -> None:
        """Create the widget, and draw it under the cell if ``display`` is given."""
        from .view import BrowserView  # anywidget and ipywidgets, only when needed

        view = BrowserView(key=secrets.token_hex(8), name=self.name)
        view.on_msg(lambda _widget, content, buffers: self.hear(content, list(buffers or [])))
        self._view = view
        if display is not None:
            display(self)

    def _tell(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        if self._view is not None:
            self._view.send({"page": self._page, **content}, buffers)

    def forget_view(self) -> None:
        """Close the widget (its pages stop drawing it): when a newer client replaces it."""
        if self._view is not None:
            self._view.close()
            self._view = None

    def _check_page(self) -> None:
        if self.no_front_end is not None and self._page is None:
            raise NoFrontEndError(
                f"{self.name} has no page to run in: {self.no_front_end}. Browser clients "
                "run in a notebook open in JupyterLab, Jupyter Notebook or VS Code."
            )

    def _raise_if_closed(self) -> None:
        if self.state is State.CLOSED:
            raise self._closed()

    def _closed(self) -> ConnectionClosed | BrowserConnectionError:
        """What waiting on a closed client raises: how it closed, or why it never connected."""
        if self._failure is not None:
            return BrowserConnectionError(f"{self.name} could not connect: {self._failure}")
        code = self.close_code
        frame = None if code in (None, 1005, 1006) else Close(code, self.close_reason)
        if code in (1000, 1001):
            return ConnectionClosedOK(frame, None)
        return ConnectionClosedError(frame, None)

    def _late_opening(self, limit: float | None) -> str:
        if self._page is None:
            return (
                f"no page drew {self.name} within {limit:g} s: is this notebook open in "
                "JupyterLab, Jupyter Notebook or VS Code, with widgets working?"
            )
        return f"{self.name}'s page tried {self.url or 'to connect'} for {limit:g} s, in vain."

    async def _until(
        self, ready: Callable[[], bool], limit: float | None, message: Callable[[], str]
    ) -> None:
        """Return once ``ready()``, looked at again after each :meth:`_wake`; else, after
        ``limit`` seconds, TimeoutError(message())."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(ready)

        self._waiting += 1
        try:
            await within(limit, wait(), message)
        finally:
            self._waiting -= 1

    def _wake(self) -> None:
        """Have every :meth:`_until` look again, after a change; on the client's loop only
        (hear() goes there), so that no change falls between a look and its wait."""
        if self._waiting and (self._notifying is None or self._notifying.done()):
            # Notifying needs the condition's lock, which only a coroutine can take. One
            # notify not yet run covers every change before it: it wakes whoever waits then.
            self._notifying = self._loop.create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._notifying = None  # a change from here on schedules a notify of its own
            self._changed.notify_all()

    # The kit's registry

    async def retire(self, why: str) -> None:
        if self.state is State.CLOSED or self._page is None:
            self._end(self.close_code or 1000, "")
            return
        self._tell({"do": "close", "code": 1000, "reason": ""})
        try:
            await self.wait_closed(timeout=STOP_GRACE)
        except TimeoutError:
            self._end(1006, "")

    def retire_now(self, why: str) -> None:
        if self._page is not None and self.state is not State.CLOSED:
            self._tell({"do": "close", "code": 1000, "reason": ""})

    # Looking at it

    def __repr__(self) -> str:
        way = f" {self.route}" if self.route else ""
        where = f" {self.url}" if self.url else ""
        return f"<BrowserClient {self.name!r} {self.state.name}{way}{where}>"

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if self._view is not None:
            data = self._view._repr_mimebundle_()
            bundle = dict(data[0]) if isinstance(data, tuple) else dict(data or {})
        bundle["text/plain"] = repr(self)
        return bundle


async def browser(
    target: Server | str,
    *,
    name: str | None = None,
    route: Route | None = None,
    show: bool = True,
    timeout: float | None = DEFAULT,
) -> BrowserClient:
    """Open a WebSocket client in the notebook's page, drawn under the cell.

    ``target`` is a server from :func:`~wspatterns.serve` or a ``ws://`` URL. The
    server records the client under ``name`` (``browser-N`` by default); a newer
    client under the same name replaces it. ``route`` forces how the page reaches
    the server (``"direct"`` or ``"proxy"``; see :mod:`~wspatterns.browsers.routes`).
    ``show=False`` connects without drawing. Returns once the WebSocket is open;
    raises :class:`BrowserConnectionError` saying why if it could not open, TimeoutError
    after ``timeout`` seconds (``TIMEOUT`` when left out; None: never). Where no page can
    draw it, says so and returns it unopened.
    """
    url, server = resolve(target)
    chosen, asked_by = asked_route(route)
    name = name or f"browser-{next(_numbers)}"
    client = BrowserClient(url, name, chosen, server, asked_by)
    key = (url, name)
    old = lifecycle.take("client", key)
    if old is not None:
        await old.retire(f"a newer browser() as {name!r} replaced it")
        if isinstance(old, BrowserClient):
            old.forget_view()
    lifecycle.add("client", key, client)
    shell = reports.ipython()
    if client.no_front_end is not None and getattr(shell, "kernel", None) is None:
        reports.note(f"{name} cannot connect: {client.no_front_end} to run a browser in.")
        return client
    from IPython.display import display

    client.show(display if show else None)
    if client.no_front_end is not None:
        reports.note(f"{name} will not connect: {client.no_front_end}.")
        return client
    await client.wait_open(timeout=timeout)
    return client
