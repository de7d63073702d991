"""Flows recorded in several processes, put back together as one.

Worker processes record what their servers see; the notebook records what
its clients see. :func:`merge_into` joins them: both ends of one connection
become one connection again, and everything is put in the order it happened.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

from .events import Record, broadcast_record
from .recorder import CAP, EventLog, Recorder


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
    records: list[Record] = []
    for index, part in enumerate(parts):
        if "folded" in part:  # ends folded there are folded here too
            merged.folded.load(part["folded"])
        for connection, server, client, at, sent, received, others in part["ends"]:
            connection = number(index, connection)
            end = merged.end(connection, served_by.get(connection, server), client, at)
            end.sent, end.received, end.others, end.installed = sent, received, others, True
        for item in part["events"]:
            if isinstance(item, dict):
                records.append(_broadcast(merged, item, partial(number, index)))
                continue
            _, time_ns, kind, connection, server, client, at, sender, type_ = item[:9]
            size, head, _, code, detail = item[9:14]
            connection = number(index, connection)
            who = (connection, served_by.get(connection, server), client, at)
            meta = (kind, who, sender, type_)
            if kind == "message":
                records.append((time_ns, meta, size, head.encode("latin-1")))
            elif kind != "skipped":  # skips travel inside their broadcast
                records.append((time_ns, meta, code, detail))
    records.sort(key=lambda record: record[0])  # stable: one end's order is kept on ties
    merged.load(records, max(taken | set(renumbered.values()), default=0) + 1)


def crashed(part: dict[str, Any], time_ns: int, why: str) -> None:
    """Record in ``part`` (an exported flow) the end of every connection its server ends
    still had open: their process was killed (``why``), so nothing else will ever say so.
    The connection ends as its clients saw it: 1006, no closing handshake."""
    ended = {
        item[3] for item in part["events"] if not isinstance(item, dict) and item[2] == "end"
    }
    seq = max((item[0] for item in part["events"] if not isinstance(item, dict)), default=0)
    for end in part["ends"]:
        connection, server, client, at = end[:4]
        if at == "server" and connection not in ended:
            seq += 1
            end[6] += 1  # one more event of the end's ("others"), so totals stay exact
            part["events"].append(
                [seq, time_ns, "end", connection, server, client, at, None, None, 0, "", 0,
                 1006, why, None]
            )  # fmt: skip


def _broadcast(merged: EventLog, item: dict[str, Any], renumber: Callable[[int], int]) -> Record:
    """An exported broadcast as a record of ``merged``: its connections' server ends there."""

    def end_of(connection: int) -> Recorder:
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


def _connections_in(part: dict[str, Any]) -> set[int]:
    numbers = {end[0] for end in part["ends"]}
    for item in part["events"]:
        if isinstance(item, dict):
            numbers.update(item["connections"])
            numbers.update(connection for connection, _ in item["skipped"])
        else:
            numbers.add(item[3])
    return numbers
