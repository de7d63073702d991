"""What a kit connection adds to websockets': it records, and it shows ``broadcast()`` skipping it.

:class:`Recording` is mixed into the kit's server and client connections
(``runtime/server.py``, ``runtime/client.py``); the frames themselves are
recorded by its :class:`~wspatterns.flow.recorder.Recorder`.
"""

from __future__ import annotations

import weakref
from urllib.parse import parse_qsl, urlencode

from websockets.asyncio.connection import Connection

from ..internals import closed_first_by_peer, watch_broadcast_skips
from .events import Side
from .log import EventLog
from .recorder import Recorder, ServerRecorder

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
    fragmented message, without a word. A server connection about to be one of
    those (its recorder saw a close frame, or the first fragment of a message it
    sends; or it was lost) watches for that (:meth:`watch_for_skips`), which takes
    websockets' internals: see :func:`wspatterns.internals.watch_broadcast_skips`.
    """

    recorder: Recorder | None = None
    flow: EventLog | None = None  # the flow it records into

    def start_recording(
        self, flow: EventLog, connection: int, server: str, client: str, at: Side
    ) -> None:
        self.flow = flow
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
        """From now on, record each ``broadcast()`` that passes over this connection (unless
        :data:`wspatterns.internals.BROADCAST_INTERNALS` is off)."""
        watch_broadcast_skips(self)

    def broadcast_skipped(self, why: str, message: bytes, text: bool) -> None:
        """``broadcast()``, writing ``message`` (``text`` or not), passed over this
        connection, ``why`` ("closing", "closed", "sending a fragmented message")."""
        if isinstance(self.recorder, ServerRecorder):
            self.recorder.skipped(why, message, text)
