"""What a checker found: one line per check, each passed, failed, or not reached.

A check is *not reached* when what it depends on never happened: nothing was
registered, so whether it was unregistered cannot be told; the handler
returned at once, so whether it left tasks behind once the client left says
nothing. Such a line is neither ✔ nor ✘; the totals count only the checks that
were judged, and a report with any of them has not passed, so an answer that
does nothing never passes.
"""

from __future__ import annotations

import enum
import html


class Mark(enum.Enum):
    """How one check came out, and the sign and colour it shows with."""

    PASSED = ("✔", "#1a7f37")
    FAILED = ("✘", "#cf222e")
    NOT_REACHED = ("–", "#6e7781")

    @property
    def sign(self) -> str:
        return self.value[0]

    @property
    def colour(self) -> str:
        return self.value[1]


class Report:
    """What a checker found: one line per check.

    ``bool(report)`` is True when every check was judged and passed;
    ``report.failures`` lists what failed and ``report.not_reached`` what could
    not be checked. In a notebook it shows as a list of ✔, ✘ and – lines.
    """

    def __init__(self, exercise: str) -> None:
        self.exercise = exercise
        self.lines: list[tuple[Mark, str]] = []

    def add(self, ok: bool, text: str, otherwise: str | None = None) -> bool:
        """Add a judged line: ``text`` if ``ok`` (or if no ``otherwise`` is given), else
        ``otherwise``. Returns ``ok``."""
        mark = Mark.PASSED if ok else Mark.FAILED
        self.lines.append((mark, text if ok or otherwise is None else otherwise))
        return ok

    def skip(self, check: str, because: str) -> None:
        """Add a line for ``check``, not reached ``because`` what it depends on never happened."""
        self.lines.append((Mark.NOT_REACHED, f"{check}: not reached ({because})."))

    def _texts(self, mark: Mark) -> list[str]:
        return [text for each, text in self.lines if each is mark]

    @property
    def failures(self) -> list[str]:
        """The lines of the checks that failed."""
        return self._texts(Mark.FAILED)

    @property
    def not_reached(self) -> list[str]:
        """The lines of the checks that could not be judged."""
        return self._texts(Mark.NOT_REACHED)

    @property
    def judged(self) -> int:
        """How many checks were judged, passed or failed."""
        return len(self.lines) - len(self.not_reached)

    @property
    def passed(self) -> bool:
        """True when there is at least one line and every line passed (as ``bool(report)``)."""
        return bool(self.lines) and not self.failures and not self.not_reached

    def __bool__(self) -> bool:
        return self.passed

    def headline(self) -> str:
        """One sentence: all passed, or how many of the judged checks passed and what was not
        reached."""
        if self.passed:
            return f"{self.exercise}: all {len(self.lines)} checks passed."
        passed = self.judged - len(self.failures)
        skipped = f"; {len(self.not_reached)} not reached" if self.not_reached else ""
        return f"{self.exercise}: {passed} of {self.judged} checks passed{skipped}."

    def __repr__(self) -> str:
        lines = [self.headline()]
        lines += [f"  {mark.sign} {text}" for mark, text in self.lines]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = Mark.PASSED.colour if self.passed else Mark.FAILED.colour
        items = "".join(
            f'<li style="list-style: none; color: {mark.colour}">'
            f"{mark.sign} {html.escape(text)}</li>"
            for mark, text in self.lines
        )
        return (
            f'<div><b style="color: {colour}">{html.escape(self.headline())}</b>'
            f'<ul style="padding-left: 1em; margin: 0.3em 0">{items}</ul></div>'
        )
