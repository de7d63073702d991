"""Flows recorded in several processes, put back together as one.

Worker processes record what their servers see; the notebook records what
its clients see. :func:`merge_into` joins them: both ends of one connection
become one connection again, and everything is put in the order it happened.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from operator import attrgetter
from typing import Any

from .events import Event, imported
from .log import CAP, EventLog
from .records import End, LifeRecord, MessageRecord, Meta, Record, Who, broadcast_record


def exported(*parts: EventLog | dict[str, Any]) -> list[dict[str, Any]]:
    """Each part as :meth:`EventLog.export` makes it (parts already exported stay as they are)."""
    return [part if isinstance(part, dict) else part.export() for part in parts]


def merged_cap(parts: list[dict[str, Any]]) -> int:
    """Room for every record of every part, and never less than a flow's usual cap."""
    return max(CAP, sum(len(part["events"]) for part in parts))


def merge_into(merged: EventLog, parts: list[dict[str, Any]]) -> None:
    """Fill ``merged`` (new, empty, with the first part's token) with the events of ``parts``.

    ``parts`` are exported flows (:func:`exported`). The first keeps its
    connection numbers; the others' connections are numbered after it, except
    those both ends of which were recorded (a client here, its server in a
    worker given this flow's token): they become one connection again, named
    after the server that served it. Times are ``time.monotonic_ns()``, which
    processes of one machine share.
    """
    token = parts[0]["token"]
    items = [list(imported(part["fields"], part["events"])) for part in parts]

    def kept(part: int, connection: int) -> bool:
        """The first flow's number: its own connections, and the server ends of its clients'."""
        return part == 0 or (parts[part]["token"] == token and connection > 0)

    taken = {
        connection
        for index, part in enumerate(parts)
        for connection in _connections_in(part, items[index])
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
        number(index, end["connection"]): end["server"]
        for index, part in enumerate(parts)
        for end in part["ends"]
        if end["at"] == "server"
    }
    whos: dict[Who, Who] = {}  # one Who per end, shared by its records (as a recorder's are)

    def who_of(index: int, connection: int, server: str, client: str, at: Any) -> Who:
        connection = number(index, connection)
        who = Who(connection, served_by.get(connection, server), client, at)
        return whos.setdefault(who, who)

    metas: dict[Meta, Meta] = {}  # and one Meta per kind of record of each end
    records: list[Record] = []
    for index, part in enumerate(parts):
        if "folded" in part:  # ends folded there are folded here too
            merged.folded.load(part["folded"])
        for end in part["ends"]:
            who = who_of(index, end["connection"], end["server"], end["client"], end["at"])
            merged.tally(who, end["sent"], end["received"], end["others"])
        for item in items[index]:
            if isinstance(item, dict):
                records.append(_broadcast(merged, item, partial(number, index)))
                continue
            who = who_of(index, item.connection, item.server, item.client, item.at)
            meta = Meta(item.kind, who, item.sender, item.type)
            meta = metas.setdefault(meta, meta)
            if item.kind == "message":
                records.append(MessageRecord(item.time, meta, item.size, item.head))
            elif item.kind != "skipped":  # skips travel inside their broadcast
                records.append(LifeRecord(item.time, meta, item.code, item.detail))
    records.sort(key=attrgetter("time"))  # stable: one end's order is kept on ties
    merged.load(records, max(taken | set(renumbered.values()), default=0) + 1)


def crashed(part: dict[str, Any], time_ns: int, why: str) -> None:
    """Record in ``part`` (an exported flow) the end of every connection its server ends
    still had open: their process was killed (``why``), so nothing else will ever say so.
    The connection ends as its clients saw it: 1006, no closing handshake."""
    events = [item for item in imported(part["fields"], part["events"]) if isinstance(item, Event)]
    ended = {event.connection for event in events if event.kind == "end"}
    seq = max((event.seq for event in events), default=0)
    for end in part["ends"]:
        if end["at"] == "server" and end["connection"] not in ended:
            seq += 1
            end["others"] += 1  # one more event of the end's, so totals stay exact
            event = Event(seq, time_ns, "end", end["connection"], end["server"], end["client"],
                          "server", None, None, 0, b"", 0, 1006, why, None)  # fmt: skip
            part["events"].append(
                [event._asdict()[name] if name != "head" else "" for name in part["fields"]]
            )


def _broadcast(merged: EventLog, item: dict[str, Any], renumber: Callable[[int], int]) -> Record:
    """An exported broadcast as a record of ``merged``: its connections' server ends there."""

    def end_of(connection: int) -> End:
        end = merged.server_end(renumber(connection))
        assert end is not None, "an exported broadcast names a connection without its server end"
        return end

    return broadcast_record(
        item["time"],
        item["type"],
        item["size"],
        item["head"].encode("latin-1"),
        [end_of(connection) for connection in item["connections"]],
        [(end_of(connection), why) for connection, why in item["skipped"]],
    )


def _connections_in(part: dict[str, Any], items: list[Event | dict[str, Any]]) -> set[int]:
    numbers = {end["connection"] for end in part["ends"]}
    for item in items:
        if isinstance(item, dict):
            numbers.update(item["connections"])
            numbers.update(connection for connection, _ in item["skipped"])
        else:
            numbers.add(item.connection)
    return numbers
