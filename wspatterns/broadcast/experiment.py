"""The broadcast-strategy experiment of lesson 04b: six ways to reach many clients, measured.

As upstream websockets measures them: the server and the clients run in
processes of their own, so the notebook's kernel measures nothing of itself.
"""

from __future__ import annotations

import math
import operator
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, NothingToShowError, ProcessFailed
from ..reports import ipython
from .processes import Measurement, measure
from .strategies import STRATEGIES, check_strategy

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

#: The columns of broadcast_experiment()'s DataFrame, one row per run.
BROADCAST_COLUMNS = [
    "strategy", "clients", "slow_client", "broadcasts", "messages", "delivered",
    "p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu", "clients_cpu", "server_mb",
    "complete", "note",
]  # fmt: skip


async def broadcast_experiment(
    strategies: Iterable[str] = tuple(STRATEGIES),
    clients: Iterable[int] = (10, 100),
    *,
    size: int = 64,
    rate: float = 10.0,
    seconds: float = 2.0,
    slow_client: bool = False,
    progress: bool = True,
) -> pandas.DataFrame:
    """Measure how late a broadcast reaches its clients, for each strategy and number of clients.

    Each run starts a server process broadcasting ``size`` bytes ``rate`` times a second and a
    process of clients (plus, with ``slow_client``, one client that never reads), warms up,
    measures for ``seconds``, and stops both. Returns one row per run (see
    ``BROADCAST_COLUMNS``); latencies are in ms, ``server_cpu`` is CPU time over wall time, and
    ``delivered`` is the share of the scheduled messages that arrived. A run whose process died
    or stopped answering is a row with ``complete`` False and a ``note`` saying what happened,
    and the next run goes on. Raises ValueError for inputs that cannot run, before anything
    starts.

    A slow client makes a difference only once what it does not read fills the kernel's socket
    buffers and websockets' write buffer: about 3 MB on Linux, so use a large ``size``.
    """
    import pandas

    strategies, counts = _broadcast_runs(strategies, clients, size, rate, seconds)
    status = _Status(progress)
    runs = [(strategy, count) for strategy in strategies for count in counts]
    started = time.perf_counter()
    rows = []
    for number, (strategy, count) in enumerate(runs, 1):
        label = f"broadcast {number}/{len(runs)}: {strategy}, {count} clients"
        status.show(label, lasting=True)
        try:
            measured = await measure(
                strategy,
                count,
                size=size,
                rate=rate,
                seconds=seconds,
                slow=1 if slow_client else 0,
                phase=status.under(label),
            )
        except ProcessFailed as exc:
            row = _broadcast_row(strategy, count, slow_client, None, rate, str(exc))
        else:
            row = _broadcast_row(strategy, count, slow_client, measured, rate, "")
        rows.append(row)
        outcome = row["note"] or f"p99 {row['p99_ms']:.1f} ms"
        status.show(f"{label}: {outcome}", lasting=True)
    status.show(
        f"broadcast experiment: {len(runs)} runs in {time.perf_counter() - started:.0f} s",
        lasting=True,
    )
    return pandas.DataFrame(rows, columns=BROADCAST_COLUMNS)


def _broadcast_runs(
    strategies: Iterable[str] | str,
    clients: Iterable[int] | int,
    size: int,
    rate: float,
    seconds: float,
) -> tuple[list[str], list[int]]:
    """The strategies and client counts to run, or ValueError saying what is wrong with them."""
    strategies = [strategies] if isinstance(strategies, str) else list(strategies)
    for strategy in strategies:
        check_strategy(strategy)
    counts = []
    for count in [clients] if isinstance(clients, int) else list(clients):
        try:
            counts.append(operator.index(count))
        except TypeError:
            raise InvalidArgumentError(f"clients must be whole numbers; got {count!r}.") from None
        if counts[-1] < 1:
            raise InvalidArgumentError(f"clients must be 1 or more in each run; got {count}.")
    if not strategies or not counts:
        raise InvalidArgumentError(
            "nothing to run: give at least one strategy and one number of clients."
        )
    if size < 0:
        raise InvalidArgumentError(f"size must be 0 bytes or more; got {size}.")
    if not (rate > 0 and math.isfinite(rate)):
        raise InvalidArgumentError(f"rate must be more than 0 broadcasts a second; got {rate}.")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InvalidArgumentError(f"seconds must be more than 0; got {seconds}.")
    return strategies, counts


def _broadcast_row(
    strategy: str,
    count: int,
    slow_client: bool,
    measured: Measurement | None,
    rate: float,
    failure: str,
) -> dict[str, Any]:
    """One row of broadcast_experiment()'s DataFrame; empty figures for a run that failed."""
    row: dict[str, Any] = dict.fromkeys(BROADCAST_COLUMNS, math.nan)
    row.update(
        strategy=strategy, clients=count, slow_client=slow_client, complete=False, note=failure
    )
    if measured is None:
        return row
    ready, seen, server = measured
    expected = count * rate * seen["seconds"]
    row.update(
        broadcasts=server["broadcasts"],
        messages=seen["messages"],
        delivered=round(min(1.0, seen["messages"] / expected), 3) if expected else math.nan,
        server_cpu=server["cpu"],
        clients_cpu=seen["cpu"],
        server_mb=server["memory_mb"],
    )
    for column in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        if seen[column] is not None:
            row[column] = seen[column]
    problems = []
    if ready["connected"] < count or ready["slow"] < int(slow_client):
        problems.append(
            f"only {ready['connected']} of {count} clients connected ({ready['error']})"
        )
    if seen["closed"]:
        problems.append(f"{seen['closed']} client(s) were disconnected during the run")
    row["complete"] = not problems
    if not seen["messages"]:
        problems.append("no message arrived while measuring")
    row["note"] = "; ".join(problems)
    return row


class _Status:
    """One line saying how far an experiment has got: in a notebook, a display that updates
    in place; elsewhere, lines on stderr (only the ``lasting`` ones); nothing if not ``enabled``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        shell = ipython()
        self.in_notebook = shell is not None and getattr(shell, "kernel", None) is not None
        self._handle: Any = None

    def under(self, label: str) -> Callable[[str], None]:
        """What :func:`measure` calls with each phase of a run: shows it after ``label``."""
        return lambda text: self.show(f"{label}: {text}")

    def show(self, text: str, *, lasting: bool = False) -> None:
        if not self.enabled:
            return
        if not self.in_notebook:
            if lasting:
                print(text, file=sys.stderr, flush=True)
            return
        from IPython.display import Pretty, display

        if self._handle is None:
            self._handle = display(Pretty(text), display_id=True)
        else:
            self._handle.update(Pretty(text))


def broadcast_plot(results: pandas.DataFrame) -> Figure:
    """Median and 99th-percentile latency against the number of clients, one line per strategy.

    Both axes are logarithmic. Runs that did not complete are left out; raises ValueError if
    none did.
    """
    import matplotlib.pyplot as pyplot
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    done = results[results["complete"].astype(bool) & results["p99_ms"].notna()]
    if done.empty:
        raise NothingToShowError("nothing to plot: no run of this experiment completed.")
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4), sharey=True)
    pyplot.close(figure)  # shown once, by being returned, not again by pyplot
    counts = sorted(done["clients"].unique())
    for panel, column, title in zip(
        axes, ("p50_ms", "p99_ms"), ("median (p50)", "99th percentile (p99)"), strict=True
    ):
        for strategy, runs in done.groupby("strategy", sort=False):
            runs = runs.sort_values("clients")
            panel.plot(runs["clients"], runs[column], marker="o", label=strategy)
        panel.set_xscale("log")
        panel.set_yscale("log")
        panel.xaxis.set_major_locator(FixedLocator(counts))
        panel.xaxis.set_minor_locator(NullLocator())
        panel.set_xticklabels([f"{count:,}" for count in counts])
        panel.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        panel.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        panel.set_xlabel("clients")
        panel.set_title(title)
        panel.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms, log scale)")
    axes[1].legend(title="strategy", fontsize="small")
    slow = bool(done["slow_client"].any())
    figure.suptitle(
        "How long a broadcast message takes to arrive"
        + (", with one client that never reads" if slow else "")
    )
    figure.tight_layout()
    return figure
