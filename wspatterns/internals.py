"""Every place the kit leans on something websockets does not document, and why.

Checked against websockets 17.4 (:data:`CHECKED_WITH`; the pin in pyproject.toml is
``<18`` for these alone). Each function names what it needs; if a new websockets moves
one, this is the only file to change, and the kit's tests (tests/test_runtime.py,
tests/test_flow.py, tests/test_broadcast.py) are what notice. There are two kinds:

* What the kit cannot do without: the handshake hooks, the extension list, the server's
  handler tasks... Without them nothing is recorded, so they are always used; a websockets
  that moved one breaks recording outright (an ``AttributeError``, or no event at all),
  which the tests show at once.
* What tells ``broadcast()`` apart from other sends: the stack (its code object and its
  local variables) and a connection's class swapped while ``broadcast()`` would skip it.
  A reworked ``broadcast()`` would make these quietly wrong, not fail; so they are used
  only with a websockets they were checked with (:data:`BROADCAST_INTERNALS`). Without
  them each delivery of a ``broadcast()`` is recorded as a message of its own, and the
  connections it skips are not recorded; everything else is recorded as usual.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.connection import Connection
from websockets.asyncio.connection import broadcast as ws_broadcast
from websockets.asyncio.server import Server as WebSocketsServer
from websockets.asyncio.server import ServerConnection
from websockets.client import ClientProtocol
from websockets.extensions import Extension
from websockets.http11 import Response
from websockets.protocol import CLOSING, OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.version import version as INSTALLED

from .errors import InvalidArgumentError

#: The websockets releases (major.minor) the internals below were checked with.
CHECKED_WITH = ("17.4",)

#: ``off`` does without the internals that can be done without, as on a websockets not in
#: :data:`CHECKED_WITH`; ``on`` uses them whatever the version (to try a new websockets).
SWITCH = "WSPATTERNS_INTERNALS"

#: What the kit does without them.
WITHOUT = (
    "broadcast() is recorded as one message on each connection it writes to, "
    "and the connections it skips are not recorded"
)


class UncheckedWebsocketsWarning(UserWarning):
    """The kit does without what it could only read from websockets' internals."""


def why_off(installed: str, switch: str) -> str | None:
    """Why the kit does without :data:`BROADCAST_INTERNALS` with websockets ``installed`` and
    ``switch`` the value of :data:`SWITCH` (empty if unset), or None if it uses them.

    Raises :class:`~wspatterns.errors.InvalidArgumentError` for a switch other than on or off.
    """
    if switch not in ("", "on", "off"):
        raise InvalidArgumentError(f"{SWITCH}={switch!r}: it must be on, off, or unset.")
    release = re.match(r"\d+\.\d+", installed)
    if switch == "off":
        return f"{SWITCH}=off (websockets {installed})"
    if switch == "" and (release is None or release.group() not in CHECKED_WITH):
        checked = ", ".join(CHECKED_WITH)
        return f"websockets {installed} is not a version the kit was checked with ({checked})"
    return None


_OFF = why_off(INSTALLED, os.environ.get(SWITCH, ""))

#: True when the kit reads ``broadcast()``'s stack and swaps classes to record each
#: ``broadcast()`` as one, with the connections it skips; decided once, at import.
BROADCAST_INTERNALS = _OFF is None

if _OFF is not None:  # said once, on one line: what the learner will not see, and why
    warnings.warn_explicit(f"{_OFF}: {WITHOUT}.", UncheckedWebsocketsWarning, "wspatterns", 0)


# Always used: what the kit cannot do without


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


def receiving(connection: Connection) -> bool | None:
    """True if a ``recv()`` (or ``async for``) of ``connection`` waits for a message now,
    False if none does, None if this websockets does not say.

    Why: the kit's wait hint must not speak of a ``recv()`` given up on (an
    ``asyncio.timeout()`` around it) while its task goes on awaiting something else;
    websockets knows it only as ``Assembler.get_in_progress`` on ``recv_messages``. If a
    release moves it, the hint goes on without it (None), and may then speak of such a wait.
    """
    receiving = getattr(getattr(connection, "recv_messages", None), "get_in_progress", None)
    return receiving if isinstance(receiving, bool) else None


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


# Telling broadcast() apart from other sends: only when BROADCAST_INTERNALS is on

_BROADCAST = ws_broadcast.__code__

# In 17.4 an extension's encode() is called 4 calls below broadcast() (by Frame.serialize,
# Protocol.send_frame, Protocol.send_text or send_binary, which broadcast() calls). The
# kit's own functions in between take the rest; the bound keeps a send() from a deep stack
# from walking all of it.
_BELOW_BROADCAST = 8


def written_by_broadcast() -> bool:
    """True if ``broadcast()`` is writing the frame an extension is encoding, when called
    from its ``encode`` or a function that ``encode`` calls; always False when
    :data:`BROADCAST_INTERNALS` is off.

    Why: a frame written by ``broadcast()`` looks like any other to an extension; only the
    stack says where it came from. Worth calling once per ``broadcast()``, not once per
    delivery: looking up the stack costs about a microsecond.
    """
    if not BROADCAST_INTERNALS:
        return False
    frame = sys._getframe(1)
    for _ in range(_BELOW_BROADCAST):
        if frame.f_code is _BROADCAST:
            return True
        if frame.f_back is None:
            return False
        frame = frame.f_back
    return False


def watch_broadcast_skips(connection: Connection) -> None:
    """Call ``connection.broadcast_skipped(why, message, text)`` each time ``broadcast()``
    passes over ``connection``, until it is open again with no fragmented message under way.

    ``why`` is "closing", "closed" or "sending a fragmented message"; ``message`` the bytes
    ``broadcast()`` writes to the others, ``text`` whether as text. Does nothing when
    :data:`BROADCAST_INTERNALS` is off. Call it when the connection is about to be one
    ``broadcast()`` skips: it costs every read of ``connection.protocol`` until then.

    Why: ``broadcast()`` skips such a connection after reading its ``protocol`` attribute
    and, for a fragmented message, ``send_in_progress``: nothing public tells. So the
    connection's class is swapped for a subclass where ``protocol`` is a property, which
    finds the message among the local variables of a ``broadcast()`` reading it
    (``message``, already encoded, and ``send_method``, in 17.4), and swaps the class back
    once the connection is open again.
    """
    cls = type(connection)
    if BROADCAST_INTERNALS and not issubclass(cls, _Watched):
        connection.__class__ = _watched(cls)


class _Watched(Connection):
    """Put in front of a connection's class while ``broadcast()`` would skip it."""

    if TYPE_CHECKING:  # the connection's own class defines it

        def broadcast_skipped(self, why: str, message: bytes, text: bool) -> None: ...

    @property  # the attribute websockets sets, read through
    def protocol(self) -> Any:
        protocol = self.__dict__["protocol"]
        state = protocol.state
        if state is OPEN and self.send_in_progress is None:
            self.__class__ = self.__class__.__bases__[1]  # open again: back to its own class
            return protocol
        reader = sys._getframe(1)
        if reader.f_code is _BROADCAST:
            names = reader.f_locals
            message = names.get("message")
            if isinstance(message, bytes | bytearray | memoryview):
                if state is not OPEN:
                    why = "closing" if state is CLOSING else "closed"
                else:
                    why = "sending a fragmented message"
                text = names.get("send_method") == "send_text"
                self.broadcast_skipped(why, _as_bytes(message), text)
        return protocol

    @protocol.setter
    def protocol(self, protocol: Any) -> None:
        self.__dict__["protocol"] = protocol


def _as_bytes(message: bytes | bytearray | memoryview) -> bytes:
    return message if type(message) is bytes else bytes(message)


_WATCHED: dict[type, type] = {}


def _watched(cls: type) -> type:
    """``cls`` with :class:`_Watched`'s ``protocol`` property in front (made once per class)."""
    watched = _WATCHED.get(cls)
    if watched is None:
        namespace = {"__module__": cls.__module__}
        watched = _WATCHED[cls] = type(cls.__name__, (_Watched, cls), namespace)
    return watched
