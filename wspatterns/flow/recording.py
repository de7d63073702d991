"""What a kit connection adds to websockets': it records, and it shows ``broadcast()`` skipping it.

:class:`Recording` is mixed into the kit's server and client connections
(``runtime/server.py``, ``runtime/client.py``); the frames themselves are
recorded by its :class:`~wspatterns.flow.recorder.Recorder`.
"""

from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import parse_qsl, urlencode

from websockets.asyncio.connection import Connection
from websockets.protocol import CLOSING, OPEN

from ..internals import broadcast_message, closed_first_by_peer
from .events import Side
from .recorder import EventLog, Recorder, ServerRecorder

#: Query parameters whose values a flow never keeps: the path of each opening is shown.
SECRET_PARAMETERS = frozenset({"token", "password", "secret", "key", "access_token"})


def without_secrets(path: str) -> str:
    """``path`` with the value of each secret-looking query parameter replaced by ``***``."""
    base, mark, query = path.partition("?")
    if not mark:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    hidden = [(key, "***" if key.lower() in SECRET_PARAMETERS else value) for key, value in pairs]
    return f"{base}?{urlencode(hidden, safe='*')}"


class Recording(Connection):
    """Mixed into a websockets connection: what it records, and the events only it sees.

    The connection calls :meth:`start_recording` when it knows its names,
    then installs ``self.recorder`` on its protocol once the handshake
    succeeds (see :meth:`Recorder.install`); :meth:`record_open`,
    :meth:`record_error` and the end of the connection are recorded here.

    ``broadcast()`` skips a connection that is not open, or that is sending a
    fragmented message, having read its ``protocol`` attribute and nothing else.
    So a server connection about to be one of those (its recorder saw a close
    frame, or the first fragment of a message it sends; or it was lost) swaps
    its class for a subclass where ``protocol`` is a property, which records a
    skip when ``broadcast()`` is the one reading it. The subclass goes away by
    itself once the connection is open again with no fragmented message under way.
    """

    recorder: Recorder | None = None

    @property
    def flow(self) -> EventLog | None:
        return None if self.recorder is None else self.recorder.flow

    def start_recording(
        self, flow: EventLog, connection: int, server: str, client: str, at: Side
    ) -> None:
        self.recorder = flow.end(connection, server, client, at)
        self.recorder.connection = weakref.ref(self)

    def record_open(self, path: str) -> None:
        """The handshake succeeded: record the opening, and every frame from now on."""
        recorder = self.recorder
        if recorder is not None and not recorder.installed:
            recorder.add("open", detail=without_secrets(path))
            recorder.install(self.protocol)

    def record_error(self, exc: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.add("error", self.recorder.us, detail=f"{type(exc).__name__}: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        recorder = self.recorder
        if recorder is not None and recorder.installed:
            protocol = self.protocol
            by_peer = closed_first_by_peer(protocol)
            if by_peer is None:
                first = None  # no closing handshake: the connection was lost
            else:
                first = recorder.them if by_peer else recorder.us
            recorder.add("end", first, code=protocol.close_code, detail=protocol.close_reason or "")
            recorder.leaving_open()
        elif recorder is not None:  # a client whose handshake failed
            recorder.gone()

    def watch_for_skips(self) -> None:
        """From now on, record each ``broadcast()`` that passes over this connection."""
        cls = type(self)
        if not issubclass(cls, _Watched):
            self.__class__ = _watched(cls)


class _Watched(Recording):
    """The class a :class:`Recording` connection takes while ``broadcast()`` would skip it."""

    @property  # the attribute websockets sets, read through
    def protocol(self) -> Any:
        protocol = self.__dict__["protocol"]
        passing = broadcast_message()
        state = protocol.state
        if state is OPEN and self.send_in_progress is None:
            self.__class__ = self.__class__.__bases__[1]  # open again: back to the plain class
        elif passing is not None and isinstance(self.recorder, ServerRecorder):
            if state is not OPEN:
                why = "closing" if state is CLOSING else "closed"
            else:
                why = "sending a fragmented message"
            self.recorder.skipped(why, *passing)
        return protocol

    @protocol.setter
    def protocol(self, protocol: Any) -> None:
        self.__dict__["protocol"] = protocol


_WATCHED: dict[type, type] = {}


def _watched(cls: type) -> type:
    """``cls`` with :class:`_Watched`'s ``protocol`` property in front (made once per class)."""
    watched = _WATCHED.get(cls)
    if watched is None:
        namespace = {"__module__": cls.__module__}
        watched = _WATCHED[cls] = type(cls.__name__, (_Watched, cls), namespace)
    return watched
