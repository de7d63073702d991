"""Broadcasting: six ways to send one message to many clients, and the experiment that times them.

* :mod:`~wspatterns.broadcast.strategies` — the six ways (:data:`STRATEGIES`);
* :mod:`~wspatterns.broadcast.measuring` — stamped messages, latencies, percentiles;
* :mod:`~wspatterns.broadcast.server_process` and
  :mod:`~wspatterns.broadcast.clients_process` — the two child processes of a run,
  each runnable as ``python -m wspatterns.broadcast.server_process`` (or
  ``.clients_process``), and :mod:`~wspatterns.broadcast.child`, what both share;
* :mod:`~wspatterns.broadcast.processes` — the parent's side: :func:`measure` one run;
* :mod:`~wspatterns.broadcast.experiment` — :func:`broadcast_experiment` and
  :func:`broadcast_plot`, for lesson 04b.
"""

# The two child-process modules are not imported here: running one with ``python -m`` imports
# this package first, and a module imported before it runs as __main__ would run twice.

from __future__ import annotations

from .experiment import BROADCAST_COLUMNS, broadcast_experiment, broadcast_plot
from .measuring import LatencyLog, latency_ns, percentile, stamped_message
from .processes import ClientsProcess, Measurement, ServerProcess, measure
from .strategies import (
    STRATEGIES,
    BuiltIn,
    FutureChain,
    InTurn,
    QueuePerClient,
    Strategy,
    TaskPerClient,
    WaitForAll,
    check_strategy,
    send_quietly,
)

__all__ = [
    "BROADCAST_COLUMNS",
    "STRATEGIES",
    "BuiltIn",
    "ClientsProcess",
    "FutureChain",
    "InTurn",
    "LatencyLog",
    "Measurement",
    "QueuePerClient",
    "ServerProcess",
    "Strategy",
    "TaskPerClient",
    "WaitForAll",
    "broadcast_experiment",
    "broadcast_plot",
    "check_strategy",
    "latency_ns",
    "measure",
    "percentile",
    "send_quietly",
    "stamped_message",
]
