"""What the kit keeps and shows of what a program prints: bounded, however much it prints.

A program may print without end (a loop that logs, a flood of tracebacks); the kernel
that started it must not grow with it, nor bury the next cell under its lines:

* ``app.output`` keeps the first :data:`OUTPUT_FIRST` lines and the latest
  :data:`OUTPUT_LATEST` (stdout and stderr, as they came) and says how many lines
  between it did not keep;
* what the program writes on stderr is shown under the next cell, naming it, as
  reports; at most :data:`SHOWN_PER_CELL` of its lines wait for one cell, and one
  more line counts the rest ("… 99,950 more lines on stderr");
* ``app.reports`` keeps its latest :data:`REPORTS_KEPT` reports, and a report
  keeps :data:`REPORT_LINES` lines of detail, then counts them;
* of one line, the kit keeps the first 4 KiB
  (:data:`~wspatterns.runtime.processes.LINE_KEPT`) and counts the rest.
"""

from __future__ import annotations

from collections import deque

from .. import reports
from ..reports import ErrorReport

#: ``app.output`` keeps the first lines a program printed...
OUTPUT_FIRST = 100
#: ... and its latest ones; the lines between are counted, not kept.
OUTPUT_LATEST = 400
#: Lines of a program's stderr that wait for one cell; the rest are counted in one line.
SHOWN_PER_CELL = 50
#: Reports of a program's stderr ``app.reports`` keeps: the latest.
REPORTS_KEPT = 100
#: Lines of detail (a traceback) one report keeps; the rest are counted.
REPORT_LINES = 50


class Output:
    """The lines a program printed, as ``app.output`` gives them: the first ones, how many
    were not kept, and the latest ones."""

    def __init__(self) -> None:
        self._first: list[str] = []
        self._latest: deque[str] = deque(maxlen=OUTPUT_LATEST)
        self.dropped = 0  # lines between the first and the latest, not kept

    def add(self, line: str) -> None:
        if len(self._first) < OUTPUT_FIRST:
            self._first.append(line)
            return
        if len(self._latest) == OUTPUT_LATEST:
            self.dropped += 1
        self._latest.append(line)

    def lines(self) -> list[str]:
        between = [f"… {self.dropped:,} more lines, not kept"] if self.dropped else []
        return [*self._first, *between, *self._latest]


class StderrReports:
    """What a program writes on stderr, as reports that name it (``app.reports``).

    A report starts on each line at the margin; the lines indented under it, and a
    traceback down to its exception's line, are its detail. In a notebook, at most
    :data:`SHOWN_PER_CELL` lines of the program wait for the next cell; past them,
    lines are only counted, by one more report whose count grows until the cell prints
    it, and the cell after starts afresh. Elsewhere each report is printed at once:
    nothing waits, so nothing needs counting.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.kept: deque[ErrorReport] = deque(maxlen=REPORTS_KEPT)
        self._traceback = False  # in the middle of one
        self._open: ErrorReport | None = None  # the report lines of detail join
        self._details = 0  # lines of detail it holds
        self._cut = 0  # lines of detail it did not keep
        self._hint = ""  # its detail, before the count of those
        self._last: ErrorReport | None = None  # the last report shown
        self._shown = 0  # lines shown for the next cell
        self._summary: ErrorReport | None = None  # the count of the others
        self._not_shown = 0

    def add(self, line: str) -> None:
        """Report ``line``, or add it to the report it details, or count it."""
        detail = self._traceback or line[:1].isspace() or line.startswith("Traceback")
        # A traceback ends with its exception's line, at the margin.
        self._traceback = line.startswith("Traceback") or (self._traceback and line[:1] == " ")
        at_once = reports.ipython() is None  # show() prints at once: nothing waits
        if at_once:
            if detail and self._open is not None:
                self._join(self._open, line)
            else:
                self._start(line)
            return
        if self._last is not None and not reports.waiting(self._last):
            self._shown, self._summary, self._not_shown = 0, None, 0  # printed: a new cell
        if self._shown >= SHOWN_PER_CELL:
            self._count()
            return
        self._shown += 1
        if detail and self._open is not None and reports.waiting(self._open):
            self._join(self._open, line)
        else:  # a new report; or the rest of one printed under a cell before
            self._start(line)

    def _start(self, line: str) -> None:
        report = ErrorReport(self.name, None, None, f"[{self.name}] {line}")
        self._open, self._details, self._cut, self._hint = report, 0, 0, ""
        self._show(report)

    def _join(self, report: ErrorReport, line: str) -> None:
        if self._details < REPORT_LINES:
            report.hint = f"{report.hint}\n{line}" if report.hint else line
            self._details += 1
            return
        if not self._cut:
            self._hint = report.hint
        self._cut += 1
        report.hint = f"{self._hint}\n… {self._cut:,} more lines"

    def _count(self) -> None:
        self._not_shown += 1
        summary = (
            f"[{self.name}] … {self._not_shown:,} more lines on stderr, not shown here: "
            f"app.output keeps the first {OUTPUT_FIRST} and the latest {OUTPUT_LATEST}"
        )
        if self._summary is None:
            self._summary = ErrorReport(self.name, None, None, summary)
            self._show(self._summary)
        else:  # still waiting for the cell: it says the count when it is printed
            self._summary.summary = summary

    def _show(self, report: ErrorReport) -> None:
        self.kept.append(report)
        self._last = report
        reports.show(report)
