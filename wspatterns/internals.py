"""Every place the kit leans on something websockets does not document, and why.

Checked against websockets 17.4 (the pin in pyproject.toml is ``<18`` for
these alone). Each function names the attribute it touches; if a new
websockets moves one, this is the only file to change, and the kit's tests
(tests/test_runtime.py, tests/test_flow.py) are what notice.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from types import FrameType

from websockets.asyncio.connection import broadcast as ws_broadcast
from websockets.asyncio.server import Server as WebSocketsServer
from websockets.asyncio.server import ServerConnection
from websockets.client import ClientProtocol
from websockets.extensions import Extension
from websockets.http11 import Response
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

CHECKED_WITH = "17.4"


def after_server_handshake(protocol: ServerProtocol, then: Callable[[Response], None]) -> None:
    """Call ``then(response)`` right after the server protocol queues its handshake response.

    Why: a recorder must be in place before the first frame is parsed, and the
    request (with the client's name) is known only then. ``ServerProtocol.send_response``
    is replaced on this one instance, and the wrapper removes itself.
    """
    send_response = protocol.send_response

    def send_and_then(response: Response) -> None:
        del protocol.send_response
        send_response(response)
        then(response)

    protocol.send_response = send_and_then  # type: ignore[method-assign]  # this instance only


def after_client_handshake(protocol: ClientProtocol, then: Callable[[], None]) -> None:
    """Call ``then()`` right after the client protocol accepted the handshake response.

    Why: frames may follow the response in the same packet, and
    ``ClientProtocol.parse`` goes straight on to them; ``process_response`` is the
    last step before, replaced on this one instance. It raises (and ``then`` is not
    called) if the server refused the handshake.
    """
    process_response = protocol.process_response

    def process_and_then(response: Response) -> None:
        del protocol.process_response
        process_response(response)
        then()

    protocol.process_response = process_and_then  # type: ignore[method-assign]  # this instance only


def put_extension_first(protocol: Protocol, extension: Extension) -> None:
    """Make ``extension`` see every frame first: before compression out, after it in.

    Why: ``Protocol.extensions`` is an attribute websockets sets during the handshake and
    reads for every frame; it has no public way to add one that was not negotiated.
    """
    protocol.extensions = [extension, *protocol.extensions]


def closed_first_by_peer(protocol: Protocol) -> bool | None:
    """True if the peer sent its close frame first, False if we did, None if nobody did.

    Why: ``Protocol.close_rcvd_then_sent`` is the only record of that order.
    """
    return protocol.close_rcvd_then_sent


def undecodable(connection: object) -> UnicodeDecodeError | None:
    """The invalid UTF-8 that made websockets fail ``connection`` with 1007, if that is why.

    Why: websockets' asyncio connection checks a text message's UTF-8 only when
    ``recv()`` or ``recv_streaming()`` decodes it; then it sets
    ``Connection.connection_exc`` to the ``UnicodeDecodeError`` and closes with
    1007, a code a handler may also close with for its own reasons. Nothing public
    tells the two apart, or which message it was: the error's ``object`` is the
    data it could not decode (the whole message for ``recv()``, one frame's for
    ``recv_streaming()``).
    """
    error = getattr(connection, "connection_exc", None)
    return error if isinstance(error, UnicodeDecodeError) else None


def handler_tasks(server: WebSocketsServer) -> set[asyncio.Task[None]]:
    """The tasks running the handlers of ``server`` (``Server.handler_tasks``)."""
    return set(server.handler_tasks)


def status_line_read(exc: BaseException) -> str | None:
    """The status line a server answered in another HTTP than 1.1 (``HTTP/1.0 200 OK``), if
    that is why the opening handshake failed with ``exc``, an ``InvalidMessage``.

    Why: websockets keeps what it read only in the words of the ``ValueError`` it chains,
    ``unsupported protocol; expected HTTP/1.1: HTTP/1.0 200 OK`` in 17.4.
    """
    line = str(exc.__cause__).partition("expected HTTP/1.1: ")[2]
    return line if line.startswith("HTTP/") else None


def served_connections(server: WebSocketsServer) -> set[ServerConnection]:
    """Every connection whose handler has not returned yet, open or not (``all_connections``).

    Why: ``Server.connections`` lists only open ones; waiting for a handler to finish
    after its client left needs the others too.
    """
    return set(server.all_connections)


def stop_listening_now(server: WebSocketsServer) -> None:
    """Close the listening socket and drop every connection, without awaiting anything.

    For when the server's loop cannot run any more (the end of the interpreter).
    """
    server.server.close()
    for connection in served_connections(server):
        connection.transport.abort()
    for task in handler_tasks(server):
        task.cancel()


# Telling a broadcast() pass from other sends, for the recorder (flow/recorder.py)

_BROADCAST = ws_broadcast.__code__


def inside_broadcast(frames: int) -> bool:
    """True if websockets' ``broadcast()`` is among the ``frames`` callers above the caller.

    Why: a frame written by ``broadcast()`` looks like any other to an extension; only
    the stack says where it came from. An extension's ``encode`` is called, in 17.4,
    by ``Frame.serialize``, ``Protocol.send_frame`` and ``Protocol.send_text`` (or
    ``send_binary``), which ``broadcast()`` calls. Called once per ``broadcast()``
    call, not once per delivery: looking up the stack costs about a microsecond.
    """
    frame: FrameType | None = sys._getframe(2)  # the caller's caller
    for _ in range(frames):
        if frame is None:
            return False
        if frame.f_code is _BROADCAST:
            return True
        frame = frame.f_back
    return False


def broadcast_message() -> tuple[bytes, bool] | None:
    """The message a ``broadcast()`` is writing, and whether as text, if it called our caller.

    Why: ``broadcast()`` skips a connection that is not open, or that is in the
    middle of a fragmented message, after reading ``connection.protocol`` and
    nothing else of it; a property in its place (see ``Recording``) sees that
    read, and this finds the message among ``broadcast()``'s local variables
    (``message``, already encoded, and ``send_method``, in 17.4).
    """
    frame = sys._getframe(2)  # the caller's caller
    if frame is None or frame.f_code is not _BROADCAST:
        return None
    names = frame.f_locals
    message = names.get("message")
    if not isinstance(message, bytes | bytearray | memoryview):
        return None
    return bytes(message) if type(message) is not bytes else message, (
        names.get("send_method") == "send_text"
    )
