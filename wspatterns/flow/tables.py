"""A flow as numbers: every event as a table row, and statistics per connection."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidArgumentError
from .events import Broadcast, Event, Side
from .labels import LANES, preview
from .log import EventLog

if TYPE_CHECKING:
    import pandas

COLUMNS = [
    "seq", "time_ms", "kind", "connection", "client", "server", "at",
    "from", "to", "type", "size", "preview", "code", "detail",
]  # fmt: skip

#: The columns of ``table(per="broadcast")``: how many connections each broadcast
#: reached and skipped (empty for other rows).
BROADCAST_COLUMNS = [*COLUMNS, "recipients", "skipped"]


def table(
    flow: EventLog, *, per: Literal["delivery", "broadcast"] = "delivery"
) -> pandas.DataFrame:
    """Every event kept by ``flow`` as a row: a pandas DataFrame.

    ``time_ms`` counts milliseconds from the first event kept; ``from`` and
    ``to`` name the sender and receiver of messages and close frames.

    By default (``per="delivery"``) each delivery of a ``broadcast()`` is a row
    of its own, and so is each connection it skipped (``kind`` "skipped"): the
    rows then count what :func:`stats` counts, and picking rows by client or
    connection works as for any other message. ``per="broadcast"`` gives each
    broadcast one row instead (``kind`` "broadcast", its recipients in ``to``),
    with two more columns, ``recipients`` and ``skipped``, counting them.
    """
    import pandas

    if per not in ("delivery", "broadcast"):
        raise InvalidArgumentError(f'per must be "delivery" or "broadcast"; got {per!r}.')
    entries = flow.entries
    start = entries[0].time if entries else 0
    rows: list[tuple[Any, ...]] = []
    for entry in entries:
        if isinstance(entry, Broadcast) and per == "broadcast":
            rows.append(_broadcast_row(entry, start))
            continue
        for event in [entry] if isinstance(entry, Event) else entry.events():
            ends = (event.client, event.server)
            sender, receiver = ends if event.sender == "client" else ends[::-1]
            carries = event.kind in ("message", "close", "skipped")
            row = (
                event.seq,
                (event.time - start) / 1e6,
                event.kind,
                event.connection,
                event.client,
                event.server,
                event.at,
                sender if carries else "",
                receiver if carries else "",
                event.type or "",
                event.size,
                preview(event) if carries else "",
                event.code,
                event.detail,
            )
            rows.append(row + (None, None) if per == "broadcast" else row)
    columns = BROADCAST_COLUMNS if per == "broadcast" else COLUMNS
    frame = pandas.DataFrame(rows, columns=columns)
    types = {"code": "Int64"}
    if per == "broadcast":
        types |= {"connection": "Int64", "recipients": "Int64", "skipped": "Int64"}
    return frame.astype(types)


def _broadcast_row(broadcast: Broadcast, start: int) -> tuple[Any, ...]:
    recipients = sorted(broadcast.recipients)
    names = [client for _, _, client, _ in recipients[:LANES]]
    if len(recipients) > LANES:
        names.append(f"and {len(recipients) - LANES:,} others")
    skipped = sorted(broadcast.skipped)
    servers = ", ".join(broadcast.servers)
    why = "; ".join(f"{who.client} ({reason})" for who, reason in skipped)
    return (
        broadcast.seq,
        (broadcast.time - start) / 1e6,
        "broadcast",
        None,
        ", ".join(names),
        servers,
        "server",
        servers,
        ", ".join(names),
        broadcast.type,
        broadcast.size,
        preview(broadcast),
        None,
        f"skipped {why}" if why else "",
        len(recipients),
        len(skipped),
    )


STATS = [
    "client", "server", "client→server", "bytes client→server", "server→client",
    "bytes server→client", "seconds", "messages/s", "latency p50 ms", "latency p95 ms",
    "latency p99 ms", "latency pairs",
]  # fmt: skip


def stats(flow: EventLog) -> pandas.DataFrame:
    """One row per connection: messages and bytes each way, rate, latency percentiles.

    Message counts come from the flow's running totals, so they stay exact
    past the cap, and count each delivery of a broadcast; bytes, rate and
    latency come from the events kept. Latency needs both ends of a message
    recorded in this flow (a kit server and a kit client sharing it);
    elsewhere it is left empty. A connection that is over and whose events
    were all dropped past the cap has no row: it is folded, its counts added
    up in ``flow.folded`` (see :attr:`~wspatterns.flow.EventLog.totals`).
    """
    import numpy
    import pandas

    names: dict[int, tuple[str, str]] = {}
    counts: dict[tuple[int, Side, Side], int] = {}  # (connection, at, sender) -> messages
    recording: set[int] = set()  # connections whose client end records here
    for totals in flow.totals:
        who = totals.who
        connection, at = who.connection, who.at
        names[connection] = (who.client, who.server)
        other: Side = "client" if at == "server" else "server"
        counts[connection, at, at] = totals.sent
        counts[connection, at, other] = totals.received
        if at == "client":
            recording.add(connection)
    sizes: dict[tuple[int, Side, Side | None], int] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    sent: dict[tuple[int, Side | None, int], int] = {}
    latencies: dict[int, list[float]] = {}
    for entry in flow.entries:
        if isinstance(entry, Broadcast):
            reached = Counter(entry.connections)
            for connection, times in reached.items():
                key: tuple[int, Side, Side | None] = (connection, "server", "server")
                sizes[key] = sizes.get(key, 0) + times * entry.size
            touched = set(reached).union(connection for connection, _ in entry.skips)
            for connection in touched.difference(first):
                first[connection] = entry.time
            last.update(dict.fromkeys(touched, entry.time))
            for connection, index in entry.deliveries:
                if connection in recording:
                    sent[connection, "server", index] = entry.time
            continue
        event = entry
        first.setdefault(event.connection, event.time)
        last[event.connection] = event.time
        if event.kind != "message":
            continue
        key = (event.connection, event.at, event.sender)
        sizes[key] = sizes.get(key, 0) + event.size
        pair = (event.connection, event.sender, event.index)
        if event.at == event.sender:
            sent[pair] = event.time
        elif pair in sent:
            latencies.setdefault(event.connection, []).append((event.time - sent[pair]) / 1e6)

    def way(connection: int, sender: Side) -> tuple[int, int]:
        """Messages and bytes from ``sender``, as its own end saw them if it recorded."""
        receiver: Side = "server" if sender == "client" else "client"
        for at in (sender, receiver):
            if (connection, at, sender) in counts:
                return counts[connection, at, sender], sizes.get((connection, at, sender), 0)
        return 0, 0

    rows = []
    for connection in sorted(names):
        up, down = way(connection, "client"), way(connection, "server")
        seconds = (last.get(connection, 0) - first.get(connection, 0)) / 1e9
        rate = (up[0] + down[0]) / seconds if seconds > 0 else math.nan
        measured = latencies.get(connection, [])
        if measured:
            p50, p95, p99 = numpy.percentile(measured, [50, 95, 99])
        else:
            p50 = p95 = p99 = math.nan
        rows.append(
            (connection, *names[connection], up[0], up[1], down[0], down[1],
             seconds, rate, p50, p95, p99, len(measured))
        )  # fmt: skip
    frame = pandas.DataFrame(rows, columns=["connection", *STATS])
    return frame.set_index("connection")
