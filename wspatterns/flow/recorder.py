"""The recorder: everything that crosses a connection, in the order it happened.

A flow (:class:`~wspatterns.flow.log.EventLog`) and its :class:`Recorder` s,
one per end of each connection, share a :class:`Store`: the records
(:mod:`~wspatterns.flow.records`), what the latest ones were, and the ends.
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

import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from websockets.extensions import Extension
from websockets.frames import Close, Frame, Opcode
from websockets.typing import ExtensionName

from ..internals import put_extension_first, undecodable, written_by_broadcast
from .folding import Ends, Foldable, Folded
from .records import (
    HEAD,
    WEIGHT,
    BroadcastRecord,
    End,
    Kind,
    LifeRecord,
    MessageRecord,
    Meta,
    Record,
    Side,
    Who,
    by_opcode,
)

#: Deliveries of a broadcast that weigh one event against the cap (8 bytes each, against
#: about 200 for an event on its own).
FANOUT = 32


@dataclass(slots=True)
class Tail:
    """What the flow's latest records were, for the next delivery of a broadcast to join."""

    payload: object = None  # the latest payload a server end sent
    record: Record | None = None  # its record: a message's, or the broadcast it joined
    token: object = None  # a token for the broadcast under way, if any
    broadcast: BroadcastRecord | None = None  # the latest broadcast: it weighs on the cap
    # once the next one starts

    def clear(self) -> None:
        self.payload = self.record = self.token = self.broadcast = None


class Store:
    """What a flow and its recorders share: its records (at most ``cap``), their tail, its
    ends (:class:`~wspatterns.flow.folding.Ends`), and how many broadcasts it recorded."""

    __slots__ = ("records", "tail", "ends", "broadcasts")

    def __init__(self, cap: int) -> None:
        self.records: deque[Record] = deque(maxlen=cap)
        self.tail = Tail()
        self.ends: Ends[Foldable] = Ends(self.records)
        self.broadcasts = 0  # broadcast records made: until there is one, a record is an event


@dataclass(slots=True)
class Fragments:
    """A fragmented message under way: its type, its size so far, its head so far."""

    type: str
    size: int
    head: bytes


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
        "number", "_store", "who", "others", "partial", "installed", "us", "them", "connection",
        "folded",
    )  # fmt: skip

    def __init__(self, store: Store, who: Who) -> None:
        self._store = store
        self.who = who
        self.number = who.connection
        self.reset()
        self.installed = False
        self.folded: Folded | None = None  # what the flow folded it into, while it is folded
        self._records = store.records
        self._tail = store.tail
        self._joined: object = None  # the token of the latest broadcast that reached us
        # Its connection: a server's watches for broadcast() skipping it.
        self.connection: weakref.ref[Watchful] | None = None
        us: Side
        them: Side
        us, them = ("server", "client") if who.at == "server" else ("client", "server")
        self.us, self.them = us, them
        # What every record of a whole message says but its time, size and head, looked up
        # by the frame's opcode (None for frames that are not a text or binary message):
        # records share these tuples instead of building their own.
        self._out = by_opcode(Meta("message", who, us, "text"), Meta("message", who, us, "binary"))
        self._in = by_opcode(
            Meta("message", who, them, "text"), Meta("message", who, them, "binary")
        )

    def reset(self) -> None:
        self.sent = 0  # messages sent by this end
        self.received = 0  # messages received by this end
        self.others = 0  # events that are not messages: open, close, end, error, skipped
        self.partial: dict[str, Fragments] = {}  # a fragmented message under way, by sender

    @property
    def events(self) -> int:
        """How many events this end recorded, kept or not."""
        return self.sent + self.received + self.others

    def install(self, protocol: Any) -> None:
        """Record ``protocol``'s frames from now on; call it once its handshake succeeded."""
        put_extension_first(protocol, self)
        self.installed = True

    # The two hooks keep the common case (a whole text or binary message) short: one
    # record appended, with the first HEAD bytes of the message (the message itself when
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
            self._records.append(MessageRecord(_clock(), meta, len(data), head))
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
            self._records.append(MessageRecord(_clock(), meta, len(data), head))
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
            self._store.ends.unfold(self)
        self.others += 1
        self._records.append(LifeRecord(_clock(), Meta(kind, self.who, sender, None), code, detail))
        if kind == "end":
            self._store.ends.over(self)

    def gone(self) -> None:
        """The connection is over without having opened (its handshake failed):
        the flow may fold this end, which recorded nothing."""
        self._store.ends.over(self)

    def _saw(self, frame: Frame, sender: Side) -> None:
        """Record fragments (as one message, once whole) and close frames."""
        opcode = frame.opcode
        if opcode is Opcode.CONT:
            partial = self.partial.get(sender)
            if partial is None:
                return
            partial.size += len(frame.data)
            if len(partial.head) < HEAD:
                partial.head += bytes(frame.data[: HEAD - len(partial.head)])
            if frame.fin:
                del self.partial[sender]
                self._message(sender, partial.type, partial.size, partial.head)
        elif opcode is _TEXT or opcode is _BINARY:
            kind = "text" if opcode is _TEXT else "binary"
            self.partial[sender] = Fragments(kind, len(frame.data), bytes(frame.data[:HEAD]))
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
            if isinstance(record, LifeRecord) and record.meta.who is self.who:
                if record.meta.kind == "open":
                    break
            elif isinstance(record, MessageRecord) and record.meta.who is self.who:
                meta = record.meta
                if meta.sender == self.them:
                    received.append(position)
                    if meta.type == "text" and record.size == size and record.head == head:
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
            self._store.ends.unfold(self)
        if sender == self.us:
            self.sent += 1
        else:
            self.received += 1
        meta = Meta("message", self.who, sender, kind)
        self._records.append(MessageRecord(_clock(), meta, size, head))

    def __repr__(self) -> str:
        who = self.who
        return (
            f"<Recorder {who.client}↔{who.server} at {who.at}: "
            f"sent {self.sent}, received {self.received}>"
        )


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
        if data is tail.payload:
            # The payload the flow's latest record sent: a broadcast going on? Tested first,
            # with identity tests only: the fewest steps for each of a broadcast's deliveries.
            broadcast = tail.broadcast
            if (
                broadcast is not None
                and tail.record is broadcast
                and self._joined is not tail.token
                and self._records[-1] is broadcast
                and frame.fin
                and (frame.opcode is _TEXT or frame.opcode is _BINARY)
            ):
                self.sent += 1
                self._joined = tail.token
                broadcast.recipients.append(self)
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
            record = MessageRecord(_clock(), meta, len(data), head)
            self._records.append(record)
            tail.payload = data
            tail.record = record
        else:
            self._saw(frame, "server")
        return frame

    def _again(self, data: Any, meta: Meta) -> None:
        """The payload of the latest record, sent again: the second delivery of a broadcast,
        or, if not, a message of its own."""
        tail = self._tail
        self.sent += 1
        first = tail.record
        if isinstance(first, MessageRecord) and self._follows(first) and written_by_broadcast():
            self._turn_into_broadcast(first, [self], [])
            return
        record = MessageRecord(_clock(), meta, len(data), bytes(data[:HEAD]))
        self._records.append(record)
        tail.payload, tail.record = data, record

    def _follows(self, record: Record | None) -> bool:
        """True if ``record``, the latest one, is another server end's message alone."""
        return (
            isinstance(record, MessageRecord)
            and bool(self._records)
            and self._records[-1] is record
            and record.meta.who.connection != self.number
        )

    def _turn_into_broadcast(
        self, first: MessageRecord, more: list[Recorder], skipped: list[tuple[Recorder, str]]
    ) -> None:
        """Replace ``first``, a message record, by a broadcast: it, ``more`` deliveries,
        ``skipped`` connections."""
        earlier = self._store.ends.server(first.meta.who.connection)
        recipients = [*([earlier] if isinstance(earlier, Recorder) else []), *more]
        self._records.pop()
        type_ = first.meta.type or "text"
        self._start(first.time, type_, first.size, first.head, recipients, skipped)

    def _start(
        self,
        time_ns: int,
        type_: str,
        size: int,
        head: bytes,
        recipients: list[Recorder],
        skipped: list[tuple[Recorder, str]],
    ) -> None:
        """Record a new broadcast, after weighing the previous one."""
        tail = self._tail
        previous = tail.broadcast
        if previous is not None:  # done by now: it weighs on the cap from here on
            self._records.extend([WEIGHT] * (previous.weight // FANOUT))
        token = object()
        for recorder in recipients:
            recorder._joined = token
        for recorder, _ in skipped:
            recorder._joined = token
        ends: list[End] = list(recipients)
        passed: list[tuple[End, str]] = list(skipped)
        broadcast = BroadcastRecord(time_ns, type_, size, head[:HEAD], ends, passed)
        self._records.append(broadcast)
        tail.record, tail.token, tail.broadcast = broadcast, token, broadcast
        self._store.broadcasts += 1

    def skipped(self, why: str, message: bytes, text: bool) -> None:
        """Record that ``broadcast()``, writing ``message``, passed over this connection."""
        if self.folded is not None:
            self._store.ends.unfold(self)
        self.others += 1
        tail = self._tail
        last = tail.record
        if message is tail.payload:
            if isinstance(last, BroadcastRecord) and self._joined is not tail.token:
                if self._records and self._records[-1] is last:
                    last.skipped.append((self, why))
                    self._joined = tail.token
                    return
            elif isinstance(last, MessageRecord) and self._follows(last):  # its first delivery
                self._turn_into_broadcast(last, [], [(self, why)])
                return
        type_ = "text" if text else "binary"
        tail.payload = message
        self._start(_clock(), type_, len(message), message, [], [(self, why)])


_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY  # compared by identity: hashing enums is slow
_clock = time.monotonic_ns
