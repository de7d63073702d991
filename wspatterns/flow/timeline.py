"""Timelines: a flow's messages over time, one lane per connection, a send joined to its receipt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import Broadcast, Event, Side
from .labels import LANES, OTHERS, server_lanes, servers_in
from .log import EventLog

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def timeline(flow: EventLog, *, lanes: int = LANES, title: str | None = None) -> Figure:
    """Plot ``flow`` over time: a lane per participant, a dot per message sent.

    When both ends recorded a message, a line joins where it was sent to where
    it was received, so its slope shows the latency. A broadcast is one dot at
    its server, joined to each receipt its clients recorded; a connection it
    skipped is a cross in that client's lane. Returns the matplotlib Figure (it
    displays itself in a notebook).
    """
    import matplotlib.pyplot as pyplot
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    entries = flow.entries
    servers = {end.who.server for end in flow.totals if end.who.at == "server"}
    recording = {end.number for end in flow.totals if end.who.at == "client"}
    clients = list(
        dict.fromkeys(
            client
            for entry in entries
            for client in ([entry.client] if isinstance(entry, Event) else _clients(entry))
        )
    )
    server_lane = server_lanes(servers_in(entries, servers))
    shown = clients if len(clients) <= lanes else [*clients[: lanes - 1], OTHERS]
    order = shown + list(dict.fromkeys(server_lane.values())) or ["nothing recorded yet"]
    row = {name: number for number, name in enumerate(order)}

    def lane(event: Event, who: Side | None) -> int:
        if who == "server":
            return row[server_lane[event.server]]
        return row.get(event.client, row.get(OTHERS, 0))

    start = entries[0].time if entries else 0
    sends: dict[tuple[int, Side | None, int], tuple[float, int]] = {}
    opened: set[int] = set()
    marks: dict[str, list[tuple[float, int]]] = {
        "open": [],
        "sent": [],
        "received": [],
        "close": [],
        "error": [],
        "skipped": [],
    }
    joins = []
    for entry in entries:
        if isinstance(entry, Broadcast):
            t = (entry.time - start) / 1e6
            for server in entry.servers:  # one dot per server, for all its deliveries
                marks["sent"].append((t, row[server_lane[server]]))
            if recording:  # receipts to join to
                at = {who.connection: row[server_lane[who.server]] for who in entry.recipients}
                for connection, index in entry.deliveries:
                    if connection in recording:
                        sends[connection, "server", index] = (t, at[connection])
            for who, _ in entry.skipped:
                marks["skipped"].append((t, row.get(who.client, row.get(OTHERS, 0))))
            continue
        event = entry
        t = (event.time - start) / 1e6
        if event.kind == "message":
            key = (event.connection, event.sender, event.index)
            if event.at == event.sender:
                sends[key] = (t, lane(event, event.sender))
                marks["sent"].append(sends[key])
            else:
                receiver: Side = "client" if event.sender == "server" else "server"
                point = (t, lane(event, receiver))
                marks["received"].append(point)
                if key in sends:
                    joins.append([sends[key], point])
        elif event.kind == "open" and event.connection not in opened:
            opened.add(event.connection)  # once per connection, whichever end saw it first
            marks["open"].append((t, lane(event, "client")))
        elif event.kind == "close" and event.at == event.sender:
            marks["close"].append((t, lane(event, event.sender)))
        elif event.kind == "error":
            marks["error"].append((t, lane(event, "server")))

    figure, axes = pyplot.subplots(figsize=(9, 1.2 + 0.45 * max(len(order), 1)))
    pyplot.close(figure)  # shown once, by being returned, not again by pyplot
    axes.add_collection(LineCollection(joins, colors="#88a", linewidths=0.8, alpha=0.6))
    styles: dict[str, tuple[str, str, float]] = {  # marker, color, size
        "open": (">", "#393", 30),
        "sent": ("o", "#336", 14),
        "received": ("|", "#c60", 60),
        "close": ("x", "#999", 30),
        "error": ("*", "#d00", 90),
        "skipped": ("x", "#d60", 40),
    }
    for kind, points in marks.items():
        if points:
            xs, ys = zip(*points, strict=True)
            marker, color, size = styles[kind]
            axes.scatter(xs, ys, zorder=3, marker=marker, color=color, s=size)
    axes.set_yticks(range(len(order)), order)
    axes.set_ylim(len(order) - 0.5, -0.5)
    axes.set_xlabel("milliseconds since the first event")
    axes.grid(axis="x", alpha=0.3)
    axes.autoscale(axis="x")
    axes.set_title(title or f"{len(flow):,} events over time", loc="left")
    shown_kinds = ["open", "sent", "received", "close", "error"]
    if marks["skipped"]:
        shown_kinds.append("skipped")
    handles = [
        Line2D([], [], linestyle="", marker=styles[kind][0], color=styles[kind][1], label=kind)
        for kind in shown_kinds
    ]
    handles.append(Line2D([], [], color="#88a", label="sent → received"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    figure.tight_layout()
    return figure


def _clients(broadcast: Broadcast) -> list[str]:
    """The clients a broadcast reached or skipped, by connection number."""
    ends = set(broadcast.recipients).union(who for who, _ in broadcast.skipped)
    return [who.client for who in sorted(ends)]
