"""The exercises, and where each lives in a notebook.

Each pattern lesson ends with an exercise: the learner writes one function (the *answer*,
``bye_consumer`` in lesson 01) in a cell of its own, the next cell checks it
(``await check_consumer(bye_consumer)``), and two more load our solution beside it and
check that. :data:`EXERCISES` names those parts for every lesson; the functions here find
them in a notebook, the lesson as committed or a learner's copy of it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

#: Where the lessons are: the ``notebooks`` folder of the checkout the kit runs from.
LESSONS = Path(__file__).resolve().parent.parent.parent / "notebooks"


@dataclass(frozen=True)
class Exercise:
    """One exercise: its lesson's file, the function the learner writes, the checker in
    :mod:`wspatterns.exercises` that judges it, and our solution in ``solutions/``."""

    lesson: str
    answer: str
    checker: str
    solution: str

    @property
    def check_code(self) -> str:
        """The cell that checks the learner's answer, as the lesson has it."""
        return f"await {self.checker}({self.answer})"


EXERCISES: tuple[Exercise, ...] = (
    Exercise("01_consumer.ipynb", "bye_consumer", "check_consumer", "01_bye_consumer"),
    Exercise("02_producer.ipynb", "finite_producer", "check_producer", "02_finite_producer"),
    Exercise(
        "03_consumer_and_producer.ipynb", "consumer_and_producer", "check_consumer_and_producer",
        "03_consumer_and_producer",
    ),  # fmt: skip
    Exercise("03b_multiple_consumers.ipynb", "dropping_workers", "check_workers",
             "03b_dropping_workers"),  # fmt: skip
    Exercise("04b_broadcast.ipynb", "chat_room", "check_chat_room", "04_chat_room"),
    Exercise("05_pubsub_across_processes.ipynb", "follow", "check_resuming_client", "05_follow"),
    Exercise("06b_chat_across_processes.ipynb", "chat_with_history", "check_room_history",
             "06_room_history"),  # fmt: skip
)

Cell = Any  # a notebook cell, as nbformat reads it


def defines(source: str, name: str) -> bool:
    """Whether ``source`` defines the function ``name`` at its top level. Source that does
    not parse counts when a line starts ``def name(`` (so a syntax error is graded, not
    taken for a missing answer)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return re.search(rf"^(async\s+)?def\s+{re.escape(name)}\s*\(", source, re.M) is not None
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    return any(isinstance(node, functions) and node.name == name for node in tree.body)


def is_code(cell: Cell) -> bool:
    return bool(cell.cell_type == "code")


def loads_our_solution(cell: Cell) -> bool:
    """A cell that loads our solution: ``ours = solution("01_bye_consumer")``."""
    return is_code(cell) and re.search(r"\bsolution\(", cell.source) is not None


def answer_cell(cells: list[Cell], exercise: Exercise) -> Cell | None:
    """The learner's answer to ``exercise`` among ``cells``: the last code cell that defines
    the function (a learner may write it twice), never our solution's. None if there is none."""
    found = [
        cell
        for cell in cells
        if is_code(cell) and defines(cell.source, exercise.answer) and not loads_our_solution(cell)
    ]
    return found[-1] if found else None


def import_cells(cells: list[Cell]) -> list[str]:
    """The sources of the lesson's code cells that only import, before anything else runs:
    what an answer may take for granted (``asyncio``, the kit)."""
    sources = []
    for cell in cells:
        if not is_code(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            break
        if not tree.body or not all(isinstance(n, ast.Import | ast.ImportFrom) for n in tree.body):
            break
        sources.append(cell.source)
    return sources


def read_lesson(exercise: Exercise, lessons: Path = LESSONS) -> list[Cell]:
    """The cells of ``exercise``'s lesson in ``lessons``."""
    return list(read_notebook(lessons / exercise.lesson).cells)


def read_notebook(path: Path) -> Any:
    """The notebook at ``path`` (nbformat's, version 4). Raises what nbformat raises for a
    file that is not one."""
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


def write_notebook(notebook: Any, path: Path) -> None:
    nbformat.write(notebook, path)  # type: ignore[no-untyped-call]
