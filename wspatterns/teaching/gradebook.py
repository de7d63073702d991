"""The table of grades as files: CSV for a gradebook, a page a teacher can read.

:func:`write_gradebook` takes what :func:`~wspatterns.teaching.grading.grade` returns, a
row per student and a column per exercise, and writes ``grades.csv`` (each cell its status,
then what went wrong: ``failed: ✘ consume() got []``) and ``grades.html`` (the statuses in
colour, counted per exercise, what went wrong under each).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas

#: The colour of each status on the page.
COLOURS = {
    "passed": "#d8f0dc",
    "failed": "#f9d7d7",
    "not reached": "#ececec",
    "missing": "#ececec",
    "timed out": "#fbe8c8",
    "crashed": "#fbe8c8",
}


def write_gradebook(
    table: pandas.DataFrame, folder: str | Path, title: str = "Grades"
) -> tuple[Path, Path]:
    """Write ``table`` to ``folder`` (made if needed) as ``grades.csv`` and ``grades.html``;
    returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv, page = folder / "grades.csv", folder / "grades.html"
    table.map(str).to_csv(csv)
    page.write_text(as_page(table, title), encoding="utf-8")
    return csv, page


def status_of(grade: Any) -> str:
    return str(getattr(grade, "status", grade)).split(":")[0]


def as_page(table: pandas.DataFrame, title: str = "Grades") -> str:
    """``table`` as one HTML page: a legend, a count per exercise, then a row per student."""
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in table.columns)
    rows = []
    for student, grades in table.iterrows():
        cells = "".join(_cell(grade) for grade in grades)
        rows.append(f"<tr><th>{html.escape(str(student))}</th>{cells}</tr>")
    counts = "".join(
        f"<td>{sum(status_of(g) == 'passed' for g in table[column])} of {len(table)}</td>"
        for column in table.columns
    )
    legend = " ".join(
        f'<span style="background:{colour};padding:0 .4em">{status}</span>'
        for status, colour in COLOURS.items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: .3em .5em; vertical-align: top; text-align: left; }}
td small {{ display: block; max-width: 28em; color: #444; white-space: pre-wrap; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{legend}</p>
<table>
<thead><tr><th>student</th>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
<tfoot><tr><th>passed</th>{counts}</tr></tfoot>
</table></body></html>
"""


def _cell(grade: Any) -> str:
    status = status_of(grade)
    details = str(getattr(grade, "details", ""))
    shown = details.replace("; ✘", "\n✘").replace("; –", "\n–")
    small = f"<small>{html.escape(shown)}</small>" if details else ""
    colour = COLOURS.get(status, "#fff")
    return f'<td style="background:{colour}"><b>{html.escape(status)}</b>{small}</td>'
