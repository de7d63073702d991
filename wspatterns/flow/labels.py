"""Words and lanes for what a flow recorded, shared by every view.

A message becomes a short printable preview and a size; a close frame its
code and what the code means; clients beyond the first few share one lane.
"""

from __future__ import annotations

from collections.abc import Iterable

from websockets.frames import CLOSE_CODE_EXPLANATIONS

from .events import Broadcast, Entry, Event

#: Client lanes a diagram or timeline shows; further clients share one lane.
LANES = 6

OTHERS = "other clients"


# Words for what an event carried


def preview(event: Event | Broadcast, width: int = 20) -> str:
    """A short, printable rendering of a message's first bytes."""
    if isinstance(event, Event) and event.kind == "close":
        meaning = "" if event.code is None else CLOSE_CODE_EXPLANATIONS.get(event.code, "")
        text = f"close {event.code}" + (f" ({meaning})" if meaning else "")
        return text + (f" “{printable(event.detail, width)}”" if event.detail else "")
    if event.type == "binary":
        shown = " ".join(f"{byte:02x}" for byte in event.head[:6])
        more = " …" if event.size > 6 else ""
        return f"binary {shown}{more}".rstrip()
    cut = event.size > len(event.head)
    text = event.head.decode("utf-8", "ignore" if cut else "replace")
    return f"“{printable(text, width, cut)}”"


def printable(text: str, width: int, cut: bool = False) -> str:
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


def label(event: Event | Broadcast, width: int = 20) -> str:
    if isinstance(event, Event) and event.kind == "close":
        return preview(event, width)
    return f"{preview(event, width)} · {size(event.size)}"


def server_lanes(names: Iterable[str]) -> dict[str, str]:
    """Lane names for servers: just "server" when there is only one."""
    servers = list(dict.fromkeys(names))
    return {name: "server" if len(servers) == 1 else name for name in servers}


def servers_in(entries: list[Entry], every: set[str]) -> list[str]:
    """The servers of ``entries``, in the order they first appear; ``every`` is all the
    servers of their flow (with one, no broadcast needs looking into)."""
    names = dict.fromkeys(entry.server for entry in entries if entry.__class__ is Event)
    for entry in entries:
        if isinstance(entry, Broadcast):
            # With one server there is no need to look at each recipient.
            names.update(dict.fromkeys(every if len(every) == 1 else entry.servers))
    return list(names)
