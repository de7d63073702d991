"""What a flow holds, as the views read it: :class:`Event` and :class:`Broadcast`.

The recorder appends raw records as cheaply as it can (see
:mod:`~wspatterns.flow.recorder`); :func:`read` turns them into these, when a
view asks. Three kinds of raw record:

* a message: ``(time, meta, size, head)``, ``head`` being the first
  :data:`HEAD` bytes of the message;
* anything else: ``(time, meta, code, detail)`` (``meta`` tells them apart);
* a broadcast, a list: ``[time, type, size, head, recipients, skipped]``: one
  message written to several connections in one ``broadcast()`` pass, the
  recorders of their server ends in the order it wrote them, and the ones it
  passed over as ``(recorder, why)`` pairs.

``meta`` is ``(kind, who, sender, type)``. A list stands for a broadcast
because nothing else recorded is one; anything that is neither a tuple nor a
list (a marker that weighs a broadcast against the cap) is skipped.

No message index is stored (one number less to allocate and keep per
message): counting back from its end's exact total of messages sent or
received, over the records that came after it (all kept: a flow drops its
oldest records first), gives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

from websockets.frames import Opcode

#: Bytes of each message a view shows at most; longer messages keep only these.
HEAD = 48

#: What an event is: a message, the opening handshake, a close frame, the end of
#: the TCP connection, an exception raised by the handler, or a connection that
#: ``broadcast()`` passed over.
Kind: TypeAlias = Literal["open", "message", "close", "end", "error", "skipped"]

#: One end of a connection: where an event was recorded, or who sent it.
Side: TypeAlias = Literal["server", "client"]

#: Which end of which connection: ``(connection, server, client, at)``.
Who: TypeAlias = tuple[int, str, str, Side]

# What every record says but its numbers: (kind, who, sender, type).
Meta: TypeAlias = tuple[Kind, Who, Side | None, str | None]

#: A raw record, as appended on the hot path (see this module's docstring).
Record: TypeAlias = (
    tuple[int, Meta, int, bytes, int] | tuple[int, Meta, int | None, str] | list[Any]
)


class Event(NamedTuple):
    """One thing that happened on one connection, as seen from one end of it.

    ``kind`` is ``"open"``, ``"message"``, ``"close"`` (a close frame),
    ``"end"`` (the TCP connection is gone), ``"error"`` (the handler raised) or
    ``"skipped"`` (``broadcast()`` passed over this connection; ``detail`` says
    why). ``at`` says which end recorded it (``"server"`` or ``"client"``),
    ``sender`` which end sent it (for ``"end"``: which end closed first, None if
    neither). ``index`` counts messages one way on one connection, so a message
    recorded by both ends appears twice with the same ``index``. The deliveries
    and skips of one ``broadcast()`` share its time, and ``broadcast`` names it:
    the ``seq`` of its first event (None for everything else).
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
    detail: str  # path (open), reason (close, end), exception (error), why (skipped)
    broadcast: int | None = None  # for a broadcast's events: the seq of its first


class End(Protocol):
    """One end of a connection as the records know it: its recorder, with its exact counts."""

    who: Who
    number: int
    sent: int
    received: int


class Broadcast:
    """One ``broadcast()`` pass: one message, written to several connections at once.

    ``seq`` is the number its first event has in ``flow.events``, where each of
    its deliveries and skips is an :class:`Event` of its own (:meth:`events`);
    ``time``, ``type``, ``size`` and ``head`` describe the message.
    ``recipients`` lists the server ends it was written to, in the order
    ``broadcast()`` wrote them (which, for a set, follows memory addresses);
    ``skipped`` the ones it passed over, with why. Both are
    ``(connection, server, client, at)``, like an event's.
    """

    __slots__ = ("seq", "time", "type", "size", "head", "_record", "_indexes")

    kind = "broadcast"

    def __init__(self, seq: int, record: list[Any], indexes: list[int]) -> None:
        self.seq = seq
        self.time: int = record[0]
        self.type: str = record[1]
        self.size: int = record[2]
        self.head: bytes = record[3]
        self._record = record
        self._indexes = indexes

    @property
    def connections(self) -> list[int]:
        """The connection numbers it was written to, in the order ``broadcast()`` wrote them."""
        return [end.number for end in self._record[4]]

    @property
    def recipients(self) -> list[Who]:
        return [end.who for end in self._record[4]]

    @property
    def skipped(self) -> list[tuple[Who, str]]:
        return [(end.who, why) for end, why in self._record[5]]

    @property
    def skips(self) -> list[tuple[int, str]]:
        """``(connection, why)`` for each connection it passed over."""
        return [(end.number, why) for end, why in self._record[5]]

    @property
    def deliveries(self) -> Iterator[tuple[int, int]]:
        """``(connection, index)`` for each delivery, in the order ``broadcast()`` wrote them:
        ``index`` counts the messages of that connection's server end, as in :class:`Event`."""
        return zip(self.connections, self._indexes, strict=True)

    @property
    def servers(self) -> list[str]:
        """The servers whose connections it reached or skipped, by their lowest connection."""
        ends = sorted(
            {end.who for end in self._record[4]} | {end.who for end, _ in self._record[5]}
        )
        return list(dict.fromkeys(who[1] for who in ends))

    def __len__(self) -> int:
        """How many events it stands for: deliveries and skips."""
        return len(self._record[4]) + len(self._record[5])

    def events(self) -> list[Event]:
        """Its deliveries, then its skips, as events: each sorted by connection number.

        In connection order, not in the order ``broadcast()`` wrote them, so that
        the same broadcast to a set reads the same on every run.
        """
        seq, time, kind, size, head = self.seq, self.time, self.type, self.size, self.head
        events = []
        indexes = self._indexes
        for (number, index), end in sorted(
            zip(zip([end.number for end in self._record[4]], indexes, strict=True),
                self._record[4], strict=True),
            key=lambda pair: pair[0],
        ):  # fmt: skip
            _, server, client, _ = end.who
            events.append(
                Event(seq, time, "message", number, server, client, "server", "server",
                      kind, size, head, index, None, "", self.seq)
            )  # fmt: skip
            seq += 1
        for end, why in sorted(self._record[5], key=lambda pair: pair[0].number):
            number, server, client, _ = end.who
            events.append(
                Event(seq, time, "skipped", number, server, client, "server", "server",
                      kind, size, head, 0, None, why, self.seq)
            )  # fmt: skip
            seq += 1
        return events

    def __repr__(self) -> str:
        return (
            f"<Broadcast #{self.seq}: {self.type} {self.size} B to "
            f"{len(self._record[4])} connections, {len(self._record[5])} skipped>"
        )


def count_back(records: list[object], ends: Mapping[Who, End]) -> list[Any]:
    """The message index of each record of ``records`` (a list for a broadcast, one per
    delivery; 0 for anything but a message), found by counting back from the exact totals
    of ``ends``, each end's recorder by its ``who``."""
    found: list[Any] = [0] * len(records)
    counts: list[int] = []  # messages before the records walked, one way on one end
    ways: dict[tuple[Who, bool], int] = {}  # (end, sending?) -> its place in counts
    seen: dict[int, int] = {}  # id(meta) -> its place in counts: metas are shared
    unknown: list[int] = []  # places of ends without a recorder (records made by hand)
    position = len(records)
    for record in reversed(records):
        position -= 1
        if type(record) is tuple:
            meta = record[1]
            if meta[0] != "message":
                continue
            place = seen.get(id(meta))
            if place is None:
                way = (meta[1], meta[2] == meta[1][3])
                place = ways.get(way)
                if place is None:
                    end = ends.get(way[0])
                    if end is None:
                        unknown.append(len(counts))
                    ways[way] = place = len(counts)
                    counts.append(0 if end is None else end.sent if way[1] else end.received)
                seen[id(meta)] = place
            counts[place] -= 1
            found[position] = counts[place]
        elif type(record) is list:
            indexes = []
            for end in reversed(record[4]):
                way = (end.who, True)
                place = ways.get(way)
                if place is None:
                    ways[way] = place = len(counts)
                    counts.append(end.sent)
                counts[place] -= 1
                indexes.append(counts[place])
            indexes.reverse()
            found[position] = indexes
    if unknown:  # counted down from 0: shift them to count up from 0
        places = set(unknown)
        for position, record in enumerate(records):
            if type(record) is tuple and record[1][0] == "message":
                place = seen[id(record[1])]
                if place in places:
                    found[position] -= counts[place]
    return found


#: What ``flow.entries`` lists: an event, or a broadcast standing for its events.
Entry: TypeAlias = Event | Broadcast


def read(records: list[object], first: int, ends: Mapping[Who, End]) -> list[Entry]:
    """Raw records as entries, numbered from ``first``; ``ends`` are the recorders that
    made them, by ``who``, for their exact counts."""
    entries: list[Entry] = []
    indexes = count_back(records, ends)
    seq = first
    for position, record in enumerate(records):
        if type(record) is tuple:
            time, (kind, (connection, server, client, at), sender, type_), third, fourth = record
            if kind == "message":  # (time, meta, size, head)
                entries.append(
                    Event(seq, time, kind, connection, server, client, at, sender, type_,
                          third, fourth, indexes[position], None, "")
                )  # fmt: skip
            else:  # anything else: (time, meta, code, detail)
                entries.append(
                    Event(seq, time, kind, connection, server, client, at, sender, type_,
                          0, b"", 0, third, fourth)
                )  # fmt: skip
            seq += 1
        elif type(record) is list:
            broadcast = Broadcast(seq, record, indexes[position])
            entries.append(broadcast)
            seq += len(broadcast)
    return entries


def weight(record: object) -> int:
    """How many events ``record`` stands for."""
    if type(record) is tuple:
        return 1
    if type(record) is list:
        return len(record[4]) + len(record[5])
    return 0


def expand(entries: Iterable[Entry]) -> list[Event]:
    """Every event, each broadcast's one by one."""
    events: list[Event] = []
    for entry in entries:
        if type(entry) is Event:
            events.append(entry)
        else:
            assert isinstance(entry, Broadcast)
            events.extend(entry.events())
    return events


def plain(entry: Entry) -> list[Any] | dict[str, Any]:
    """An entry as JSON can carry it: heads' bytes as latin-1 strings; a broadcast as a dict."""
    if isinstance(entry, Event):
        return [*entry[:10], entry.head.decode("latin-1"), *entry[11:]]
    return {
        "time": entry.time,
        "type": entry.type,
        "size": entry.size,
        "head": entry.head.decode("latin-1"),
        "connections": entry.connections,
        "skipped": [[connection, why] for connection, why in entry.skips],
    }


def broadcast_record(
    time_ns: int,
    type_: str,
    size: int,
    head: bytes,
    recipients: list[Any],
    skipped: list[Any],
) -> list[Any]:
    """A raw broadcast record (see above), for the recorder, merges and tests."""
    return [time_ns, type_, size, head[:HEAD], recipients, skipped]


def by_opcode(text: Meta, binary: Meta) -> tuple[Meta | None, ...]:
    """``text`` and ``binary`` at the index of their opcode, None at every other opcode's.

    A frame's opcode indexes it directly: fewer steps per frame than comparing it."""
    table: list[Meta | None] = [None] * (max(Opcode) + 1)
    table[Opcode.TEXT], table[Opcode.BINARY] = text, binary
    return tuple(table)
