"""A flow as numbers: every event as a table row, and statistics per connection."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .labels import preview
from .recorder import EventLog, Side

if TYPE_CHECKING:
    import pandas

COLUMNS = [
    "seq", "time_ms", "kind", "connection", "client", "server", "at",
    "from", "to", "type", "size", "preview", "code", "detail",
]  # fmt: skip


def table(flow: EventLog) -> pandas.DataFrame:
    """Every event kept by ``flow`` as a row: a pandas DataFrame.

    ``time_ms`` counts milliseconds from the first event kept; ``from`` and
    ``to`` name the sender and receiver of messages and close frames.
    """
    import pandas

    events = flow.events
    start = events[0].time if events else 0
    rows = []
    for event in events:
        ends = (event.client, event.server)
        sender, receiver = ends if event.sender == "client" else ends[::-1]
        carries = event.kind in ("message", "close")
        rows.append(
            (
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
        )
    frame = pandas.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"code": "Int64"})


STATS = [
    "client", "server", "client→server", "bytes client→server", "server→client",
    "bytes server→client", "seconds", "messages/s", "latency p50 ms", "latency p95 ms",
    "latency p99 ms", "latency pairs",
]  # fmt: skip


def stats(flow: EventLog) -> pandas.DataFrame:
    """One row per connection: messages and bytes each way, rate, latency percentiles.

    Message counts come from the flow's running totals, so they stay exact
    past the cap; bytes, rate and latency come from the events kept. Latency
    needs both ends of a message recorded in this flow (a kit server and a kit
    client sharing it); elsewhere it is left empty.
    """
    import numpy
    import pandas

    names: dict[int, tuple[str, str]] = {}
    counts: dict[tuple[int, Side, Side], int] = {}  # (connection, at, sender) -> messages
    for totals in flow.totals:
        connection, server, client, at = totals.who
        names[connection] = (client, server)
        other: Side = "client" if at == "server" else "server"
        counts[connection, at, at] = totals.sent
        counts[connection, at, other] = totals.received
    sizes: dict[tuple[int, Side, Side | None], int] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    sent: dict[tuple[int, Side | None, int], int] = {}
    latencies: dict[int, list[float]] = {}
    for event in flow.events:
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


