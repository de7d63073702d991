"""Experiments the lessons run to show where a pattern bends: one short call each.

Each experiment starts its own servers and clients with the kit, bounds every
wait, cleans up after itself, and returns numbers (or a DataFrame, or a
figure) for the lesson to show. One module per lesson's needs:

* :mod:`~wspatterns.experiments.pauses` — lesson 02: where a producer stalled;
* :mod:`~wspatterns.experiments.tasks` — lesson 03: the tasks a handler leaves behind;
* :mod:`~wspatterns.experiments.queue_workers` — lesson 03b: a team of workers, a bounded queue;
* :mod:`~wspatterns.experiments.buffers` — lessons 03b and 04: small, predictable OS buffers.

The broadcast experiment of lesson 04b lives with the strategies it measures, in
:mod:`wspatterns.broadcast`.
"""

from __future__ import annotations

from .buffers import limit_os_buffers
from .pauses import Pause, longest_pause
from .queue_workers import (
    WORKER_COUNTS,
    Backpressure,
    Span,
    WorkLog,
    backpressure_experiment,
    ideal_rate,
    workers_experiment,
)
from .tasks import (
    cancel_handler,
    cancel_running,
    come_and_go,
    count_leftovers,
    leftovers_plot,
    still_running,
)

__all__ = [
    "WORKER_COUNTS",
    "Backpressure",
    "Pause",
    "Span",
    "WorkLog",
    "backpressure_experiment",
    "cancel_handler",
    "cancel_running",
    "come_and_go",
    "count_leftovers",
    "ideal_rate",
    "leftovers_plot",
    "limit_os_buffers",
    "longest_pause",
    "still_running",
    "workers_experiment",
]
