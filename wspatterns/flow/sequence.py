"""Sequence diagrams: who sent what to whom, in order.

Drawn as SVG in notebooks and exported pages alike, and as
text everywhere else. Long flows show their first and last rows and count the
rest; clients beyond the first few share one lane. A ``broadcast()`` is one
fan-out step, its recipients in lane order (not in the order the call wrote
them, which for a set changes from run to run).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import InvalidArgumentError
from .events import Broadcast, Entry, Event, Kind, Side
from .labels import LANES, OTHERS, label, printable, server_lanes, servers_in
from .log import EventLog

#: Rows a sequence diagram shows before it summarises the middle.
LIMIT = 30

#: What a step says: an Event or a Broadcast until it is sure to be drawn, then a str.
Text = TypeVar("Text", bound=str | Event | Broadcast, covariant=True)


@dataclass(frozen=True)
class Step(Generic[Text]):
    """One row of a sequence diagram: an arrow between lanes, or a note over some.

    An arrow goes from ``lanes[0]`` to each of ``lanes[1:]``: to one lane for a
    message, to several for a broadcast, which also counts in ``others`` the
    recipients that share the last lane. ``count`` is how many messages it shows.
    """

    lanes: tuple[str, ...]  # (from, to, …) for an arrow; the lanes covered for a note
    text: Text  # an Event or a Broadcast until it is sure to be drawn: labels cost time
    arrow: bool = True
    dashed: bool = False
    count: int = 1
    others: int = 0  # recipients of a broadcast drawn as one shared lane


class SequenceDiagram:
    """A sequence diagram in three forms: ``mermaid``, ``svg`` and ``text``.

    A notebook, an HTML export or a static viewer shows the SVG; a terminal prints
    the text; ``mermaid`` is there to paste into Mermaid's own tools. The SVG is what
    a notebook gets, not the Mermaid: JupyterLab's Mermaid renderer writes the picture
    it draws back into the notebook, which then reads as changed just by being
    opened, and it shrinks a wide diagram's text to fit the cell instead of scrolling.
    """

    def __init__(self, lanes: list[str], steps: list[Step[str]]) -> None:
        self.lanes = lanes
        self.steps = steps
        self.mermaid = _mermaid(lanes, steps)
        self.svg = _svg(lanes, steps)
        self.text = _text(steps)

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> dict[str, str]:
        return {
            "image/svg+xml": self.svg,
            "text/plain": self.text,
        }

    def __repr__(self) -> str:
        return self.text


def sequence(
    flow: EventLog,
    *,
    limit: int = LIMIT,
    lanes: int = LANES,
    width: int = 20,
    order: Iterable[str] = (),
    clients: Iterable[str] | None = None,
) -> SequenceDiagram:
    """Draw ``flow`` as a sequence diagram, one arrow per message, one fan-out per broadcast.

    Lanes go clients first, then servers, each in the order they appear;
    ``order`` names lanes to put first, left to right, such as
    ``["alice", "worker-1", "redis", "worker-2", "bob"]``. ``clients`` draws only
    the connections of the clients it names, and the servers they reached: what
    one client went through in a crowded flow (``clients=["alice"]``).

    Each arrow shows the first ``width`` characters of its message (at most
    the 48 bytes a flow keeps). A message recorded at both ends is drawn once.
    A ``broadcast()`` is one step: an arrow from the server to each recipient,
    in lane order, then a note naming the connections it skipped, if any.
    Past ``limit`` rows, the first and last halves are drawn and the middle is
    counted. Past ``lanes`` clients, the rest share a lane and their arrows say
    who they are (a broadcast counts them: "and 995 others").
    """
    if limit < 2:
        raise InvalidArgumentError(f"limit must be at least 2 rows; got {limit}.")
    if width < 1:
        raise InvalidArgumentError(f"width must be at least 1 character; got {width}.")
    entries = flow.entries
    ends = flow.totals
    chosen = None if clients is None else set(clients)
    if chosen is not None:
        entries = [
            entry
            for entry in entries
            if (entry.client in chosen if isinstance(entry, Event) else
                any(who.client in chosen for who in entry.recipients)
                or any(who.client in chosen for who, _ in entry.skipped))
        ]  # fmt: skip
    servers = {end.who.server for end in ends if end.who.at == "server"}
    recording = {end.number for end in ends if end.who.at == "client"}
    server_lane = server_lanes(servers_in(entries, servers))
    found = list(_steps(entries, server_lane, recording, width, chosen))
    notes = []
    dropped = flow.dropped
    if dropped:
        notes.append(f"… {dropped:,} earlier events dropped (this flow keeps {flow.cap:,}) …")
    if len(found) > limit:
        hidden = found[limit // 2 : len(found) - limit // 2]
        messages = sum(step.count for step in hidden if step.arrow and not step.dashed)
        others = sum(1 for step in hidden if not step.arrow or step.dashed)
        text = f"… {messages:,} more {_plural(messages, 'message')}"
        if others:
            text += f", {others:,} other {_plural(others, 'step')}"
        found = [*found[: limit // 2], Step((), text + " …", arrow=False), *found[-(limit // 2) :]]
    steps = [drawn for step in found for drawn in _labelled(step, width, server_lane, chosen)]
    steps, names = _share_lanes(steps, lanes, set(server_lane.values()))
    first = list(order)
    unknown = [name for name in first if name not in names]
    if unknown:
        raise InvalidArgumentError(
            f"order names no lane {unknown[0]!r}; the lanes are: {', '.join(names)}"
        )
    names = [*first, *(name for name in names if name not in first)]
    steps = [_in_lane_order(step, names) for step in steps]
    steps = [Step((), note, arrow=False) for note in notes] + steps
    if not names:
        names = ["flow"]
        steps = [Step(("flow",), "nothing recorded yet", arrow=False)]
    everyone = (names[0], names[-1])
    steps = [step if step.lanes else Step(everyone, step.text, arrow=False) for step in steps]
    return SequenceDiagram(names, steps)


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def _labelled(
    step: Step[str | Event | Broadcast],
    width: int,
    server_lane: dict[str, str],
    chosen: set[str] | None = None,
) -> list[Step[str]]:
    """``step`` ready to draw: its words, and a broadcast's lanes (one step per server),
    to the ``chosen`` clients only if some are."""
    text = step.text
    if isinstance(text, Broadcast):
        words = label(text, width)
        fans: dict[str, list[str]] = {}
        for _, server, client, _ in sorted(set(text.recipients)):
            if chosen is not None and client not in chosen:
                continue
            fans.setdefault(server_lane.get(server, server), []).append(client)
        return [Step((lane, *clients), words, count=len(clients)) for lane, clients in fans.items()]
    if isinstance(text, Event):
        return [Step(step.lanes, label(text, width), step.arrow, step.dashed, step.count)]
    return [Step(step.lanes, text, step.arrow, step.dashed, step.count)]


def _steps(
    entries: list[Entry],
    server_lane: dict[str, str],
    recording: set[int],
    width: int,
    chosen: set[str] | None = None,
) -> Iterable[Step[str | Event | Broadcast]]:
    seen: set[tuple[int, Kind, Side | None, int]] = set()
    closed: set[int] = set()  # connections whose close frames are drawn
    for entry in entries:
        if isinstance(entry, Broadcast):
            if recording:  # the clients' records of what it delivered are drawn by it
                for connection, index in entry.deliveries:
                    if connection in recording:
                        seen.add((connection, "message", "server", index))
            if chosen is None:
                count = len(entry.connections)
            else:
                count = sum(who.client in chosen for who in entry.recipients)
            if count:
                yield Step((), entry, count=count)  # its lanes are worked out if drawn
            if entry.skips:
                note = _skipped(entry, server_lane, width, count, chosen)
                if note is not None:
                    yield note
            continue
        event = entry
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
            why = f": {event.detail}" if event.detail else ", no closing handshake"
            yield Step((event.client, server), f"connection lost ({code}{why})", False)
        elif event.kind == "error":
            yield Step((server,), f"⚠ handler raised {printable(event.detail, 60)}", False)


def _skipped(
    broadcast: Broadcast,
    server_lane: dict[str, str],
    width: int,
    sent: int,
    chosen: set[str] | None = None,
) -> Step[str] | None:
    """A note over the connections ``broadcast`` passed over (of ``chosen`` clients, if
    some are), saying why; None if it passed over none of them."""
    reasons: dict[str, list[str]] = {}
    lanes: dict[str, None] = {}
    for (_, server, client, _), why in sorted(broadcast.skipped):
        if chosen is not None and client not in chosen:
            continue
        reasons.setdefault(why, []).append(client)
        lanes.update({server_lane.get(server, server): None, client: None})
    if not reasons:
        return None
    text = "broadcast() skipped " + "; ".join(
        f"{', '.join(clients)} ({why})" for why, clients in reasons.items()
    )
    if not sent:
        text += f": {label(broadcast, width)}"
    return Step(tuple(lanes), text, arrow=False)


def _share_lanes(
    steps: list[Step[str]], most: int, servers: set[str]
) -> tuple[list[Step[str]], list[str]]:
    """Keep ``most`` client lanes; send the others' steps to one shared lane."""
    clients = list(
        dict.fromkeys(lane for step in steps for lane in step.lanes if lane not in servers)
    )
    kept = set(clients[: most - 1] if len(clients) > most else clients)
    shared = []
    for step in steps:
        outsiders = [lane for lane in step.lanes if lane not in kept and lane not in servers]
        if step.arrow and (len(step.lanes) > 2 or step.count > 1):  # a broadcast
            receivers = tuple(dict.fromkeys(lane for lane in step.lanes[1:] if lane in kept))
            if outsiders:
                receivers += (OTHERS,)
            step = Step((step.lanes[0], *receivers), step.text, True, False, step.count,
                        len(outsiders))  # fmt: skip
        elif outsiders:
            lanes = tuple(OTHERS if lane in outsiders else lane for lane in step.lanes)
            text = f"{outsiders[0]}: {step.text}" if step.arrow else step.text
            step = Step(lanes, text, step.arrow, step.dashed, step.count)
        shared.append(step)
    order = [lane for lane in clients if lane in kept]
    if len(kept) < len(clients):
        order.append(OTHERS)
    used = dict.fromkeys(lane for step in shared for lane in step.lanes)
    order += [lane for lane in used if lane in servers]
    return shared, order


def _in_lane_order(step: Step[str], names: list[str]) -> Step[str]:
    """A broadcast's recipients, left to right as the lanes are."""
    if not step.arrow or len(step.lanes) <= 2:
        return step
    place = {name: number for number, name in enumerate(names)}
    receivers = sorted(step.lanes[1:], key=place.__getitem__)
    return Step((step.lanes[0], *receivers), step.text, True, False, step.count, step.others)


def _mermaid(lanes: list[str], steps: list[Step[str]]) -> str:
    ids = {lane: f"p{number}" for number, lane in enumerate(lanes)}
    lines = ["sequenceDiagram"]
    lines += [f"    participant {ids[lane]} as {_mermaid_text(lane)}" for lane in lanes]
    for step in steps:
        if step.arrow and len(step.lanes) > 2:  # a broadcast: its arrows side by side
            source = ids[step.lanes[0]]
            for number, lane in enumerate(step.lanes[1:]):
                lines.append("    par broadcast" if number == 0 else "    and")
                text = _mermaid_text(_to(lane, step) + step.text)
                lines.append(f"        {source}->>{ids[lane]}: {text}")
            lines.append("    end")
        elif step.arrow:
            source, target = (ids[lane] for lane in step.lanes)
            arrow = "-->>" if step.dashed else "->>"
            text = _mermaid_text(_to(step.lanes[1], step) + step.text)
            lines.append(f"    {source}{arrow}{target}: {text}")
        else:
            over = ",".join(dict.fromkeys(ids[lane] for lane in step.lanes))
            lines.append(f"    Note over {over}: {_mermaid_text(step.text)}")
    return "\n".join(lines) + "\n"


def _to(lane: str, step: Step[str]) -> str:
    """What an arrow into the shared lane says before its text: how many it stands for."""
    return f"{step.others:,} others: " if lane == OTHERS and step.others else ""


_MERMAID_ENTITIES = {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;"}


def _mermaid_text(text: str) -> str:
    """Mermaid reads ``;``, ``#`` and angle brackets as syntax: spell them as entities."""
    return "".join(_MERMAID_ENTITIES.get(char, char) for char in text)


# SVG layout, in pixels; a character of the 12 px font is taken as 7 px wide.
_LANE, _WIDEST_LANE, _TOP, _ROW, _MARGIN, _CHAR = 170, 420, 56, 30, 20, 7


def _lane_width(lanes: list[str], steps: list[Step[str]]) -> int:
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


def _svg(lanes: list[str], steps: list[Step[str]]) -> str:
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
            f"{_svg_text(printable(lane, 20))}</text>"
        )
    for row, step in enumerate(steps):
        y = _TOP + _ROW * row + _ROW // 2
        if step.arrow:
            x1 = x[step.lanes[0]]
            ends = [x[lane] for lane in step.lanes[1:]]
            x2 = max(ends, key=lambda end: abs(end - x1))  # the farthest, for a broadcast
            direction = 1 if x2 > x1 else -1
            dash = ' stroke-dasharray="5 3"' if step.dashed else ""
            room = max((abs(x2 - x1) - 20) // _CHAR, 12)
            out.append(
                f'<line x1="{x1}" y1="{y}" x2="{x2 - 8 * direction}" y2="{y}" stroke="#333"{dash}/>'
            )
            for end in ends:  # one arrowhead per recipient
                back = end - 9 * direction
                out.append(
                    f'<polygon points="{end},{y} {back},{y - 4} {back},{y + 4}" fill="#333"/>'
                )
            text = step.text + (f" (and {step.others:,} others)" if step.others else "")
            out.append(
                f'<text x="{(x1 + x2) // 2}" y="{y - 5}" text-anchor="middle">'
                f"{_svg_text(printable(text, room))}</text>"
            )
        else:
            # Its first lane's left edge to its last lane's right edge, less 8 px a side, as
            # _lane_width counts it (an odd width halved down on both sides lost a character).
            left = min(x[lane] for lane in step.lanes) - lane_width // 2 + 8
            right = max(x[lane] for lane in step.lanes) - lane_width // 2 + lane_width - 8
            out.append(
                f'<rect x="{left}" y="{y - 11}" width="{right - left}" height="22" '
                'fill="#fff8c4" stroke="#cc9"/>'
            )
            room = max((right - left - 20) // _CHAR, 12)
            out.append(
                f'<text x="{(left + right) // 2}" y="{y + 4}" text-anchor="middle">'
                f"{_svg_text(printable(step.text, room))}</text>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_text(text: str) -> str:
    return html.escape(text, quote=True)


def _text(steps: list[Step[str]]) -> str:
    lines = []
    for step in steps:
        if step.arrow:
            arrow = "⇢" if step.dashed else "→"
            names = ", ".join(lane for lane in step.lanes[1:] if lane != OTHERS or not step.others)
            if step.others:
                names = " and ".join(filter(None, [names, f"{step.others:,} others"]))
            lines.append(f"{step.lanes[0]} {arrow} {names}: {step.text}")
        else:
            lines.append(f"[{step.text}]")
    return "\n".join(lines)
