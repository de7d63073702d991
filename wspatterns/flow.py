"""The recorder: everything that crosses a connection, in the order it happened.

A :class:`Flow` is a list of :class:`Event` records with a size cap. Servers
from :func:`wspatterns.serve` and clients from :func:`wspatterns.connect`
record into one; a learner reads it back through the views (``flow.sequence()``
and friends, drawn by :mod:`wspatterns.views`).

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
from typing import TYPE_CHECKING, Any, NamedTuple

from websockets.extensions import Extension
from websockets.frames import Close, Frame, Opcode
from websockets.typing import ExtensionName

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

#: Bytes of each message kept for previews; the rest is counted, not stored.
HEAD = 48

#: Events a flow keeps unless told otherwise; older ones are dropped and counted.
CAP = 100_000


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
    kind: str
    connection: int  # one number per connection in this flow
    server: str  # the server's name
    client: str  # the client's name
    at: str
    sender: str | None
    type: str | None  # "text" or "binary" for messages
    size: int  # payload bytes
    head: bytes  # the first HEAD bytes of the payload
    index: int
    code: int | None  # close code, for close and end
    detail: str  # path (open), reason (close, end), exception (error)


class Flow:
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
        self._records: deque[tuple] = deque(maxlen=cap)
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

    def __iter__(self):
        return iter(self.events)

    def clear(self) -> None:
        """Forget every event and total; connection numbers keep counting."""
        self._records.clear()
        for end in self._ends:
            end.reset()

    def new_connection(self) -> int:
        return next(self._connections)

    def export(self) -> dict[str, Any]:
        """What this flow holds, as plain JSON-ready data, for :func:`merge` in another process."""
        return {
            "token": self.token,
            "events": [_plain(event) for event in self.events],
            "ends": [[*end.who, end.sent, end.received, end.others] for end in self._ends],
        }

    def end(self, connection: int, server: str, client: str, at: str) -> Recorder:
        """A recorder for one end (``at``) of a connection, recording into this flow."""
        recorder = Recorder(self, (connection, server, client, at))
        self._ends.append(recorder)
        return recorder

    def __repr__(self) -> str:
        connections = len({end.who[0] for end in self._ends})
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        return f"<Flow: {len(self)} events on {connections} connections{dropped}>"

    # The pictures. They live in wspatterns.views; these are shortcuts.

    def sequence(self, **options: Any):
        """A sequence diagram: Mermaid in JupyterLab, SVG elsewhere, text as a last resort."""
        from . import views

        return views.sequence(self, **options)

    def timeline(self, **options: Any) -> Figure:
        """A matplotlib swimlane plot over time, sent→received pairs joined."""
        from . import views

        return views.timeline(self, **options)

    def table(self) -> pandas.DataFrame:
        """The events as a pandas DataFrame, one row per event."""
        from . import views

        return views.table(self)

    def stats(self) -> pandas.DataFrame:
        """Per connection: messages and bytes each way, rate, and latency percentiles."""
        from . import views

        return views.stats(self)

    def live(self, **options: Any):
        """A view that keeps itself up to date while messages flow (in a notebook)."""
        from . import views

        return views.live(self, **options)


def merge(first: Flow | dict[str, Any], *others: Flow | dict[str, Any]) -> Flow:
    """One flow holding the events of several, in the order they happened.

    Each argument is a :class:`Flow` or what :meth:`Flow.export` made of one,
    in this process or another (worker processes send theirs). The first keeps
    its connection numbers; the others' connections are numbered after it,
    except those both ends of which were recorded (a client here, its server in
    a worker given this flow's token): they become one connection again, named
    after the server that served it. Times are ``time.monotonic_ns()``, which
    processes of one machine share. The result is a new flow, a snapshot.
    """
    parts = [part if isinstance(part, dict) else part.export() for part in (first, *others)]
    token = parts[0]["token"]

    def kept(part: int, connection: int) -> bool:
        """The first flow's number: its own connections, and the server ends of its clients'."""
        return part == 0 or (parts[part]["token"] == token and connection > 0)

    taken = {
        connection
        for index, part in enumerate(parts)
        for connection in _connections_in(part)
        if kept(index, connection)
    }
    fresh = (number for number in itertools.count(1) if number not in taken)
    renumbered: dict[tuple[int, int], int] = {}

    def number(part: int, connection: int) -> int:
        if kept(part, connection):
            return connection
        if (part, connection) not in renumbered:
            renumbered[part, connection] = next(fresh)
        return renumbered[part, connection]

    served_by = {
        number(index, end[0]): end[1]
        for index, part in enumerate(parts)
        for end in part["ends"]
        if end[3] == "server"
    }
    merged = Flow(max(CAP, sum(len(part["events"]) for part in parts)), token=token)
    records = []
    for index, part in enumerate(parts):
        for connection, server, client, at, sent, received, others in part["ends"]:
            connection = number(index, connection)
            end = merged.end(connection, served_by.get(connection, server), client, at)
            end.sent, end.received, end.others, end.installed = sent, received, others, True
        for event in part["events"]:
            _, time_ns, kind, connection, server, client, at, sender, type_ = event[:9]
            size, head, count, code, detail = event[9:]
            connection = number(index, connection)
            who = (connection, served_by.get(connection, server), client, at)
            meta = (kind, who, sender, type_)
            if kind == "message":
                records.append((time_ns, meta, size, head.encode("latin-1"), count))
            else:
                records.append((time_ns, meta, code, detail))
    records.sort(key=lambda record: record[0])  # stable: one end's order is kept on ties
    merged._records.extend(records)
    merged._connections = itertools.count(max(taken | set(renumbered.values()), default=0) + 1)
    return merged


def _connections_in(part: dict[str, Any]) -> set[int]:
    return {end[0] for end in part["ends"]} | {event[3] for event in part["events"]}


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
        "_append", "_us", "_them", "_out", "_in",
    )  # fmt: skip

    def __init__(self, flow: Flow, who: tuple[int, str, str, str]) -> None:
        self.flow = flow
        self.who = who  # (connection, server, client, at)
        self.reset()
        self.installed = False
        self._append = flow._records.append
        us, them = ("server", "client") if who[3] == "server" else ("client", "server")
        self._us, self._them = us, them
        # What every record of a whole message says but its time, size, head and index,
        # looked up by "is it text?": records share these tuples instead of building their own.
        self._out = (("message", who, us, "binary"), ("message", who, us, "text"))
        self._in = (("message", who, them, "binary"), ("message", who, them, "text"))

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
        protocol.extensions = [self, *protocol.extensions]
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
            self._saw(frame, self._us)
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
            self._saw(frame, self._them)
        return frame

    # Everything but whole messages: rarer, so written for reading, not for speed.

    def add(self, kind: str, sender: str | None = None, code=None, detail="") -> None:
        """Record an event that is not a message: open, close, end or error."""
        self.others += 1
        self._append((_clock(), (kind, self.who, sender, None), code, detail))

    def _saw(self, frame: Frame, sender: str) -> None:
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

    def message(self, sender: str, text: str) -> None:
        """Record a whole text message that crossed no WebSocket (a hub's words with Redis)."""
        data = text.encode()
        self._message(sender, "text", len(data), data[:HEAD])

    def _message(self, sender: str, kind: str, size: int, head: bytes) -> None:
        if sender == self._us:
            index = self.sent
            self.sent += 1
        else:
            index = self.received
            self.received += 1
        self._append((_clock(), ("message", self.who, sender, kind), size, head, index))

    def __repr__(self) -> str:
        connection, server, client, at = self.who
        return f"<Recorder {client}↔{server} at {at}: sent {self.sent}, received {self.received}>"


_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY  # compared by identity: hashing enums is slow
_clock = time.monotonic_ns


class Recording:
    """Mixed into a websockets connection: what it records, and the events only it sees.

    The connection calls :meth:`start_recording` when it knows its names,
    then installs ``self.recorder`` on its protocol once the handshake
    succeeds (see :meth:`Recorder.install`); :meth:`record_open`,
    :meth:`record_error` and the end of the connection are recorded here.
    """

    recorder: Recorder | None = None

    @property
    def flow(self) -> Flow | None:
        return None if self.recorder is None else self.recorder.flow

    def start_recording(self, flow: Flow, connection: int, server: str, client: str, at: str):
        self.recorder = flow.end(connection, server, client, at)

    def record_open(self, path: str) -> None:
        """The handshake succeeded: record the opening, and every frame from now on."""
        recorder = self.recorder
        if recorder is not None and not recorder.installed:
            recorder.add("open", detail=path)
            recorder.install(self.protocol)

    def record_error(self, exc: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.add("error", self.recorder._us, detail=f"{type(exc).__name__}: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        recorder = self.recorder
        if recorder is not None and recorder.installed:
            protocol = self.protocol
            if protocol.close_rcvd_then_sent is None:
                first = None  # no closing handshake: the connection was lost
            else:
                first = recorder._them if protocol.close_rcvd_then_sent else recorder._us
            recorder.add("end", first, code=protocol.close_code, detail=protocol.close_reason or "")
