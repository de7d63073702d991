"""Words and lanes for what a flow recorded, shared by every view.

A message becomes a short printable preview and a size; a close frame its
code and what the code means; clients beyond the first few share one lane.
"""

from __future__ import annotations

from websockets.frames import CLOSE_CODE_EXPLANATIONS

from .recorder import Event

#: Client lanes a diagram or timeline shows; further clients share one lane.
LANES = 6

OTHERS = "other clients"


# Words for what an event carried


def preview(event: Event, width: int = 20) -> str:
    """A short, printable rendering of a message's first bytes."""
    if event.kind == "close":
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


def label(event: Event, width: int = 20) -> str:
    if event.kind == "close":
        return preview(event, width)
    return f"{preview(event, width)} · {size(event.size)}"



def server_lanes(events: list[Event]) -> dict[str, str]:
    """Lane names for servers: just "server" when there is only one."""
    servers = list(dict.fromkeys(event.server for event in events))
    return {name: "server" if len(servers) == 1 else name for name in servers}


