"""A server on an event loop of its own, in a background thread, for clients that block.

A blocking client (``websockets.sync.client``, a third-party library, a plain
function) holds the thread it runs on; a server on that same thread's loop
could never answer it. :func:`serve_in_thread` puts the server elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from websockets.asyncio.server import ServerConnection

from ..errors import KitTimeoutError
from ..flow import Flow
from ..settings import DEFAULT, STOP_GRACE, TIMEOUT, Handler, timeout_seconds
from . import lifecycle
from .handlers import check_handler, name_of
from .loops import call_in_loop, finish_on_loop, run_loop_forever
from .server import STOPPED_BY_YOU, Server


class ThreadServer(Server):
    """A server running on its own event loop in a daemon thread.

    It answers while the calling thread is blocked, so sync clients can use it
    from a notebook cell. ``await server.stop()`` stops it, as any server;
    ``server.stop_blocking()`` does the same from plain code.
    """

    def __init__(
        self, handler: Handler, name: str, host: str, flow: Flow | None = None, quiet: bool = False
    ) -> None:
        super().__init__(handler, name, host, flow, quiet)
        self._thread_loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=run_loop_forever,
            args=(self._thread_loop,),
            name=f"wspatterns server {name}",
            daemon=True,
        )

    @property
    def thread(self) -> threading.Thread:
        """The thread whose event loop runs this server."""
        return self._thread

    @property
    def connections(self) -> set[ServerConnection]:
        if not self.running:
            return set()
        return call_in_loop(self._thread_loop, self._open_connections, TIMEOUT)

    def launch(self, port: int, options: dict[str, Any], timeout: float | None) -> None:
        """Start the thread and the server in it; wait at most ``timeout`` s (None: as long as
        it takes) for it to listen."""
        self._thread.start()
        loop = self._thread_loop
        future = asyncio.run_coroutine_threadsafe(self.start(port, dict(options)), loop)
        try:
            future.result(timeout)
        except BaseException as exc:
            late = isinstance(exc, TimeoutError) and not future.done()  # not start()'s own
            future.cancel()
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout)
            if late:
                raise KitTimeoutError(
                    f"server {self.name!r} did not listen within {timeout:g} s in its thread "
                    "(pass timeout= to wait longer)."
                ) from None
            raise

    async def stop(self, timeout: float = STOP_GRACE) -> None:
        """Stop the server, close its connections, end its thread."""
        await asyncio.to_thread(self.stop_blocking, timeout)

    def stop_blocking(self, timeout: float = STOP_GRACE) -> None:
        """:meth:`stop` from plain code. Blocks at most about three times ``timeout``."""
        self._stop_thread(STOPPED_BY_YOU, timeout)

    async def retire(self, why: str) -> None:
        await asyncio.to_thread(self._stop_thread, why, STOP_GRACE)

    def retire_now(self, why: str) -> None:
        if lifecycle.exiting():
            self.quiet = True
        self._stop_thread(why, 1 if lifecycle.exiting() else STOP_GRACE)

    def _stop_thread(self, why: str, grace: float) -> None:
        if not self._mark_stopped(why):
            return
        loop = self._thread_loop
        if loop.is_closed():
            return
        try:
            with contextlib.suppress(TimeoutError):
                finish_on_loop(loop, self._shutdown(grace), grace * 3, self._close_now)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(grace * 3)


def serve_in_thread(
    handler: Handler,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    flow: Flow | None = None,
    timeout: float | None = DEFAULT,
    quiet: bool = False,
    **options: Any,
) -> ThreadServer:
    """Start a server on its own event loop in a daemon thread; a plain (not async) call.

    Use it when the client cannot await: ``websockets.sync.client``, a
    third-party library, code in a plain function. Same arguments and naming
    rules as :func:`~wspatterns.serve`; stop it with ``await server.stop()`` or,
    from plain code, ``server.stop_blocking()``. Raises TimeoutError if it does not listen
    within ``timeout`` seconds (``TIMEOUT`` when left out; None: never).
    """
    check_handler(handler)
    name = name or name_of(handler)
    why = f"a newer serve_in_thread(...) under the name {name!r} replaced it"
    lifecycle.retire_now("server", name, why)
    server = ThreadServer(handler, name, host, flow, quiet)
    server.launch(port, options, timeout_seconds(timeout))
    lifecycle.add("server", name, server)
    return server
