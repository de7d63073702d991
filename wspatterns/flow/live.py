"""A live view: a summary of a flow that redraws itself while messages move (notebooks only)."""

from __future__ import annotations

import asyncio
import html
import time
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from ..reports import ipython
from .labels import LANES
from .log import EventLog

if TYPE_CHECKING:
    from IPython.display import DisplayHandle


class LiveView:
    """A summary of a flow that redraws itself, at most ``rate`` times a second.

    In a notebook it updates in place while messages flow, for ``seconds`` at
    most or until :meth:`stop` (or the end of a ``with`` block). Outside a
    notebook it does nothing. Nothing else in the kit depends on it.
    """

    def __init__(self, flow: EventLog, *, rate: float = 10, seconds: float = 60) -> None:
        if not 0 < rate <= 10:
            raise InvalidArgumentError(
                f"rate must be between 0 and 10 updates a second; got {rate}."
            )
        self.flow = flow
        self.rate = rate
        self.seconds = seconds
        self.updates = 0
        self._handle: DisplayHandle | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True while it redraws itself: in a notebook, from :meth:`start` until
        :meth:`stop` or ``seconds`` later; never outside one."""
        return self._task is not None and not self._task.done()

    def start(self) -> LiveView:
        if ipython() is None or self._handle is not None:
            return self
        from IPython.display import display

        handle: DisplayHandle = display(self, display_id=True)
        self._handle = handle
        try:
            self._task = asyncio.get_running_loop().create_task(self._refresh(handle))
        except RuntimeError:
            pass  # no running loop: the view stays as first drawn
        return self

    async def _refresh(self, handle: DisplayHandle) -> None:
        seen = self.flow.recorded
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(1 / self.rate)
            if self.flow.recorded != seen:
                seen = self.flow.recorded
                self.updates += 1
                handle.update(self)

    def stop(self) -> None:
        """Stop updating, after one last redraw."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._handle is not None:
            self._handle.update(self)

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _summary(self) -> list[tuple[str, int, int, int]]:
        rows: dict[int, list[Any]] = {}
        for totals in self.flow.totals:
            who = totals.who
            row = rows.setdefault(who.connection, [who.client, 0, 0, 0])
            if who.at == "server":
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


def live(flow: EventLog, *, rate: float = 10, seconds: float = 60) -> LiveView:
    """Show a summary of ``flow`` that updates while messages flow (notebooks only)."""
    return LiveView(flow, rate=rate, seconds=seconds).start()
