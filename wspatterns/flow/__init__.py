"""The flow of messages: recorded as it happens, drawn when you ask.

* :mod:`~wspatterns.flow.records` — what a flow stores, one named record per event;
* :mod:`~wspatterns.flow.recorder` — the :class:`Recorder` every kit connection
  carries, which appends them;
* :mod:`~wspatterns.flow.log` — the :class:`EventLog` that keeps them, with a cap;
* :mod:`~wspatterns.flow.events` — :class:`Event` and :class:`Broadcast`, what a
  flow holds as the views read it;
* :mod:`~wspatterns.flow.recording` — :class:`Recording`, what the kit's
  connections add to websockets';
* :mod:`~wspatterns.flow.folding` — :class:`Folded`, connections a flow no longer
  keeps, added up, so that its memory stays bounded by its cap;
* :mod:`~wspatterns.flow.merging` — flows of several processes joined as one;
* the views, one module each: :mod:`~wspatterns.flow.sequence`,
  :mod:`~wspatterns.flow.timeline`, :mod:`~wspatterns.flow.tables` (``table``
  and ``stats``), :mod:`~wspatterns.flow.live`.

:class:`Flow` is the event log with the views as methods: ``server.flow.sequence()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import HEAD, Broadcast, Event, Kind, Side, Who
from .folding import Folded
from .live import LiveView, live
from .log import CAP, EventLog
from .merging import exported, merge_into, merged_cap
from .recorder import FANOUT, Recorder
from .recording import Recording
from .sequence import SequenceDiagram, sequence
from .tables import stats, table
from .timeline import timeline

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure


class Flow(EventLog):
    """A record of messages between servers and clients, kept in memory, with its pictures.

    At most ``cap`` events are kept; past that the oldest are dropped and
    counted in ``dropped``. Per-connection totals (``totals``) stay exact
    whatever is dropped. A connection that is over and whose events were all
    dropped leaves ``totals`` and ``stats()``: its counts are added up, exactly,
    in ``folded``, so that connections coming and going cannot grow a flow past
    what its cap allows. Share one flow between several servers and clients by
    passing ``flow=`` to :func:`~wspatterns.serve` and :func:`~wspatterns.connect`.
    """

    def sequence(self, **options: Any) -> SequenceDiagram:
        """A sequence diagram: SVG in notebooks and exports, text elsewhere, Mermaid on request."""
        return sequence(self, **options)

    def timeline(self, **options: Any) -> Figure:
        """A matplotlib swimlane plot over time, sent→received pairs joined."""
        return timeline(self, **options)

    def table(self, **options: Any) -> pandas.DataFrame:
        """The events as a pandas DataFrame: one row per event, or per broadcast (``per=``)."""
        return table(self, **options)

    def stats(self) -> pandas.DataFrame:
        """Per connection: messages and bytes each way, rate, and latency percentiles.

        A row for each connection in ``totals``: those folded away are in ``folded``."""
        return stats(self)

    def live(self, **options: Any) -> LiveView:
        """A view that keeps itself up to date while messages flow (in a notebook)."""
        return live(self, **options)


def merge(first: EventLog | dict[str, Any], *others: EventLog | dict[str, Any]) -> Flow:
    """One flow holding the events of several, in the order they happened.

    Each argument is a flow or what :meth:`Flow.export` made of one, in this
    process or another (worker processes send theirs). The first keeps its
    connection numbers; both ends of a connection recorded in two flows
    become one connection again. The result is a new flow, a snapshot.
    """
    parts = exported(first, *others)
    merged = Flow(merged_cap(parts), token=parts[0]["token"])
    merge_into(merged, parts)
    return merged


__all__ = [
    "CAP",
    "FANOUT",
    "HEAD",
    "Broadcast",
    "Event",
    "EventLog",
    "Flow",
    "Folded",
    "Kind",
    "LiveView",
    "Recorder",
    "Recording",
    "SequenceDiagram",
    "Side",
    "Who",
    "live",
    "merge",
    "sequence",
    "stats",
    "table",
    "timeline",
]
