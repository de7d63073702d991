"""What a flow holds, as the views read it: :class:`Event` and :class:`Broadcast`.

The recorder appends records (:mod:`~wspatterns.flow.records`); :func:`read`
turns them into these when a view asks, working out each message's index by
counting back from its end's exact totals (:func:`count_back`).
:func:`exported` and :func:`imported` carry them between processes as JSON,
each row with the names of its fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple, TypeAlias

from ..errors import WSPatternsError
from .records import (
    HEAD,
    BroadcastRecord,
    End,
    Kind,
    LifeRecord,
    MessageRecord,
    Record,
    Side,
    Who,
)

__all__ = ["HEAD", "Broadcast", "Entry", "Event", "Kind", "Side", "Who", "read", "expand"]


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


class Broadcast:
    """One ``broadcast()`` pass: one message, written to several connections at once.

    ``seq`` is the number its first event has in ``flow.events``, where each of
    its deliveries and skips is an :class:`Event` of its own (:meth:`events`);
    ``time``, ``type``, ``size`` and ``head`` describe the message.
    ``recipients`` lists the server ends it was written to, in the order
    ``broadcast()`` wrote them (which, for a set, follows memory addresses);
    ``skipped`` the ones it passed over, with why. Both are :class:`Who`
    (connection, server, client, at), like an event's.
    """

    __slots__ = ("seq", "time", "type", "size", "head", "_record", "_indexes")

    kind = "broadcast"

    def __init__(self, seq: int, record: BroadcastRecord, indexes: list[int]) -> None:
        self.seq = seq
        self.time = record.time
        self.type = record.type
        self.size = record.size
        self.head = record.head
        self._record = record
        self._indexes = indexes

    @property
    def connections(self) -> list[int]:
        """The connection numbers it was written to, in the order ``broadcast()`` wrote them."""
        return [end.number for end in self._record.recipients]

    @property
    def recipients(self) -> list[Who]:
        return [end.who for end in self._record.recipients]

    @property
    def skipped(self) -> list[tuple[Who, str]]:
        return [(end.who, why) for end, why in self._record.skipped]

    @property
    def skips(self) -> list[tuple[int, str]]:
        """``(connection, why)`` for each connection it passed over."""
        return [(end.number, why) for end, why in self._record.skipped]

    @property
    def deliveries(self) -> Iterator[tuple[int, int]]:
        """``(connection, index)`` for each delivery, in the order ``broadcast()`` wrote them:
        ``index`` counts the messages of that connection's server end, as in :class:`Event`."""
        return zip(self.connections, self._indexes, strict=True)

    @property
    def servers(self) -> list[str]:
        """The servers whose connections it reached or skipped, by their lowest connection."""
        record = self._record
        ends = sorted({end.who for end in record.recipients}.union(
            end.who for end, _ in record.skipped
        ))  # fmt: skip
        return list(dict.fromkeys(who.server for who in ends))

    def __len__(self) -> int:
        """How many events it stands for: deliveries and skips."""
        return self._record.weight

    def events(self) -> list[Event]:
        """Its deliveries, then its skips, as events: each sorted by connection number.

        In connection order, not in the order ``broadcast()`` wrote them, so that
        the same broadcast to a set reads the same on every run.
        """
        seq, time, type_, size, head = self.seq, self.time, self.type, self.size, self.head
        events = []
        delivered = sorted(
            zip(self._record.recipients, self._indexes, strict=True),
            key=lambda pair: pair[0].number,
        )
        for end, index in delivered:
            who = end.who
            events.append(
                Event(seq, time, "message", end.number, who.server, who.client, "server",
                      "server", type_, size, head, index, None, "", self.seq)
            )  # fmt: skip
            seq += 1
        for end, why in sorted(self._record.skipped, key=lambda pair: pair[0].number):
            who = end.who
            events.append(
                Event(seq, time, "skipped", end.number, who.server, who.client, "server",
                      "server", type_, size, head, 0, None, why, self.seq)
            )  # fmt: skip
            seq += 1
        return events

    def __repr__(self) -> str:
        return (
            f"<Broadcast #{self.seq}: {self.type} {self.size} B to "
            f"{len(self._record.recipients)} connections, {len(self._record.skipped)} skipped>"
        )


def count_back(records: list[Record], ends: Mapping[Who, End]) -> list[Any]:
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
        if isinstance(record, MessageRecord):
            meta = record.meta
            place = seen.get(id(meta))
            if place is None:
                way = (meta.who, meta.sender == meta.who.at)
                place = ways.get(way)
                if place is None:
                    end = ends.get(meta.who)
                    if end is None:
                        unknown.append(len(counts))
                    ways[way] = place = len(counts)
                    counts.append(0 if end is None else end.sent if way[1] else end.received)
                seen[id(meta)] = place
            counts[place] -= 1
            found[position] = counts[place]
        elif isinstance(record, BroadcastRecord):
            indexes = []
            for end in reversed(record.recipients):
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
            if isinstance(record, MessageRecord):
                place = seen[id(record.meta)]
                if place in places:
                    found[position] -= counts[place]
    return found


#: What ``flow.entries`` lists: an event, or a broadcast standing for its events.
Entry: TypeAlias = Event | Broadcast


def read(records: list[Record], first: int, ends: Mapping[Who, End]) -> list[Entry]:
    """Records as entries, numbered from ``first``; ``ends`` are the recorders that
    made them, by ``who``, for their exact counts."""
    entries: list[Entry] = []
    indexes = count_back(records, ends)
    seq = first
    for position, record in enumerate(records):
        if isinstance(record, MessageRecord):
            meta = record.meta
            who = meta.who
            entries.append(
                Event(seq, record.time, "message", who.connection, who.server, who.client,
                      who.at, meta.sender, meta.type, record.size, record.head,
                      indexes[position], None, "")
            )  # fmt: skip
            seq += 1
        elif isinstance(record, LifeRecord):
            meta = record.meta
            who = meta.who
            entries.append(
                Event(seq, record.time, meta.kind, who.connection, who.server, who.client,
                      who.at, meta.sender, meta.type, 0, b"", 0, record.code, record.detail)
            )  # fmt: skip
            seq += 1
        elif isinstance(record, BroadcastRecord):
            broadcast = Broadcast(seq, record, indexes[position])
            entries.append(broadcast)
            seq += len(broadcast)
    return entries


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


# Between processes: a flow's entries as JSON, each row read by the names of its fields.

#: The fields of an exported event, in the order its row gives them.
FIELDS = list(Event._fields)
_HEAD_AT = FIELDS.index("head")  # bytes in an Event, a latin-1 string in JSON


class ExportError(WSPatternsError, ValueError):
    """An exported flow that this version of the kit cannot read."""


def exported(entry: Entry) -> list[Any] | dict[str, Any]:
    """An entry as JSON carries it: an event as a row of :data:`FIELDS` (its head's bytes a
    latin-1 string); a broadcast as a dict."""
    if isinstance(entry, Event):
        row = list(entry)
        row[_HEAD_AT] = entry.head.decode("latin-1")
        return row
    return {
        "time": entry.time,
        "type": entry.type,
        "size": entry.size,
        "head": entry.head.decode("latin-1"),
        "connections": entry.connections,
        "skipped": [[connection, why] for connection, why in entry.skips],
    }


def imported(fields: list[str], items: list[Any]) -> Iterator[Event | dict[str, Any]]:
    """What :func:`exported` made, back: events (found by the names in ``fields``, the
    exporter's :data:`FIELDS`) and broadcasts' dicts as they are."""
    try:
        order = [fields.index(name) for name in FIELDS]
    except ValueError:
        missing = sorted(set(FIELDS) - set(fields))
        raise ExportError(
            f"an exported flow lacks the event fields {missing}: was it exported by "
            "another version of wspatterns?"
        ) from None
    for item in items:
        if isinstance(item, dict):
            yield item
            continue
        values = [item[place] for place in order]
        values[_HEAD_AT] = values[_HEAD_AT].encode("latin-1")
        yield Event._make(values)
