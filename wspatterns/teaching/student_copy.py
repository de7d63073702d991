"""The lessons as a class receives them: everything as committed, but our solutions.

``python -m wspatterns student-copy DEST`` writes them to ``DEST``: no ``solutions/``
folder, no cell that loads our solution (nor the paragraph that offers it), the outputs of
each exercise's answer and check cells cleared, the lessons' support files (``chat/``)
copied. The starter answer stays as it is: run, its checker says what is not yet done.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import MissingFileError, WSPatternsError
from .catalog import (
    EXERCISES,
    LESSONS,
    Cell,
    answer_cell,
    is_code,
    loads_our_solution,
    read_notebook,
    write_notebook,
)

#: What is not handed out: our solutions, and what a run or an editor leaves behind.
LEFT_OUT = ("solutions", "__pycache__", ".ipynb_checkpoints", ".pytest_cache", "*.pyc")

#: Notebooks for teachers, not for the class.
TEACHERS_ONLY = ("make_a_lesson.ipynb",)

# A sentence of prose that sends the reader to our solutions.
_OFFER = re.compile(r" ?[^.!?\n]*`?solutions/[^.!?\n]*[.!?][ \t]*")
# The name `solution` among what a cell imports from the exercises.
_IMPORTED = re.compile(r"(from wspatterns\.exercises import [^\n]*?)(, solution\b|\bsolution, )")


def student_copy(dest: str | Path, lessons: str | Path = LESSONS) -> list[Path]:
    """Write the lessons in ``lessons`` to the new folder ``dest`` as a class receives them;
    returns the notebooks written. Raises FileExistsError if ``dest`` holds anything
    (nothing is overwritten), FileNotFoundError if ``lessons`` has no lessons."""
    source, target = Path(lessons), Path(dest)
    if not any(source.glob("*.ipynb")):
        raise MissingFileError(f"no lessons (*.ipynb) in {source.resolve()}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise _Occupied(f"{target} already holds something: give a new or empty folder")
    left_out = shutil.ignore_patterns(*LEFT_OUT, *TEACHERS_ONLY)
    shutil.copytree(source, target, ignore=left_out, dirs_exist_ok=True)
    written = sorted(target.glob("*.ipynb"))
    for path in written:
        notebook = read_notebook(path)
        notebook.cells = handed_out(notebook.cells, path.name)
        write_notebook(notebook, path)
    return written


def handed_out(cells: list[Cell], lesson: str) -> list[Cell]:
    """``cells`` of the notebook ``lesson`` as a class receives them."""
    kept: list[Cell] = []
    for cell in cells:
        if loads_our_solution(cell):
            if kept and kept[-1].cell_type == "markdown" and "solutions/" in kept[-1].source:
                kept.pop()  # "Stuck? Our solution is in solutions/...": offers what is gone
            continue
        kept.append(cell)
    for cell in kept:
        if cell.cell_type == "markdown" and "solutions/" in cell.source:
            cell.source = _OFFER.sub("", cell.source).rstrip()  # a sentence that points there
        if cell.cell_type == "markdown":  # a line that links to what is not handed out
            lines = cell.source.splitlines()
            kept_lines = [line for line in lines if not any(n in line for n in TEACHERS_ONLY)]
            cell.source = "\n".join(kept_lines).rstrip() if kept_lines != lines else cell.source
        if is_code(cell):
            cell.source = _IMPORTED.sub(r"\1", cell.source)
    for exercise in EXERCISES:
        if exercise.lesson != lesson:
            continue
        answer = answer_cell(kept, exercise)
        checks = [c for c in kept if is_code(c) and c.source.strip() == exercise.check_code]
        for cell in [answer, *checks]:
            if cell is not None:
                cell.outputs, cell.execution_count = [], None
    return kept


class _Occupied(WSPatternsError, FileExistsError):
    """The folder to write the student copy to already holds something."""
