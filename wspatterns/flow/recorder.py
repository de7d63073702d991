"""The recorder: everything that crosses a connection, in the order it happened.

An :class:`EventLog` keeps what its :class:`Recorder` s saw, with a size cap;
the :class:`~wspatterns.Flow` a learner holds is one, with the views added.
Servers from :func:`wspatterns.serve` and clients from :func:`wspatterns.connect`
record into one.

Recording happens where websockets turns messages into frames: every frame
sent or received passes through the connection's extensions, and a
:class:`Recorder` is one, placed first. That records ``send()``, ``recv()``,
``async for`` and ``broadcast()`` alike (which writes frames without calling
``send()``), and costs the connection nothing else: no method of websockets
is replaced.

A ``broadcast()`` is recorded once, not once per connection. It encodes its
message once and hands that same bytes object to each connection in one
synchronous pass. So when a server end sends the very object the flow's
latest record sent, with nothing recorded in between, the second delivery
turns that record into a broadcast (if the stack says ``broadcast()`` is
writing), and each further delivery adds its recorder to the broadcast's
list: 8 bytes. No message index is stored, for any message: the views work
it out from each end's exact counts. A connection ``broadcast()`` passes
over (closing, or in the middle of a fragmented message) is recorded as
skipped: see :class:`~wspatterns.flow.recording.Recording`.

The recorders of connections that are over are let go once the cap has dropped
their every event, their counts added up: see :mod:`~wspatterns.flow.folding`.
"""

from __future__ import annotations

import itertools
import secrets
import time
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol, cast

from websockets.extensions import Extension
from websockets.frames import Close, Frame, Opcode
from websockets.typing import ExtensionName

from .. import settings
from ..errors import InvalidArgumentError
from ..internals import put_extension_first, undecodable, written_by_broadcast
from .events import (
    HEAD,
    Entry,
    Event,
    Kind,
    Meta,
    Record,
    Side,
    Who,
    broadcast_record,
    by_opcode,
    expand,
    plain,
    read,
    weight,
)
from .folding import Ends, Folded

#: Events a flow keeps unless told otherwise (100,000, or ``WSPATTERNS_CAP``), older ones
#: dropped and counted. A broadcast counts one for every :data:`FANOUT` connections reached.
CAP = settings.CAP

#: Deliveries of a broadcast that weigh one event against the cap (8 bytes each, against
#: about 200 for an event on its own).
FANOUT = 32

# Put in the records for every FANOUT deliveries of a broadcast, so that the cap weighs
# them; the views skip it.
_WEIGHT = object()


class EventLog:
    """A record of messages between servers and clients, kept in memory.

    At most ``cap`` events are kept (a broadcast counts one for every
    :data:`FANOUT` connections it reached); past that the oldest are dropped
    and counted in ``dropped``. Per-connection totals (``totals``) stay exact
    whatever is dropped; a connection that is over and whose events were all
    dropped is folded into ``folded``, exact totals of all such connections,
    so that its memory, connections included, is bounded by its cap. Share one
    flow between several servers and clients by passing ``flow=`` to
    :func:`~wspatterns.serve` and :func:`~wspatterns.connect`.
    """

    def __init__(self, cap: int = CAP, *, token: str | None = None) -> None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise InvalidArgumentError(f"cap must be a positive number of events; got {cap!r}.")
        self.cap = cap
        # Tells a server its client records here too. A flow in another process
        # given this token numbers the connections of this flow's clients as this
        # flow does (1, 2, …), so that merge() can put both ends side by side; the
        # connections it numbers itself count down from -1, so they never collide.
        self.token = token or secrets.token_hex(4)
        # Raw records, appended on the hot path; flow.events turns them into Events.
        self._records: deque[Record | object] = deque(maxlen=cap)
        # The latest payload a server end sent, its record, and a token for the
        # broadcast under way, if any: what the next delivery may continue; and the
        # latest broadcast, which weighs on the cap once the next one starts.
        self._tail: list[Any] = [None, None, None, None]
        self._connections = itertools.count(1) if token is None else itertools.count(-1, -1)
        self._ends: Ends[Recorder] = Ends(self._records)
        self._broadcasts = 0  # broadcast records made: until there is one, a record is an event

    @property
    def entries(self) -> list[Entry]:
        """What the flow keeps, oldest first: an :class:`Event` each, and one
        :class:`Broadcast` for all the deliveries of a broadcast, which makes it
        much lighter than :attr:`events` for a flow of big broadcasts."""
        with self._ends.lock:  # no end is folded between the two snapshots
            records = list(self._records)
            ends = list(self._ends)
            recorded = sum(end.events for end in ends) + self.folded.events
        return read(records, recorded - self._kept(records), {end.who: end for end in ends})

    @property
    def events(self) -> list[Event]:
        """A snapshot of the events kept, oldest first, numbered in the order they happened.

        Each delivery of a broadcast is an event of its own (``kind`` "message"),
        and so is each connection it skipped (``kind`` "skipped").
        """
        entries = self.entries
        if not self._broadcasts:  # every entry is an event
            return cast(list[Event], entries)
        return expand(entries)

    @property
    def recorded(self) -> int:
        """How many events were ever recorded, kept or not (folded connections' too)."""
        return self._ends.events()

    @property
    def dropped(self) -> int:
        """How many events were recorded but are no longer kept, past the cap."""
        return self.recorded - len(self)

    @property
    def totals(self) -> list[Recorder]:
        """Each end of each connection the flow holds, with exact counts whatever was dropped.

        That is every end but those folded: an end whose connection is over and
        whose every event was dropped past the cap leaves this list (and
        :meth:`~wspatterns.Flow.stats`), its counts added up in :attr:`folded`
        instead, so that connections coming and going do not grow the flow
        without end. Until the cap drops a connection's last event, nothing changes.
        """
        return list(self._ends)

    @property
    def folded(self) -> Folded:
        """The connections no longer in :attr:`totals`, added up: how many, and their exact
        counts (see :class:`~wspatterns.flow.folding.Folded`)."""
        return self._ends.folded

    def __len__(self) -> int:
        """How many events are kept (each delivery of a broadcast counts)."""
        return self._kept(list(self._records))

    def _kept(self, records: list[object]) -> int:
        return sum(map(weight, records)) if self._broadcasts else len(records)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def clear(self) -> None:
        """Forget every event and total (``folded`` too); connection numbers keep counting."""
        with self._ends.lock:
            self._records.clear()
            self._tail[:] = [None, None, None, None]
            self._ends.clear()

    def new_connection(self) -> int:
        return next(self._connections)

    def server_end(self, connection: int) -> Recorder | None:
        """The recorder of the server end of ``connection``, if this flow has one."""
        return self._ends.server(connection)

    def load(self, records: list[Record], next_connection: int) -> None:
        """Append raw records made by :meth:`Recorder` elsewhere (a merge); number on from there."""
        self._records.extend(records)
        self._broadcasts += sum(1 for record in records if isinstance(record, list))
        self._connections = itertools.count(next_connection)

    def export(self) -> dict[str, Any]:
        """What this flow holds, as plain JSON-ready data, to merge in another process."""
        with self._ends.lock:
            ends = list(self._ends)
            folded = self.folded.export()
        return {
            "token": self.token,
            "events": [plain(entry) for entry in self.entries],
            "ends": [[*end.who, end.sent, end.received, end.others] for end in ends],
            "folded": folded,
        }

    def end(self, connection: int, server: str, client: str, at: Side) -> Recorder:
        """A recorder for one end (``at``) of a connection, recording into this flow."""
        who: Who = (connection, server, client, at)
        recorder = ServerRecorder(self, who) if at == "server" else Recorder(self, who)
        self._ends.add(recorder)
        return recorder

    def __repr__(self) -> str:
        connections = len({end.who[0] for end in self._ends})
        folded = self.folded.connections
        more = f" ({folded} more folded)" if folded else ""
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        return f"<Flow: {len(self)} events on {connections} connections{more}{dropped}>"


class Watchful(Protocol):
    """A connection that can start watching for ``broadcast()`` skipping it."""

    def watch_for_skips(self) -> None: ...


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

    # What a delivery of a broadcast reads and writes comes first, so that it touches
    # one cache line of this object: with 1000 connections, each one is cold.
    __slots__ = (
        "sent", "_tail", "_joined", "_records", "received", "_out", "_in",
        "number", "flow", "who", "others", "partial", "installed", "us", "them", "connection",
        "folded",
    )  # fmt: skip

    def __init__(self, flow: EventLog, who: Who) -> None:
        self.flow = flow
        self.who = who  # (connection, server, client, at)
        self.number = who[0]
        self.reset()
        self.installed = False
        self.folded: Folded | None = None  # what the flow folded it into, while it is folded
        self._records = flow._records
        self._tail = flow._tail
        self._joined: object = None  # the token of the latest broadcast that reached us
        # Its connection: a server's watches for broadcast() skipping it.
        self.connection: weakref.ref[Watchful] | None = None
        us: Side
        them: Side
        us, them = ("server", "client") if who[3] == "server" else ("client", "server")
        self.us, self.them = us, them
        # What every record of a whole message says but its time, size and head, looked up
        # by the frame's opcode (None for frames that are not a text or binary message):
        # records share these tuples instead of building their own.
        self._out = by_opcode(("message", who, us, "text"), ("message", who, us, "binary"))
        self._in = by_opcode(("message", who, them, "text"), ("message", who, them, "binary"))

    def reset(self) -> None:
        self.sent = 0  # messages sent by this end
        self.received = 0  # messages received by this end
        self.others = 0  # events that are not messages: open, close, end, error, skipped
        self.partial: dict[str, list[Any]] = {}  # a fragmented message under way, by sender

    @property
    def events(self) -> int:
        """How many events this end recorded, kept or not."""
        return self.sent + self.received + self.others

    def install(self, protocol: Any) -> None:
        """Record ``protocol``'s frames from now on; call it once its handshake succeeded."""
        put_extension_first(protocol, self)
        self.installed = True

    # The two hooks keep the common case (a whole text or binary message) short: one
    # tuple appended, with the first HEAD bytes of the message (the message itself when
    # it is that short: slicing all of a bytes object returns it), everything else left
    # for the views to work out. Keeping a reference to longer messages instead of a
    # copy of their head was measured: no faster, and more memory from 49 bytes up.

    def encode(self, frame: Frame) -> Frame:
        meta = self._out[frame.opcode]
        if meta is not None and frame.fin:
            data = frame.data
            self.sent += 1
            head = data[:HEAD]
            if type(head) is not bytes:  # a bytearray or memoryview: copy it
                head = bytes(head)
            self._records.append((_clock(), meta, len(data), head))
        else:
            self._saw(frame, self.us)
        return frame

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        meta = self._in[frame.opcode]
        if meta is not None and frame.fin:
            data = frame.data
            self.received += 1
            head = data[:HEAD]
            if type(head) is not bytes:
                head = bytes(head)
            self._records.append((_clock(), meta, len(data), head))
        else:
            self._saw(frame, self.them)
        return frame

    # Everything but whole messages: rarer, so written for reading, not for speed.

    def add(
        self, kind: Kind, sender: Side | None = None, code: int | None = None, detail: str = ""
    ) -> None:
        """Record an event that is not a message: open, close, end or error.

        Once ``"end"`` is recorded, the flow may fold this end when its events
        are all dropped past the cap (see :mod:`~wspatterns.flow.folding`)."""
        if self.folded is not None:
            self.flow._ends.unfold(self)
        self.others += 1
        self._records.append((_clock(), (kind, self.who, sender, None), code, detail))
        if kind == "end":
            self.flow._ends.over(self)

    def gone(self) -> None:
        """The connection is over without having opened (its handshake failed):
        the flow may fold this end, which recorded nothing."""
        self.flow._ends.over(self)

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
            if sender == self.us:
                self.leaving_open()  # broadcast() skips us until the last fragment is out
        elif opcode is Opcode.CLOSE:
            try:
                close = Close.parse(frame.data)
            except Exception:  # a malformed close frame is still worth showing
                close = Close(1002, "malformed close frame")
            if close.code == 1007 and sender == self.us:
                self._undecodable()
            self.add("close", sender, code=close.code, detail=close.reason)
            self.leaving_open()

    def _undecodable(self) -> None:
        """This end closes with 1007: if websockets found a text message it received not
        UTF-8, it was no message, and nothing received after it will be delivered either.

        websockets checks a message's UTF-8 only when the handler reads it, long after
        this end recorded it as received; so its record goes now, with those of the
        messages that arrived after it, and the count of messages received with them.
        Where the whole message is not known (``recv_streaming()`` failed on one of its
        frames), the records stay as they are."""
        connection = None if self.connection is None else self.connection()
        error = None if connection is None else undecodable(connection)
        if error is None:
            return  # the handler closed with 1007 itself
        data = error.object
        size, head = len(data), bytes(data[:HEAD])
        records = self._records
        kept = list(records)
        received = []  # positions of the messages this end received, the latest first
        invalid = 0  # how many of them go: up to the earliest that is the invalid one
        for position in range(len(kept) - 1, -1, -1):  # back to this end's opening
            record = kept[position]
            if record.__class__ is not tuple or record[1][1] is not self.who:
                continue
            kind, _, sender, type_ = record[1]
            if kind == "open":
                break
            if kind == "message" and sender == self.them:
                received.append(position)
                if type_ == "text" and record[2] == size and record[3] == head:
                    invalid = len(received)
        gone = received[:invalid]
        for position in reversed(gone):  # the earliest first: the later keep their place
            place = position - len(kept)  # from the right, where records are appended
            if records[place] is kept[position]:
                del records[place]
            else:  # appended to from another thread meanwhile
                records.remove(kept[position])
        self.received -= len(gone)

    def leaving_open(self) -> None:
        """The connection is about to be one ``broadcast()`` skips: a server's watches for it
        (:class:`ServerRecorder`); a client's has nothing to do."""

    def message(self, sender: Side, text: str) -> None:
        """Record a whole text message that crossed no WebSocket (a hub's words with Redis)."""
        data = text.encode()
        self._message(sender, "text", len(data), data[:HEAD])

    def _message(self, sender: Side, kind: str, size: int, head: bytes) -> None:
        if self.folded is not None:
            self.flow._ends.unfold(self)
        if sender == self.us:
            self.sent += 1
        else:
            self.received += 1
        self._records.append((_clock(), ("message", self.who, sender, kind), size, head))

    def __repr__(self) -> str:
        connection, server, client, at = self.who
        return f"<Recorder {client}↔{server} at {at}: sent {self.sent}, received {self.received}>"


class ServerRecorder(Recorder):
    """A server's end of a connection: a :class:`Recorder` that also tells a broadcast.

    How is in this module's docstring. Two ``broadcast()`` calls of one bytes
    object in a row, to connections none of which is in both, with nothing
    recorded in between, are recorded as one broadcast: a connection can be in
    a broadcast once, but nothing else tells one pass from the next without
    reading the stack at every delivery.
    """

    __slots__ = ()

    def leaving_open(self) -> None:
        connection = None if self.connection is None else self.connection()
        if connection is not None:
            connection.watch_for_skips()

    def encode(self, frame: Frame) -> Frame:
        data = frame.data
        tail = self._tail
        if data is tail[0]:
            # The payload the flow's latest record sent: a broadcast going on? Tested first,
            # with identity tests only (tail[3] is the latest broadcast): the fewest steps for
            # each of a broadcast's deliveries.
            last = tail[1]
            if (
                last is tail[3]
                and self._joined is not tail[2]
                and self._records[-1] is last
                and frame.fin
                and (frame.opcode is _TEXT or frame.opcode is _BINARY)
            ):
                self.sent += 1
                self._joined = tail[2]
                tail[3][4].append(self)  # tail[3] is last
                return frame
            meta = self._out[frame.opcode]
            if meta is not None and frame.fin:
                self._again(data, meta)
                return frame
        meta = self._out[frame.opcode]
        if meta is not None and frame.fin:
            self.sent += 1
            head = data[:HEAD]
            if type(head) is not bytes:
                head = bytes(head)
            record = (_clock(), meta, len(data), head)
            self._records.append(record)
            tail[0] = data
            tail[1] = record
        else:
            self._saw(frame, "server")
        return frame

    def _again(self, data: Any, meta: Meta) -> None:
        """The payload of the latest record, sent again: the second delivery of a broadcast,
        or, if not, a message of its own."""
        tail = self._tail
        self.sent += 1
        if self._follows(tail[1]) and written_by_broadcast():
            self._turn_into_broadcast(tail[1], [self], [])
            return
        record = (_clock(), meta, len(data), bytes(data[:HEAD]))
        self._records.append(record)
        tail[0], tail[1] = data, record

    def _follows(self, record: Any) -> bool:
        """True if ``record``, the latest one, is another server end's message alone."""
        return (
            record.__class__ is tuple
            and bool(self._records)
            and self._records[-1] is record
            and record[1][1][0] != self.number
        )

    def _turn_into_broadcast(
        self, first: tuple[Any, ...], more: list[Recorder], skipped: list[tuple[Recorder, str]]
    ) -> None:
        """Replace ``first``, a message record, by a broadcast: it, ``more`` deliveries,
        ``skipped`` connections."""
        time_ns, (_, who, _, type_), size, head = first
        earlier = self.flow.server_end(who[0])
        recipients = [*([earlier] if earlier is not None else []), *more]
        records = self._records
        records.pop()
        self._start(broadcast_record(time_ns, type_, size, head, recipients, skipped))

    def _start(self, broadcast: list[Any]) -> None:
        """Append ``broadcast``, a new broadcast record, after weighing the previous one."""
        tail = self._tail
        previous = tail[3]
        if previous is not None:  # done by now: it weighs on the cap from here on
            self._records.extend([_WEIGHT] * ((len(previous[4]) + len(previous[5])) // FANOUT))
        token = object()
        for recorder in broadcast[4]:
            recorder._joined = token
        for recorder, _ in broadcast[5]:
            recorder._joined = token
        self._records.append(broadcast)
        tail[1], tail[2], tail[3] = broadcast, token, broadcast
        self.flow._broadcasts += 1

    def skipped(self, why: str, message: bytes, text: bool) -> None:
        """Record that ``broadcast()``, writing ``message``, passed over this connection."""
        if self.folded is not None:
            self.flow._ends.unfold(self)
        self.others += 1
        tail = self._tail
        last = tail[1]
        if message is tail[0]:
            if last.__class__ is list and self._joined is not tail[2]:
                if self._records and self._records[-1] is last:
                    last[5].append((self, why))
                    self._joined = tail[2]
                    return
            elif self._follows(last):  # the first delivery of this pass
                self._turn_into_broadcast(last, [], [(self, why)])
                return
        type_ = "text" if text else "binary"
        tail[0] = message
        self._start(broadcast_record(_clock(), type_, len(message), message, [], [(self, why)]))


_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY  # compared by identity: hashing enums is slow
_clock = time.monotonic_ns
