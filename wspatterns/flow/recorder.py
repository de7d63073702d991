"""The recorder: everything that crosses a connection, in the order it happened.

An :class:`EventLog` is a list of :class:`Event` records with a size cap; the
:class:`~wspatterns.Flow` a learner holds is one, with the views added. Servers
from :func:`wspatterns.serve` and clients from :func:`wspatterns.connect`
record into one.

Recording happens where websockets turns messages into frames: every frame
sent or received passes through the connection's extensions, and a
:class:`Recorder` is one, placed first. That records ``send()``, ``recv()``,
``async for`` and ``broadcast()`` alike (which writes frames without calling
``send()``), and costs the connection nothing else: no method of websockets
is replaced.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple, TypeAlias
from urllib.parse import parse_qsl, urlencode

from websockets.asyncio.connection import Connection
from websockets.extensions import Extension
from websockets.frames import Close, Frame, Opcode
from websockets.typing import ExtensionName

from ..internals import closed_first_by_peer, put_extension_first

#: Bytes of each message kept for previews; the rest is counted, not stored.
HEAD = 48

#: Events a flow keeps unless told otherwise; older ones are dropped and counted.
CAP = 100_000

#: What an event is: a message, the opening handshake, a close frame, the end of
#: the TCP connection, or an exception raised by the handler.
Kind: TypeAlias = Literal["open", "message", "close", "end", "error"]

#: One end of a connection: where an event was recorded, or who sent it.
Side: TypeAlias = Literal["server", "client"]

#: Which end of which connection: ``(connection, server, client, at)``.
Who: TypeAlias = tuple[int, str, str, Side]

# What every record says but its numbers: (kind, who, sender, type).
_Meta: TypeAlias = tuple[Kind, Who, Side | None, str | None]

#: A raw record, as appended on the hot path: ``(time, meta, size, head, index)`` for a
#: message, ``(time, meta, code, detail)`` for anything else (see :attr:`EventLog.events`).
Record: TypeAlias = tuple[int, _Meta, int, bytes, int] | tuple[int, _Meta, int | None, str]


class Event(NamedTuple):
    """One thing that happened on one connection, as seen from one end of it.

    ``kind`` is ``"open"``, ``"message"``, ``"close"`` (a close frame),
    ``"end"`` (the TCP connection is gone) or ``"error"`` (the handler raised).
    ``at`` says which end recorded it (``"server"`` or ``"client"``), ``sender``
    which end sent it (for ``"end"``: which end closed first, None if neither).
    ``index`` counts messages one way on one connection, so a message
    recorded by both ends appears twice with the same ``index``.
    """

    seq: int  # global order within the flow
    time: int  # time.monotonic_ns() when it was recorded
    kind: Kind
    connection: int  # one number per connection in this flow
    server: str  # the server's name
    client: str  # the client's name
    at: Side
    sender: Side | None
    type: str | None  # "text" or "binary" for messages
    size: int  # payload bytes
    head: bytes  # the first HEAD bytes of the payload
    index: int  # type: ignore[assignment]  # hides tuple.index(); event.index is public
    code: int | None  # close code, for close and end
    detail: str  # path (open), reason (close, end), exception (error)


class EventLog:
    """A record of messages between servers and clients, kept in memory.

    At most ``cap`` events are kept; past that the oldest are dropped and
    counted in ``dropped``. Per-connection totals (``totals``) stay exact
    whatever is dropped. Share one flow between several servers and clients
    by passing ``flow=`` to :func:`~wspatterns.serve` and :func:`~wspatterns.connect`.
    """

    def __init__(self, cap: int = CAP, *, token: str | None = None) -> None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise ValueError(f"cap must be a positive number of events; got {cap!r}.")
        self.cap = cap
        # Tells a server its client records here too. A flow in another process
        # given this token numbers the connections of this flow's clients as this
        # flow does (1, 2, …), so that merge() can put both ends side by side; the
        # connections it numbers itself count down from -1, so they never collide.
        self.token = token or secrets.token_hex(4)
        # Raw records, appended on the hot path; flow.events turns them into Events.
        self._records: deque[Record] = deque(maxlen=cap)
        self._connections = itertools.count(1) if token is None else itertools.count(-1, -1)
        self._ends: list[Recorder] = []

    @property
    def events(self) -> list[Event]:
        """A snapshot of the events kept, oldest first, numbered in the order they happened."""
        records = list(self._records)
        first = self.recorded - len(records)
        events = []
        for number, record in enumerate(records, first):
            if len(record) == 5:  # a message: (time, meta, size, head, index)
                time, (kind, who, sender, type), size, head, index = record
                code, detail = None, ""
            else:  # anything else: (time, meta, code, detail)
                time, (kind, who, sender, type), code, detail = record
                size, head, index = 0, b"", 0
            events.append(
                Event(number, time, kind, *who, sender, type, size, head, index, code, detail)
            )
        return events

    @property
    def recorded(self) -> int:
        """How many events were ever recorded, kept or not."""
        return sum(end.events for end in self._ends)

    @property
    def dropped(self) -> int:
        """How many events were recorded but are no longer kept, past the cap."""
        return self.recorded - len(self._records)

    @property
    def totals(self) -> list[Recorder]:
        """Each end of each connection, with exact counts whatever was dropped."""
        return list(self._ends)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def clear(self) -> None:
        """Forget every event and total; connection numbers keep counting."""
        self._records.clear()
        for end in self._ends:
            end.reset()

    def new_connection(self) -> int:
        return next(self._connections)

    def load(self, records: list[Record], next_connection: int) -> None:
        """Append raw records made by :meth:`Recorder` elsewhere (a merge); number on from there."""
        self._records.extend(records)
        self._connections = itertools.count(next_connection)

    def export(self) -> dict[str, Any]:
        """What this flow holds, as plain JSON-ready data, to merge in another process."""
        return {
            "token": self.token,
            "events": [_plain(event) for event in self.events],
            "ends": [[*end.who, end.sent, end.received, end.others] for end in self._ends],
        }

    def end(self, connection: int, server: str, client: str, at: Side) -> Recorder:
        """A recorder for one end (``at``) of a connection, recording into this flow."""
        recorder = Recorder(self, (connection, server, client, at))
        self._ends.append(recorder)
        return recorder

    def __repr__(self) -> str:
        connections = len({end.who[0] for end in self._ends})
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        return f"<Flow: {len(self)} events on {connections} connections{dropped}>"


def _plain(event: Event) -> list[Any]:
    """An event as JSON can carry it: the head's bytes as a latin-1 string."""
    return [*event[:10], event.head.decode("latin-1"), *event[11:]]


class Recorder(Extension):
    """One end of one connection, recording the frames it sends and receives into a flow.

    websockets passes every frame through a connection's extensions, on the
    way out (``encode``) and on the way in (``decode``); the kit puts a
    recorder first among them once the opening handshake succeeds, so it sees
    messages before compression and after decompression, including those that
    ``broadcast()`` writes without calling ``send()``. It changes no frame.
    Its counts (``sent``, ``received``, ``others``) stay exact past the cap.
    """

    name = ExtensionName("x-wspatterns-recorder")  # never negotiated: the kit adds it itself

    __slots__ = (
        "flow", "who", "sent", "received", "others", "partial", "installed",
        "us", "them", "_append", "_out", "_in",
    )  # fmt: skip

    def __init__(self, flow: EventLog, who: Who) -> None:
        self.flow = flow
        self.who = who  # (connection, server, client, at)
        self.reset()
        self.installed = False
        self._append = flow._records.append
        us: Side
        them: Side
        us, them = ("server", "client") if who[3] == "server" else ("client", "server")
        self.us, self.them = us, them
        # What every record of a whole message says but its time, size, head and index,
        # looked up by "is it text?": records share these tuples instead of building their own.
        self._out: tuple[_Meta, _Meta] = (
            ("message", who, us, "binary"),
            ("message", who, us, "text"),
        )
        self._in: tuple[_Meta, _Meta] = (
            ("message", who, them, "binary"),
            ("message", who, them, "text"),
        )

    def reset(self) -> None:
        self.sent = 0  # messages sent by this end
        self.received = 0  # messages received by this end
        self.others = 0  # events that are not messages: open, close, end, error
        self.partial: dict[str, list[Any]] = {}  # a fragmented message under way, by sender

    @property
    def events(self) -> int:
        """How many events this end recorded, kept or not."""
        return self.sent + self.received + self.others

    def install(self, protocol: Any) -> None:
        """Record ``protocol``'s frames from now on; call it once its handshake succeeded."""
        put_extension_first(protocol, self)
        self.installed = True

    # The two hooks keep the common case (a whole text or binary message) short:
    # one tuple appended, everything else left for the views to work out.

    def encode(self, frame: Frame) -> Frame:
        opcode = frame.opcode
        if frame.fin and (opcode is _TEXT or opcode is _BINARY):
            data = frame.data
            index = self.sent
            self.sent = index + 1
            head = data[:HEAD]  # the same object when the message is short
            if type(head) is not bytes:
                head = bytes(head)
            self._append((_clock(), self._out[opcode is _TEXT], len(data), head, index))
        else:
            self._saw(frame, self.us)
        return frame

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        opcode = frame.opcode
        if frame.fin and (opcode is _TEXT or opcode is _BINARY):
            data = frame.data
            index = self.received
            self.received = index + 1
            head = data[:HEAD]
            if type(head) is not bytes:
                head = bytes(head)
            self._append((_clock(), self._in[opcode is _TEXT], len(data), head, index))
        else:
            self._saw(frame, self.them)
        return frame

    # Everything but whole messages: rarer, so written for reading, not for speed.

    def add(
        self, kind: Kind, sender: Side | None = None, code: int | None = None, detail: str = ""
    ) -> None:
        """Record an event that is not a message: open, close, end or error."""
        self.others += 1
        self._append((_clock(), (kind, self.who, sender, None), code, detail))

    def _saw(self, frame: Frame, sender: Side) -> None:
        """Record fragments (as one message, once whole) and close frames."""
        opcode = frame.opcode
        if opcode is Opcode.CONT:
            partial = self.partial.get(sender)
            if partial is None:
                return
            partial[1] += len(frame.data)
            if len(partial[2]) < HEAD:
                partial[2] += bytes(frame.data[: HEAD - len(partial[2])])
            if frame.fin:
                del self.partial[sender]
                self._message(sender, *partial)
        elif opcode is _TEXT or opcode is _BINARY:
            kind = "text" if opcode is _TEXT else "binary"
            self.partial[sender] = [kind, len(frame.data), bytes(frame.data[:HEAD])]
        elif opcode is Opcode.CLOSE:
            try:
                close = Close.parse(frame.data)
            except Exception:  # a malformed close frame is still worth showing
                close = Close(1002, "malformed close frame")
            self.add("close", sender, code=close.code, detail=close.reason)

    def message(self, sender: Side, text: str) -> None:
        """Record a whole text message that crossed no WebSocket (a hub's words with Redis)."""
        data = text.encode()
        self._message(sender, "text", len(data), data[:HEAD])

    def _message(self, sender: Side, kind: str, size: int, head: bytes) -> None:
        if sender == self.us:
            index = self.sent
            self.sent += 1
        else:
            index = self.received
            self.received += 1
        self._append((_clock(), ("message", self.who, sender, kind), size, head, index))

    def __repr__(self) -> str:
        connection, server, client, at = self.who
        return f"<Recorder {client}↔{server} at {at}: sent {self.sent}, received {self.received}>"


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


_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY  # compared by identity: hashing enums is slow
_clock = time.monotonic_ns


class Recording(Connection):
    """Mixed into a websockets connection: what it records, and the events only it sees.

    The connection calls :meth:`start_recording` when it knows its names,
    then installs ``self.recorder`` on its protocol once the handshake
    succeeds (see :meth:`Recorder.install`); :meth:`record_open`,
    :meth:`record_error` and the end of the connection are recorded here.
    """

    recorder: Recorder | None = None

    @property
    def flow(self) -> EventLog | None:
        return None if self.recorder is None else self.recorder.flow

    def start_recording(
        self, flow: EventLog, connection: int, server: str, client: str, at: Side
    ) -> None:
        self.recorder = flow.end(connection, server, client, at)

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
