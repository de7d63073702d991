"""The ends a flow holds, and those it folded away: how its memory stays bounded by its cap.

Besides its events (at most ``cap``), a flow keeps a recorder for each end of each
connection, with its names and exact counts: about 1 KB. Kept for ever, a loop of
short connections would grow a flow without end whatever its cap. So an end whose
connection is over, and whose every event was dropped past the cap, is *folded*:
the flow lets go of it and adds its counts to :class:`Folded` (``flow.folded``).
Nothing a view can show is lost: a view reads the events kept, and those name no
folded end. An end folded that records again (a handler's error after its
connection ended, a ``broadcast()`` skipping a closed connection a set still
holds) is unfolded: back in ``flow.totals``, its counts taken out of
``flow.folded``.

:class:`Ends` keeps the ends and folds them. It looks for ends to fold once
enough have ended since it last looked (:func:`fold_after`), walking the flow's
records once (:func:`named_in`): a few record visits per connection on average,
whatever the cap; ends waiting to be looked at are at most a 64th of the records
kept, plus 64. Nothing of this runs for a message: only when a connection ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from .records import BroadcastRecord, LifeRecord, MessageRecord, Record, Who

#: Ends that must have ended before a flow looks for ends to fold, at the least.
FOLD_EVERY = 64


def fold_after(records: int) -> int:
    """How many more ends must end before a flow holding ``records`` looks again:
    so that each look, which visits every record, costs each of them a few visits."""
    return max(FOLD_EVERY, records // FOLD_EVERY)


def named_in(records: list[Record]) -> set[int]:
    """The ``id`` of everything ``records`` name an end by: the ``who`` of each event,
    the recorder of each delivery and skip of a broadcast (see :mod:`~wspatterns.flow.records`)."""
    named = set()
    for record in records:
        if isinstance(record, (MessageRecord, LifeRecord)):
            named.add(id(record.meta.who))
        elif isinstance(record, BroadcastRecord):
            named.update(map(id, record.recipients))
            named.update(id(end) for end, _ in record.skipped)
    return named


class Counted(Protocol):
    """An end as :class:`Folded` reads it: a recorder's exact counts."""

    sent: int
    received: int
    others: int


class Folded:
    """What the ends a flow folded away had recorded, added up; exact.

    ``connections`` counts the connections none of whose ends is left in
    ``flow.totals``; ``ends``, the ends folded. ``sent``, ``received`` and
    ``others`` add up their counts as ``flow.totals`` gave them, end by end (a
    message recorded at both ends of a connection counts at each). All zero
    until a connection is folded; :meth:`~wspatterns.Flow.clear` starts them again.
    """

    __slots__ = ("connections", "ends", "sent", "received", "others")

    def __init__(self) -> None:
        self.connections = 0
        self.ends = 0
        self.sent = 0
        self.received = 0
        self.others = 0

    @property
    def events(self) -> int:
        """How many events the folded ends recorded."""
        return self.sent + self.received + self.others

    def add(self, end: Counted, last: bool) -> None:
        """Add ``end``'s counts; ``last`` if no other end of its connection is left."""
        self.connections += last
        self.ends += 1
        self.sent += end.sent
        self.received += end.received
        self.others += end.others

    def take(self, end: Counted, last: bool) -> None:
        """Take back what :meth:`add` added for ``end``, in the flow again."""
        self.connections -= last
        self.ends -= 1
        self.sent -= end.sent
        self.received -= end.received
        self.others -= end.others

    def export(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def load(self, exported: dict[str, Any]) -> None:
        """Add what :meth:`export` made of another flow's (a merge)."""
        self.connections += exported["connections"]
        self.ends += exported["ends"]
        self.sent += exported["sent"]
        self.received += exported["received"]
        self.others += exported["others"]

    def __repr__(self) -> str:
        return (
            f"<Folded: {self.connections:,} connections ({self.ends:,} ends): "
            f"{self.sent:,} messages sent, {self.received:,} received, {self.others:,} others>"
        )


class Foldable(Counted, Protocol):
    """An end as :class:`Ends` keeps it: a recorder, or a merged flow's :class:`Tally`."""

    who: Who
    number: int
    folded: Folded | None  # what it was folded into, while it is folded

    @property
    def events(self) -> int: ...

    def reset(self) -> None: ...


class Tally:
    """An end known by its names and counts alone: a merged flow's, whose records were made
    elsewhere. Unlike a recorder it points at nothing of its flow, so a merged flow that is
    let go is freed at once, without waiting for the cyclic garbage collector."""

    __slots__ = ("who", "number", "sent", "received", "others", "folded")

    def __init__(self, who: Who, sent: int, received: int, others: int) -> None:
        self.who = who
        self.number = who.connection
        self.sent = sent
        self.received = received
        self.others = others
        self.folded: Folded | None = None

    @property
    def events(self) -> int:
        return self.sent + self.received + self.others

    def reset(self) -> None:
        self.sent = self.received = self.others = 0

    def __repr__(self) -> str:
        who = self.who
        return (
            f"<Tally {who.client}↔{who.server} at {who.at}: "
            f"sent {self.sent}, received {self.received}>"
        )


End = TypeVar("End", bound=Foldable)


class Ends(Generic[End]):
    """The ends of connections a flow holds, oldest first, and what it folded of the others.

    Ends come, go and fold where their connections run, threads included
    (``serve_in_thread``): every change, and every snapshot of ends and
    records taken together, holds :attr:`lock`.
    """

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = records  # the flow's, to see which ends they name
        self.lock = threading.Lock()
        self.folded = Folded()
        self._kept: dict[End, None] = {}
        self._servers: dict[int, End] = {}  # by connection number
        self._clients: dict[int, End] = {}
        self._over: list[End] = []  # ends over and not folded: still named, or not looked at
        self._fold_at = fold_after(0)  # how many of them make it look for ends to fold

    def __iter__(self) -> Iterator[End]:
        return iter(list(self._kept))  # a snapshot: ends come and go meanwhile

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, end: End) -> None:
        with self.lock:
            (self._servers if end.who.at == "server" else self._clients)[end.number] = end
            self._kept[end] = None

    def server(self, connection: int) -> End | None:
        """The server end of ``connection``, if it is kept."""
        return self._servers.get(connection)

    def events(self) -> int:
        """How many events every end ever recorded, folded ones included."""
        with self.lock:
            ends = list(self._kept)
            folded = self.folded.events
        return sum(end.events for end in ends) + folded

    def clear(self) -> None:
        """Zero every count (the flow's records cleared meanwhile, under :attr:`lock`)."""
        for end in self._kept:
            end.reset()
        self.folded = Folded()

    def over(self, end: End) -> None:
        """``end``'s connection is over: fold it once no record names it."""
        with self.lock:
            self._over.append(end)
            if len(self._over) >= self._fold_at:
                self._fold()

    def _fold(self) -> None:
        """Fold every end over that no record names any more (the lock held)."""
        records = list(self.records)
        named = named_in(records)
        waiting = []
        for end in dict.fromkeys(self._over):
            if id(end.who) in named or id(end) in named:
                waiting.append(end)
            elif end.folded is None and end in self._kept:
                del self._kept[end]
                mine, theirs = self._sides(end)
                if mine.get(end.number) is end:
                    del mine[end.number]
                self.folded.add(end, end.number not in theirs)
                end.folded = self.folded
        self._over = waiting
        self._fold_at = len(waiting) + fold_after(len(records))

    def unfold(self, end: End) -> None:
        """``end``, folded, records again: kept again, its counts out of :attr:`folded`."""
        with self.lock:
            if end.folded is None:
                return
            mine, theirs = self._sides(end)
            if end.folded is self.folded:
                self.folded.take(end, end.number not in theirs)
            else:  # folded before a clear(), which zeroed every count
                end.reset()
            end.folded = None
            mine.setdefault(end.number, end)
            self._kept[end] = None
            self._over.append(end)  # still over: to fold again once its new events are gone

    def _sides(self, end: End) -> tuple[dict[int, End], dict[int, End]]:
        """The ends by number of ``end``'s side, and of the other side."""
        if end.who.at == "server":
            return self._servers, self._clients
        return self._clients, self._servers
