"""The pictures: what a :class:`~wspatterns.flow.Flow` recorded, drawn five ways.

* :func:`sequence` — who sent what to whom, in order (Mermaid, SVG, text);
* :func:`timeline` — the same messages over time, one lane per connection;
* :func:`table` — every event as a row of a pandas DataFrame;
* :func:`stats` — per connection: counts, bytes, rate, latency;
* :func:`live` — a summary that keeps itself up to date while messages flow.

Views read ``flow.events`` and ``flow.totals``, nothing else. None of them
raises on what a flow can hold: empty flows, binary or empty messages, text
cut in the middle of a character, handlers that crashed.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from websockets.frames import CLOSE_CODE_EXPLANATIONS

from .flow import Event, Flow

#: Rows a sequence diagram shows before it summarises the middle.
LIMIT = 30

#: Client lanes a diagram or timeline shows; further clients share one lane.
LANES = 6

OTHERS = "other clients"


# Words for what an event carried


def preview(event: Event, width: int = 20) -> str:
    """A short, printable rendering of a message's first bytes."""
    if event.kind == "close":
        meaning = CLOSE_CODE_EXPLANATIONS.get(event.code, "")
        text = f"close {event.code}" + (f" ({meaning})" if meaning else "")
        return text + (f" “{_printable(event.detail, width)}”" if event.detail else "")
    if event.type == "binary":
        shown = " ".join(f"{byte:02x}" for byte in event.head[:6])
        more = " …" if event.size > 6 else ""
        return f"binary {shown}{more}".rstrip()
    cut = event.size > len(event.head)
    text = event.head.decode("utf-8", "ignore" if cut else "replace")
    return f"“{_printable(text, width, cut)}”"


def _printable(text: str, width: int, cut: bool = False) -> str:
    text = "".join("⏎" if char == "\n" else char if char.isprintable() else "·" for char in text)
    if len(text) > width or cut:
        return text[:width] + "…"
    return text


def size(count: float) -> str:
    """Bytes in words: ``5 B``, ``1.2 kB``, ``3.4 MB``."""
    for unit in ("B", "kB", "MB"):
        if count < 1000 or unit == "MB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def label(event: Event, width: int = 20) -> str:
    if event.kind == "close":
        return preview(event, width)
    return f"{preview(event, width)} · {size(event.size)}"


# Sequence diagrams


@dataclass(frozen=True)
class Step:
    """One row of a sequence diagram: an arrow between two lanes, or a note over some."""

    lanes: tuple[str, ...]  # (from, to) for an arrow; the lanes covered for a note
    text: str | Event  # an Event until it is sure to be drawn: labels cost time
    arrow: bool = True
    dashed: bool = False


class SequenceDiagram:
    """A sequence diagram in three forms: ``mermaid``, ``svg`` and ``text``.

    In a notebook, JupyterLab draws the Mermaid; an HTML export or a static
    viewer shows the SVG; a terminal prints the text.
    """

    def __init__(self, lanes: list[str], steps: list[Step]) -> None:
        self.lanes = lanes
        self.steps = steps
        self.mermaid = _mermaid(lanes, steps)
        self.svg = _svg(lanes, steps)
        self.text = _text(steps)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return {
            "text/vnd.mermaid": self.mermaid,
            "image/svg+xml": self.svg,
            "text/plain": self.text,
        }

    def __repr__(self) -> str:
        return self.text


def sequence(
    flow: Flow,
    *,
    limit: int = LIMIT,
    lanes: int = LANES,
    width: int = 20,
    order: Iterable[str] = (),
) -> SequenceDiagram:
    """Draw ``flow`` as a sequence diagram, one arrow per message.

    Lanes go clients first, then servers, each in the order they appear;
    ``order`` names lanes to put first, left to right, such as
    ``["alice", "worker-1", "redis", "worker-2", "bob"]``.

    Each arrow shows the first ``width`` characters of its message (at most
    the 48 bytes a flow keeps). A message recorded at both ends is drawn once.
    Past ``limit`` rows, the first and last halves are drawn and the middle is
    counted. Past ``lanes`` clients, the rest share a lane and their arrows say
    who they are.
    """
    if limit < 2:
        raise ValueError(f"limit must be at least 2 rows; got {limit}.")
    if width < 1:
        raise ValueError(f"width must be at least 1 character; got {width}.")
    events = flow.events
    server_lane = _server_lanes(events)
    steps = list(_steps(events, server_lane))
    notes = []
    if flow.dropped:
        notes.append(f"… {flow.dropped:,} earlier events dropped (this flow keeps {flow.cap:,}) …")
    if len(steps) > limit:
        hidden = steps[limit // 2 : len(steps) - limit // 2]
        messages = sum(1 for step in hidden if step.arrow and not step.dashed)
        others = len(hidden) - messages
        text = f"… {messages:,} more {_plural(messages, 'message')}"
        if others:
            text += f", {others:,} other {_plural(others, 'step')}"
        steps = [*steps[: limit // 2], Step((), text + " …", arrow=False), *steps[-(limit // 2) :]]
    steps = [_labelled(step, width) for step in steps]
    steps, names = _share_lanes(steps, lanes, set(server_lane.values()))
    first = list(order)
    unknown = [name for name in first if name not in names]
    if unknown:
        raise ValueError(f"order names no lane {unknown[0]!r}; the lanes are: {', '.join(names)}")
    names = [*first, *(name for name in names if name not in first)]
    steps = [Step((), note, arrow=False) for note in notes] + steps
    if not names:
        names = ["flow"]
        steps = [Step(("flow",), "nothing recorded yet", arrow=False)]
    everyone = (names[0], names[-1])
    steps = [step if step.lanes else Step(everyone, step.text, arrow=False) for step in steps]
    return SequenceDiagram(names, steps)


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def _labelled(step: Step, width: int) -> Step:
    if isinstance(step.text, Event):
        return Step(step.lanes, label(step.text, width), step.arrow, step.dashed)
    return step


def _server_lanes(events: list[Event]) -> dict[str, str]:
    """Lane names for servers: just "server" when there is only one."""
    servers = list(dict.fromkeys(event.server for event in events))
    return {name: "server" if len(servers) == 1 else name for name in servers}


def _steps(events: list[Event], server_lane: dict[str, str]) -> Iterable[Step]:
    seen: set[tuple] = set()
    closed: set[int] = set()  # connections whose close frames are drawn
    for event in events:
        server = server_lane[event.server]
        key = (event.connection, event.kind, event.sender, event.index)
        if key in seen:
            continue  # the other end's record of a message already drawn
        seen.add(key)
        if event.kind in ("message", "close"):
            ends = (event.client, server) if event.sender == "client" else (server, event.client)
            if event.kind == "close":
                closed.add(event.connection)
            yield Step(ends, event, dashed=event.kind == "close")  # labelled only if drawn
        elif event.kind == "open":
            yield Step((event.client, server), f"{event.client} connects to {event.detail}", False)
        elif event.kind == "end" and event.connection not in closed:
            code = event.code or 1006
            yield Step(
                (event.client, server), f"connection lost ({code}, no closing handshake)", False
            )
        elif event.kind == "error":
            yield Step((server,), f"⚠ handler raised {_printable(event.detail, 60)}", False)


def _share_lanes(steps: list[Step], most: int, servers: set[str]) -> tuple[list[Step], list[str]]:
    """Keep ``most`` client lanes; send the others' steps to one shared lane."""
    clients = list(
        dict.fromkeys(lane for step in steps for lane in step.lanes if lane not in servers)
    )
    kept = set(clients[: most - 1] if len(clients) > most else clients)
    shared = []
    for step in steps:
        outsiders = [lane for lane in step.lanes if lane not in kept and lane not in servers]
        if outsiders:
            lanes = tuple(OTHERS if lane in outsiders else lane for lane in step.lanes)
            text = f"{outsiders[0]}: {step.text}" if step.arrow else step.text
            step = Step(lanes, text, step.arrow, step.dashed)
        shared.append(step)
    order = [lane for lane in clients if lane in kept]
    if len(kept) < len(clients):
        order.append(OTHERS)
    used = dict.fromkeys(lane for step in shared for lane in step.lanes)
    order += [lane for lane in used if lane in servers]
    return shared, order


def _mermaid(lanes: list[str], steps: list[Step]) -> str:
    ids = {lane: f"p{number}" for number, lane in enumerate(lanes)}
    lines = ["sequenceDiagram"]
    lines += [f"    participant {ids[lane]} as {_mermaid_text(lane)}" for lane in lanes]
    for step in steps:
        if step.arrow:
            source, target = (ids[lane] for lane in step.lanes)
            arrow = "-->>" if step.dashed else "->>"
            lines.append(f"    {source}{arrow}{target}: {_mermaid_text(step.text)}")
        else:
            over = ",".join(dict.fromkeys(ids[lane] for lane in step.lanes))
            lines.append(f"    Note over {over}: {_mermaid_text(step.text)}")
    return "\n".join(lines) + "\n"


_MERMAID_ENTITIES = {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;"}


def _mermaid_text(text: str) -> str:
    """Mermaid reads ``;``, ``#`` and angle brackets as syntax: spell them as entities."""
    return "".join(_MERMAID_ENTITIES.get(char, char) for char in text)


# SVG layout, in pixels; a character of the 12 px font is taken as 7 px wide.
_LANE, _WIDEST_LANE, _TOP, _ROW, _MARGIN, _CHAR = 170, 420, 56, 30, 20, 7


def _lane_width(lanes: list[str], steps: list[Step]) -> int:
    """Lanes wide enough for every label (up to a limit), so few labels are cut short."""
    index = {lane: number for number, lane in enumerate(lanes)}
    need = _LANE
    for step in steps:
        spots = sorted(index[lane] for lane in step.lanes)
        if not spots:
            continue
        span = spots[-1] - spots[0] + (0 if step.arrow else 1)
        padding = 20 if step.arrow else 36  # a note's box is 16 px narrower than its lanes
        need = max(need, -(-(len(step.text) * _CHAR + padding) // max(span, 1)))
    return min(need, _WIDEST_LANE)


def _svg(lanes: list[str], steps: list[Step]) -> str:
    lane_width = _lane_width(lanes, steps)
    x = {lane: _MARGIN + lane_width // 2 + number * lane_width for number, lane in enumerate(lanes)}
    width = 2 * _MARGIN + lane_width * len(lanes)
    bottom = _TOP + _ROW * len(steps) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{bottom + 10}" '
        f'viewBox="0 0 {width} {bottom + 10}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{bottom + 10}" fill="white"/>',
    ]
    for lane, middle in x.items():
        out.append(
            f'<line x1="{middle}" y1="{_TOP - 14}" x2="{middle}" y2="{bottom}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
        )
        out.append(
            f'<rect x="{middle - 75}" y="8" width="150" height="28" rx="4" '
            'fill="#eaeaf7" stroke="#669"/>'
        )
        out.append(
            f'<text x="{middle}" y="27" text-anchor="middle" font-weight="bold">'
            f"{_svg_text(_printable(lane, 20))}</text>"
        )
    for row, step in enumerate(steps):
        y = _TOP + _ROW * row + _ROW // 2
        if step.arrow:
            x1, x2 = (x[lane] for lane in step.lanes)
            direction = 1 if x2 > x1 else -1
            dash = ' stroke-dasharray="5 3"' if step.dashed else ""
            room = max((abs(x2 - x1) - 20) // _CHAR, 12)
            out.append(
                f'<line x1="{x1}" y1="{y}" x2="{x2 - 8 * direction}" y2="{y}" stroke="#333"{dash}/>'
            )
            back = x2 - 9 * direction
            out.append(f'<polygon points="{x2},{y} {back},{y - 4} {back},{y + 4}" fill="#333"/>')
            out.append(
                f'<text x="{(x1 + x2) // 2}" y="{y - 5}" text-anchor="middle">'
                f"{_svg_text(_printable(step.text, room))}</text>"
            )
        else:
            left = min(x[lane] for lane in step.lanes) - lane_width // 2 + 8
            right = max(x[lane] for lane in step.lanes) + lane_width // 2 - 8
            out.append(
                f'<rect x="{left}" y="{y - 11}" width="{right - left}" height="22" '
                'fill="#fff8c4" stroke="#cc9"/>'
            )
            room = max((right - left - 20) // _CHAR, 12)
            out.append(
                f'<text x="{(left + right) // 2}" y="{y + 4}" text-anchor="middle">'
                f"{_svg_text(_printable(step.text, room))}</text>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_text(text: str) -> str:
    return html.escape(text, quote=True)


def _text(steps: list[Step]) -> str:
    lines = []
    for step in steps:
        if step.arrow:
            arrow = "⇢" if step.dashed else "→"
            lines.append(f"{step.lanes[0]} {arrow} {step.lanes[1]}: {step.text}")
        else:
            lines.append(f"[{step.text}]")
    return "\n".join(lines)


# Tables

COLUMNS = [
    "seq", "time_ms", "kind", "connection", "client", "server", "at",
    "from", "to", "type", "size", "preview", "code", "detail",
]  # fmt: skip


def table(flow: Flow):
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


def stats(flow: Flow):
    """One row per connection: messages and bytes each way, rate, latency percentiles.

    Message counts come from the flow's running totals, so they stay exact
    past the cap; bytes, rate and latency come from the events kept. Latency
    needs both ends of a message recorded in this flow (a kit server and a kit
    client sharing it); elsewhere it is left empty.
    """
    import numpy
    import pandas

    names: dict[int, tuple[str, str]] = {}
    counts: dict[tuple[int, str, str], int] = {}  # (connection, at, sender) -> messages
    for totals in flow.totals:
        connection, server, client, at = totals.who
        names[connection] = (client, server)
        other = "client" if at == "server" else "server"
        counts[connection, at, at] = totals.sent
        counts[connection, at, other] = totals.received
    sizes: dict[tuple[int, str, str], int] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    sent: dict[tuple, int] = {}
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

    def way(connection: int, sender: str) -> tuple[int, int]:
        """Messages and bytes from ``sender``, as its own end saw them if it recorded."""
        receiver = "server" if sender == "client" else "client"
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


# Timelines


def timeline(flow: Flow, *, lanes: int = LANES, title: str | None = None):
    """Plot ``flow`` over time: a lane per participant, a dot per message sent.

    When both ends recorded a message, a line joins where it was sent to where
    it was received, so its slope shows the latency. Returns the matplotlib
    Figure (it displays itself in a notebook).
    """
    import matplotlib.pyplot as pyplot
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    events = flow.events
    clients = list(dict.fromkeys(event.client for event in events))
    server_lane = _server_lanes(events)
    shown = clients if len(clients) <= lanes else [*clients[: lanes - 1], OTHERS]
    order = shown + list(dict.fromkeys(server_lane.values())) or ["nothing recorded yet"]
    row = {name: number for number, name in enumerate(order)}

    def lane(event: Event, who: str | None) -> int:
        if who == "server":
            return row[server_lane[event.server]]
        return row.get(event.client, row.get(OTHERS, 0))

    start = events[0].time if events else 0
    sends: dict[tuple, tuple[float, int]] = {}
    opened: set[int] = set()
    marks: dict[str, list[tuple[float, int]]] = {
        "open": [],
        "sent": [],
        "received": [],
        "close": [],
        "error": [],
    }
    joins = []
    for event in events:
        t = (event.time - start) / 1e6
        if event.kind == "message":
            key = (event.connection, event.sender, event.index)
            if event.at == event.sender:
                sends[key] = (t, lane(event, event.sender))
                marks["sent"].append(sends[key])
            else:
                receiver = "client" if event.sender == "server" else "server"
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
    styles = {
        "open": dict(marker=">", color="#393", s=30),
        "sent": dict(marker="o", color="#336", s=14),
        "received": dict(marker="|", color="#c60", s=60),
        "close": dict(marker="x", color="#999", s=30),
        "error": dict(marker="*", color="#d00", s=90),
    }
    for kind, points in marks.items():
        if points:
            xs, ys = zip(*points, strict=True)
            axes.scatter(xs, ys, zorder=3, **styles[kind])
    axes.set_yticks(range(len(order)), order)
    axes.set_ylim(len(order) - 0.5, -0.5)
    axes.set_xlabel("milliseconds since the first event")
    axes.grid(axis="x", alpha=0.3)
    axes.autoscale(axis="x")
    axes.set_title(title or f"{len(events):,} events over time", loc="left")
    handles = [
        Line2D(
            [], [], linestyle="", **{k: v for k, v in styles[kind].items() if k != "s"}, label=kind
        )
        for kind in ("open", "sent", "received", "close", "error")
    ]
    handles.append(Line2D([], [], color="#88a", label="sent → received"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    figure.tight_layout()
    return figure


# Live view


class LiveView:
    """A summary of a flow that redraws itself, at most ``rate`` times a second.

    In a notebook it updates in place while messages flow, for ``seconds`` at
    most or until :meth:`stop` (or the end of a ``with`` block). Outside a
    notebook it does nothing. Nothing else in the kit depends on it.
    """

    def __init__(self, flow: Flow, *, rate: float = 10, seconds: float = 60) -> None:
        if not 0 < rate <= 10:
            raise ValueError(f"rate must be between 0 and 10 updates a second; got {rate}.")
        self.flow = flow
        self.rate = rate
        self.seconds = seconds
        self.updates = 0
        self._handle = None
        self._task: asyncio.Task | None = None

    def start(self) -> LiveView:
        from .errors import _ipython

        if _ipython() is None or self._handle is not None:
            return self
        from IPython.display import display

        self._handle = display(self, display_id=True)
        try:
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        except RuntimeError:
            pass  # no running loop: the view stays as first drawn
        return self

    async def _refresh(self) -> None:
        seen = self.flow.recorded
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(1 / self.rate)
            if self.flow.recorded != seen:
                seen = self.flow.recorded
                self.updates += 1
                self._handle.update(self)

    def stop(self) -> None:
        """Stop updating, after one last redraw."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._handle is not None:
            self._handle.update(self)

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _summary(self) -> list[tuple[str, int, int, int]]:
        rows: dict[int, list] = {}
        for totals in self.flow.totals:
            connection, server, client, at = totals.who
            row = rows.setdefault(connection, [client, 0, 0, 0])
            if at == "server":
                row[1] = totals.received
                row[2] = totals.sent
            elif not row[1] and not row[2]:
                row[1], row[2] = totals.sent, totals.received
            row[3] += totals.events
        return [tuple(row) for row in rows.values()]

    def __repr__(self) -> str:
        rows = self._summary()
        lines = [f"live: {self.flow.recorded:,} events on {len(rows)} connections"]
        lines += [
            f"  {client}: {up:,} sent, {down:,} received" for client, up, down, _ in rows[-LANES:]
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = self._summary()
        body = "".join(
            f"<tr><td>{html.escape(client)}</td><td>{up:,}</td><td>{down:,}</td></tr>"
            for client, up, down, _ in rows[-LANES:]
        )
        more = f"<p>… and {len(rows) - LANES} more connections</p>" if len(rows) > LANES else ""
        return (
            f"<b>live</b>: {self.flow.recorded:,} events on {len(rows)} connections"
            "<table><tr><th>client</th><th>sent</th><th>received</th></tr>"
            f"{body}</table>{more}"
        )


def live(flow: Flow, *, rate: float = 10, seconds: float = 60) -> LiveView:
    """Show a summary of ``flow`` that updates while messages flow (notebooks only)."""
    return LiveView(flow, rate=rate, seconds=seconds).start()
