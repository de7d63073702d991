"""The flow: what its recorders saw, kept in memory with a cap.

An :class:`EventLog` keeps the records its :class:`~wspatterns.flow.recorder.Recorder` s
append (one per end of each connection), at most ``cap`` events of them; the
:class:`~wspatterns.Flow` a learner holds is one, with the views added. Servers
from :func:`wspatterns.serve` and clients from :func:`wspatterns.connect` record
into one; :meth:`EventLog.export` and :func:`~wspatterns.flow.merging.merge_into`
carry one to another process.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from typing import Any, cast

from .. import settings
from ..errors import InvalidArgumentError
from .events import FIELDS, Entry, Event, expand, exported, read
from .folding import Foldable, Folded, Tally
from .recorder import Recorder, ServerRecorder, Store
from .records import BroadcastRecord, Record, Side, Who, weight

#: Events a flow keeps unless told otherwise (100,000, or ``WSPATTERNS_CAP``), older ones
#: dropped and counted. A broadcast counts one for every :data:`FANOUT` connections reached.
CAP = settings.CAP


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
        # The records, appended by the recorders; flow.events turns them into Events.
        self._store = Store(cap)
        self._connections = itertools.count(1) if token is None else itertools.count(-1, -1)

    @property
    def entries(self) -> list[Entry]:
        """What the flow keeps, oldest first: an :class:`Event` each, and one
        :class:`Broadcast` for all the deliveries of a broadcast, which makes it
        much lighter than :attr:`events` for a flow of big broadcasts."""
        store = self._store
        with store.ends.lock:  # no end is folded between the two snapshots
            records = list(store.records)
            ends = list(store.ends)
            recorded = sum(end.events for end in ends) + self.folded.events
        return read(records, recorded - self._kept(records), {end.who: end for end in ends})

    @property
    def events(self) -> list[Event]:
        """A snapshot of the events kept, oldest first, numbered in the order they happened.

        Each delivery of a broadcast is an event of its own (``kind`` "message"),
        and so is each connection it skipped (``kind`` "skipped").
        """
        entries = self.entries
        if not self._store.broadcasts:  # every entry is an event
            return cast(list[Event], entries)
        return expand(entries)

    @property
    def recorded(self) -> int:
        """How many events were ever recorded, kept or not (folded connections' too)."""
        return self._store.ends.events()

    @property
    def dropped(self) -> int:
        """How many events were recorded but are no longer kept, past the cap."""
        return self.recorded - len(self)

    @property
    def totals(self) -> list[Foldable]:
        """Each end of each connection the flow holds, with exact counts whatever was dropped.

        That is every end but those folded: an end whose connection is over and
        whose every event was dropped past the cap leaves this list (and
        :meth:`~wspatterns.Flow.stats`), its counts added up in :attr:`folded`
        instead, so that connections coming and going do not grow the flow
        without end. Until the cap drops a connection's last event, nothing changes.
        """
        return list(self._store.ends)

    @property
    def folded(self) -> Folded:
        """The connections no longer in :attr:`totals`, added up: how many, and their exact
        counts (see :class:`~wspatterns.flow.folding.Folded`)."""
        return self._store.ends.folded

    def __len__(self) -> int:
        """How many events are kept (each delivery of a broadcast counts)."""
        return self._kept(list(self._store.records))

    def _kept(self, records: list[Record]) -> int:
        return sum(map(weight, records)) if self._store.broadcasts else len(records)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def clear(self) -> None:
        """Forget every event and total (``folded`` too); connection numbers keep counting."""
        store = self._store
        with store.ends.lock:
            store.records.clear()
            store.tail.clear()
            store.ends.clear()

    def new_connection(self) -> int:
        return next(self._connections)

    def server_end(self, connection: int) -> Foldable | None:
        """The server end of ``connection`` (its recorder, or its tally), if this flow has one."""
        return self._store.ends.server(connection)

    def load(self, records: list[Record], next_connection: int) -> None:
        """Append records made elsewhere (a merge), their ends already tallied
        (:meth:`tally`); number connections on from ``next_connection``."""
        self._store.records.extend(records)
        self._store.broadcasts += sum(isinstance(record, BroadcastRecord) for record in records)
        self._connections = itertools.count(next_connection)

    def export(self) -> dict[str, Any]:
        """What this flow holds, as JSON-ready data, to merge in another process: each
        event a row of ``fields``, each end and the folded counts by name."""
        with self._store.ends.lock:
            ends = list(self._store.ends)
            folded = self.folded.export()
        return {
            "token": self.token,
            "fields": FIELDS,
            "events": [exported(entry) for entry in self.entries],
            "ends": [
                {
                    **end.who._asdict(),
                    "sent": end.sent,
                    "received": end.received,
                    "others": end.others,
                }
                for end in ends
            ],  # fmt: skip
            "folded": folded,
        }

    def end(self, connection: int, server: str, client: str, at: Side) -> Recorder:
        """A recorder for one end (``at``) of a connection, recording into this flow."""
        who = Who(connection, server, client, at)
        kind = ServerRecorder if at == "server" else Recorder
        recorder = kind(self._store, who)
        self._store.ends.add(recorder)
        return recorder

    def tally(self, who: Who, sent: int, received: int, others: int) -> Tally:
        """An end known by its counts alone (a merge's: its records were made elsewhere)."""
        tally = Tally(who, sent, received, others)
        self._store.ends.add(tally)
        return tally

    def __repr__(self) -> str:
        connections = len({end.number for end in self._store.ends})
        folded = self.folded.connections
        more = f" ({folded} more folded)" if folded else ""
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        return f"<Flow: {len(self)} events on {connections} connections{more}{dropped}>"
