"""The recorder: everything that crosses a connection, in the order it happened.

A :class:`Flow` is a list of :class:`Event` records with a size cap. Servers
from :func:`wspatterns.serve` and clients from :func:`wspatterns.connect`
record into one; a learner reads it back through the views (``flow.sequence()``
and friends, drawn by :mod:`wspatterns.views`).

Recording happens where websockets turns messages into frames: every frame
sent goes through ``protocol.send_frame`` and every frame received reaches
``connection.process_event``. Catching both there records ``send()``,
``recv()``, ``async for`` and ``broadcast()`` alike, which writes frames
without calling ``send()``.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from websockets.frames import Close, Frame, Opcode

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

    def __init__(self, cap: int = CAP) -> None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise ValueError(f"cap must be a positive number of events; got {cap!r}.")
        self.cap = cap
        self.token = secrets.token_hex(4)  # tells a server its client records here too
        # Raw records, appended on the hot path; flow.events turns them into Events.
        self._records: deque[tuple] = deque(maxlen=cap)
        self._connections = itertools.count(1)
        self._ends: list[Totals] = []

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
    def totals(self) -> list[Totals]:
        """Exact counts for each end of each connection, whatever was dropped."""
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

    def end(self, connection: int, server: str, client: str, at: str) -> Totals:
        """Start recording one end of a connection; returns its running totals."""
        totals = Totals((connection, server, client, at))
        self._ends.append(totals)
        return totals

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


_DATA = {Opcode.TEXT: "text", Opcode.BINARY: "binary"}  # for the slow path only


class Totals:
    """Running counts of messages for one end of one connection, exact past the cap.

    (Bytes are not counted here: adding them up on every message would cost
    more than it tells; the views add up the bytes of the events kept.)
    """

    __slots__ = ("who", "sent", "received", "others")

    def __init__(self, who: tuple[int, str, str, str]) -> None:
        self.who = who  # (connection, server, client, at)
        self.reset()

    def reset(self) -> None:
        self.sent = [0]  # messages sent by this end
        self.received = [0]  # messages received by this end
        self.others = 0  # events that are not messages: open, close, end, error

    @property
    def events(self) -> int:
        return self.sent[0] + self.received[0] + self.others

    def __repr__(self) -> str:
        connection, server, client, at = self.who
        return (
            f"<Totals {client}↔{server} at {at}: sent {self.sent[0]}, received {self.received[0]}>"
        )


class Recording:
    """Mixed into a websockets connection: records its frames into a :class:`Flow`.

    :meth:`start_recording` hooks the two places every frame passes: the
    protocol's ``send_frame`` (out) and ``events_received`` (in). Recording a
    message then costs one tuple appended to a deque; turning records into
    events waits until a view asks.
    """

    flow: Flow | None = None

    def start_recording(self, flow: Flow, connection: int, server: str, client: str, at: str):
        self.flow = flow
        self._totals = totals = flow.end(connection, server, client, at)
        self._who = who = totals.who
        self._us, self._them = us, them = (
            ("server", "client") if at == "server" else ("client", "server")
        )
        self._partial: dict[str, list[Any]] = {}  # a fragmented message, by sender
        self._opened = False
        self._append = append = flow._records.append
        sent, received = totals.sent, totals.received
        protocol = self.protocol
        send_frame, events_received = protocol.send_frame, protocol.events_received
        clock, frame_type, saw = time.monotonic_ns, Frame, self._saw
        text, binary = Opcode.TEXT, Opcode.BINARY  # compared by identity: hashing enums is slow
        # What every record of a whole message says but its time, size, head and index.
        out_text, out_binary, in_text, in_binary = (
            ("message", who, sender, kind) for sender in (us, them) for kind in ("text", "binary")
        )

        # Both hooks keep the common case (a whole text or binary message) short:
        # one tuple appended, everything else left for the views to work out.

        def recording_send_frame(frame: Frame) -> None:
            send_frame(frame)
            opcode = frame.opcode
            if frame.fin and (opcode is text or opcode is binary):
                data = frame.data
                index = sent[0]
                sent[0] = index + 1
                meta = out_text if opcode is text else out_binary
                append((clock(), meta, len(data), bytes(data[:HEAD]), index))
            else:
                saw(frame, us)

        def recording_events_received() -> list:
            events = events_received()
            for event in events:
                if type(event) is frame_type:
                    opcode = event.opcode
                    if event.fin and (opcode is text or opcode is binary):
                        data = event.data
                        index = received[0]
                        received[0] = index + 1
                        meta = in_text if opcode is text else in_binary
                        append((clock(), meta, len(data), bytes(data[:HEAD]), index))
                    else:
                        saw(event, them)
                elif getattr(event, "status_code", None) == 101:  # a client's handshake succeeded
                    self.record_open(self.request.path)
            return events

        protocol.send_frame = recording_send_frame
        protocol.events_received = recording_events_received

    def _add(self, kind: str, sender: str | None = None, code=None, detail="") -> None:
        self._totals.others += 1
        self._append((time.monotonic_ns(), (kind, self._who, sender, None), code, detail))

    def record_open(self, path: str) -> None:
        if self.flow is not None and not self._opened:
            self._opened = True
            self._add("open", detail=path)

    def record_error(self, exc: BaseException) -> None:
        if self.flow is not None:
            self._add("error", self._us, detail=f"{type(exc).__name__}: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.flow is not None and self._opened:
            protocol = self.protocol
            if protocol.close_rcvd_then_sent is None:
                first = None  # no closing handshake: the connection was lost
            else:
                first = self._them if protocol.close_rcvd_then_sent else self._us
            self._add("end", first, code=protocol.close_code, detail=protocol.close_reason or "")

    def _saw(self, frame: Frame, sender: str) -> None:
        """Record what the hooks' short path does not: fragments and close frames."""
        opcode = frame.opcode
        if opcode is Opcode.CONT:
            partial = self._partial.get(sender)
            if partial is None:
                return
            partial[1] += len(frame.data)
            if len(partial[2]) < HEAD:
                partial[2] += bytes(frame.data[: HEAD - len(partial[2])])
            if frame.fin:
                del self._partial[sender]
                self._message(sender, *partial)
        elif opcode in (Opcode.TEXT, Opcode.BINARY):
            self._partial[sender] = [_DATA[opcode], len(frame.data), bytes(frame.data[:HEAD])]
        elif opcode is Opcode.CLOSE:
            try:
                close = Close.parse(frame.data)
            except Exception:  # a malformed close frame is still worth showing
                close = Close(1002, "malformed close frame")
            self._add("close", sender, code=close.code, detail=close.reason)

    def _message(self, sender: str, kind: str, size: int, head: bytes) -> None:
        counts = self._totals.sent if sender == self._us else self._totals.received
        index = counts[0]
        counts[0] = index + 1
        self._append((time.monotonic_ns(), ("message", self._who, sender, kind), size, head, index))
