"""For teachers (wspatterns.teaching): the catalog, the student copy, and grading a class.

The class graded here is generated from the student copy: our solutions pasted into the
answer cells, the starters as handed out, every wrong answer that tests/test_exercises.py
and tests/test_room_history.py feed the checkers (with the lines they expect), and hostile
or broken submissions. It is graded once, by one call, in a real kernel per answer; the
tests below read that one table.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import textwrap
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest

from wspatterns import exercises
from wspatterns.cli import main
from wspatterns.teaching import EXERCISES, grade, student_copy, write_gradebook
from wspatterns.teaching.catalog import LESSONS, answer_cell, import_cells, loads_our_solution
from wspatterns.teaching.grading import MARKER, STATUSES, Grade
from wspatterns.teaching.student_copy import TEACHERS_ONLY

from . import test_exercises, test_room_history
from .utils import execute, kernel_manager

SOLUTIONS = LESSONS / "solutions"
BY_ANSWER = {exercise.answer: exercise for exercise in EXERCISES}


# The catalog


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.answer)
def test_the_catalog_names_what_each_lesson_holds(exercise):
    cells = nbformat.read(LESSONS / exercise.lesson, as_version=4).cells
    answer = answer_cell(cells, exercise)
    assert answer is not None, f"{exercise.lesson} has no cell defining {exercise.answer}()"
    checks = [cell for cell in cells if cell.source.strip() == exercise.check_code]
    assert len(checks) == 1, f"{exercise.lesson} has no cell `{exercise.check_code}`"
    ours = [cell for cell in cells if loads_our_solution(cell)]
    assert [f'solution("{exercise.solution}")' in cell.source for cell in ours] == [True]
    assert (SOLUTIONS / f"{exercise.solution}.py").is_file()
    assert callable(getattr(exercises, exercise.checker))
    assert import_cells(cells), f"{exercise.lesson} does not start with its imports"


def test_every_exercise_of_the_lessons_is_in_the_catalog():
    checked = set()
    for lesson in LESSONS.glob("*.ipynb"):
        for cell in nbformat.read(lesson, as_version=4).cells:
            for match in re.finditer(r"^await (check_\w+)\((\w+)\)$", cell.source, re.M):
                checked.add((lesson.name, match[1], match[2]))
    assert checked == {(e.lesson, e.checker, e.answer) for e in EXERCISES}


# The student copy


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("class") / "lessons"
    written = student_copy(dest)
    lessons = {path.name for path in LESSONS.glob("*.ipynb")} - set(TEACHERS_ONLY)
    assert {path.name for path in written} == lessons
    return dest


def test_a_student_copy_holds_no_solution_and_clears_only_the_exercises(copy):
    assert not (copy / "solutions").exists() and (copy / "chat" / "chat_room.py").is_file()
    for path in sorted(set(LESSONS.glob("*.ipynb")) - {LESSONS / n for n in TEACHERS_ONLY}):
        ours = nbformat.read(path, as_version=4).cells
        theirs = nbformat.read(copy / path.name, as_version=4).cells
        offers = [c.source for c in theirs if loads_our_solution(c) or "solutions/" in c.source]
        assert offers == [], path.name
        links = [c.source for c in theirs if any(name in c.source for name in TEACHERS_ONLY)]
        assert links == [], f"{path.name} links to a notebook the class does not get"
        gone = [cell for cell in ours if loads_our_solution(cell)]
        gone += [ours[ours.index(cell) - 1] for cell in gone]  # "Stuck? Our solution is in..."
        kept = [cell for cell in ours if cell not in gone]
        assert len(theirs) == len(kept), path.name
        exercise = next((e for e in EXERCISES if e.lesson == path.name), None)
        cleared = {exercise.answer, exercise.check_code} if exercise else set()
        for before, after in zip(kept, theirs, strict=True):
            if before.cell_type != "code":
                handed = "solutions/" in before.source or "make_a_lesson" in before.source
                assert after.source == before.source or handed
                continue
            assert after.source == re.sub(r", solution\b", "", before.source)
            if after.source.strip() in cleared or (exercise and answer_cell([after], exercise)):
                assert after.outputs == [] and after.execution_count is None, after.source
            else:
                assert after.outputs == before.outputs, after.source


def test_a_student_copy_is_never_written_over_anything(copy, tmp_path):
    with pytest.raises(FileExistsError, match="already holds something"):
        student_copy(copy)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        student_copy(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="no lessons"):
        student_copy(tmp_path / "new", lessons=tmp_path)


# Grading: the class


def with_answer(copy: Path, exercise, source: str | None, path: Path) -> Path:
    """The student copy's lesson of ``exercise`` with ``source`` in its answer cell (None: the
    answer cell taken out), written to ``path``."""
    notebook = nbformat.read(copy / exercise.lesson, as_version=4)
    cell = answer_cell(notebook.cells, exercise)
    if source is None:
        notebook.cells.remove(cell)
    else:
        cell.source = source
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def names_used(code: types.CodeType) -> set[str]:
    used = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            used |= names_used(constant)
    return used


def as_answer(function: Callable, name: str) -> str:
    """The source of a wrong answer of the exercise tests, standing alone as a learner's cell
    would: the imports and helpers of its test module it uses, then it, renamed ``name``."""
    module = sys.modules[function.__module__]
    tree = ast.parse(inspect.getsource(module))
    imports = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
            for alias in node.names:
                imports[(alias.asname or alias.name).split(".")[0]] = ast.unparse(
                    type(node)(**{**node.__dict__, "names": [alias]})
                )
    helpers, lines, seen = [], [], set()

    def need(each: Callable) -> None:
        for used in sorted(names_used(each.__code__)):
            if used in seen:
                continue
            seen.add(used)
            if used in imports:
                lines.append(imports[used])
            elif isinstance(getattr(module, used, None), types.FunctionType):
                need(getattr(module, used))
                helpers.append(textwrap.dedent(inspect.getsource(getattr(module, used))))

    need(function)
    source = textwrap.dedent(inspect.getsource(function))
    source = re.sub(rf"\bdef {function.__name__}\(", f"def {name}(", source, count=1)
    return "\n".join([*lines, "", *helpers, source])


def wrong_answers() -> list[tuple[str, Callable, list[str]]]:
    """(answer's name, wrong function, the lines its test expects) for every wrong answer
    the exercise tests feed a checker. Those a factory makes (their code needs its
    arguments) are left out."""
    found = []
    for module in (test_exercises, test_room_history):
        for name, test in vars(module).items():
            marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
            if not name.startswith("test_") or not marks:
                continue
            checker = re.search(r"exercises\.(check_\w+)\(", inspect.getsource(test))
            for case in marks[0].args[1]:
                wrong, phrases = case.values if hasattr(case, "values") else case
                if callable(wrong) and not wrong.__code__.co_freevars and checker:
                    answer = next(e.answer for e in EXERCISES if e.checker == checker[1])
                    found.append((answer, wrong, phrases))
    return found


HOSTILE = {
    # student: (exercise, what the answer cell holds beside or instead of our solution,
    #           the grade it gets)
    "loops": ("bye_consumer", "while True:\n    pass\n", "timed out"),
    "loops-in-handler": (
        "bye_consumer",
        "def bye_consumer(consume):\n    async def handler(websocket):\n"
        "        while True:\n            pass\n    return handler\n",
        "timed out",
    ),
    "exits": ("bye_consumer", "import sys\nsys.exit(3)\n", "crashed: SystemExit: 3"),
    "os-exit": ("bye_consumer", "import os\nos._exit(0)\n", "crashed: its kernel died"),
    "syntax": ("bye_consumer", "def bye_consumer(consume)\n    pass\n",
               "crashed: SyntaxError: expected ':' (line 1 of the answer's cell)"),  # fmt: skip
    # These do their harm and answer right: graded passed, and leave nothing behind.
    "spawns": ("bye_consumer", "import subprocess\nsubprocess.Popen(['sleep', '300'])\n"
               "subprocess.Popen(['setsid', 'sleep', '301'])\n", "passed"),  # fmt: skip
    "floods": ("bye_consumer", "print('x' * 100_000_000)\nfor _ in range(10**5): print('y')\n",
               "passed"),  # fmt: skip
    "servers": (
        "bye_consumer",
        "import asyncio, subprocess, sys\nfrom wspatterns import serve\n"
        "await serve(lambda websocket: websocket.wait_closed(), name='left-open')\n"
        "await asyncio.start_server(lambda reader, writer: None, '127.0.0.1', 0)\n"
        "subprocess.Popen([sys.executable, '-m', 'http.server', '0', '-b', '127.0.0.1'])\n",
        "passed",
    ),
    "deletes": ("bye_consumer", "import os, shutil\nshutil.rmtree(os.getcwd())\n", "passed"),
}


def listening() -> set[tuple[str, int, int | None]]:
    """Listening sockets of this machine: (address, port, owner's pid)."""
    return {
        (c.laddr.ip, c.laddr.port, c.pid)
        for c in psutil.net_connections("inet")
        if c.status == "LISTEN"
    }


def ours(process: psutil.Process, temporary: Path) -> bool:
    """Whether ``process`` was started by a grading run whose temporary folder is in
    ``temporary`` (other gradings may be under way on the machine)."""
    try:
        environ = process.environ()
    except psutil.Error:
        return False
    return MARKER in environ and environ.get("TMPDIR", "").startswith(str(temporary))


def entries(folder: str) -> set[str]:
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


def marked(temporary: Path) -> list[psutil.Process]:
    return [process for process in psutil.process_iter() if ours(process, temporary)]


def owner(pid: int | None) -> psutil.Process | None:
    try:
        return None if pid is None else psutil.Process(pid)
    except psutil.Error:
        return None


def make_class(copy: Path, folder: Path) -> dict[str, dict[str, Any]]:
    """Write into ``folder`` a class's submissions made from the student copy ``copy``;
    returns what each student should get, by exercise (left out: missing)."""
    expected: dict[str, dict[str, Any]] = {}
    solution_of = {e.answer: (SOLUTIONS / f"{e.solution}.py").read_text() for e in EXERCISES}
    for exercise in EXERCISES:
        student = f"solution-{exercise.answer}"
        with_answer(copy, exercise, solution_of[exercise.answer], folder / f"{student}.ipynb")
        expected[student] = {exercise.answer: "passed"}
        student = f"starter-{exercise.answer}"
        (folder / student).mkdir()
        shutil.copy(copy / exercise.lesson, folder / student / exercise.lesson)
        expected[student] = {exercise.answer: "not reached"}
    for number, (answer, wrong, phrases) in enumerate(wrong_answers()):
        student = f"wrong-{number:02d}-{wrong.__name__}"
        with_answer(copy, BY_ANSWER[answer], as_answer(wrong, answer), folder / f"{student}.ipynb")
        said = [phrase.replace(wrong.__name__, answer) for phrase in phrases]
        expected[student] = {answer: ("failed", said)}
    for student, (answer, code, grade_) in HOSTILE.items():
        stub = f"def {answer}(consume):\n    pass\n"
        answers = solution_of[answer] if grade_ == "passed" else stub
        source = code if f"def {answer}(" in code else code + "\n" + answers
        with_answer(copy, BY_ANSWER[answer], source, folder / f"{student}.ipynb")
        expected[student] = {answer: grade_}
    (folder / "not-a-notebook.ipynb").write_text("my answers are in my head")
    expected["not-a-notebook"] = {}
    with_answer(copy, EXERCISES[0], None, folder / "no-answer.ipynb")
    expected["no-answer"] = {}
    return expected


@pytest.fixture(scope="module")
def graded(copy, tmp_path_factory):
    """The class: (its folder, what each student should get, the table, what was left)."""
    folder = tmp_path_factory.mktemp("submissions")
    expected = make_class(copy, folder)
    # Everything temporary of the grader and its kernels goes here (kernels' connection
    # files too), to be looked at after: other programs use the machine's meanwhile.
    temporary = tmp_path_factory.mktemp("temporary")
    ports = listening()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(temporary))
        patch.setattr(tempfile, "tempdir", str(temporary))
        start = time.monotonic()
        table = grade(sorted(folder.iterdir()), lessons=copy, time_limit=60, progress=False)
        took = time.monotonic() - start
    print(f"graded {len(table)} submissions in {took:.0f} s")
    left = {
        "processes": marked(temporary),
        "ports": {
            port for port in listening() - ports
            if (process := owner(port[2])) is not None and ours(process, temporary)
        },
        "temporary": entries(str(temporary)),
    }
    return folder, expected, table, left


@pytest.mark.timeout(1200)
def test_a_class_is_graded_right_row_by_row(graded):
    _, expected, table, _ = graded
    assert len(table) >= 30 and list(table.columns) == [e.answer for e in EXERCISES]
    wrong = []
    for student, row in table.iterrows():
        for answer, got in row.items():
            assert isinstance(got, Grade) and got.status in STATUSES
            want = expected[student].get(answer, "missing")
            if isinstance(want, tuple):  # failed, saying each of these
                ok = got.status == "failed" and all(phrase in got.details for phrase in want[1])
            else:
                ok = str(got).startswith(want)
            if not ok:
                wrong.append(f"{student} {answer}: got {got}, expected {want}")
    assert not wrong, "\n".join(wrong)


def test_the_wrong_answers_of_the_exercise_tests_are_all_in_the_class(graded):
    _, expected, _, _ = graded
    failed = [student for student, grades in expected.items() if student.startswith("wrong-")]
    assert len(failed) == len(wrong_answers()) >= 30


def test_nothing_of_a_submission_is_left(graded):
    *_, left = graded
    assert left == {"processes": [], "ports": set(), "temporary": set()}


def test_a_broken_file_gets_a_row_that_says_why(graded):
    _, _, table, _ = graded
    assert {str(grade) for grade in table.loc["not-a-notebook"]} == {
        "missing: not-a-notebook.ipynb is not a notebook (NotJSONError)"
    }
    assert str(table.loc["no-answer", "bye_consumer"]) == "missing: no cell defines bye_consumer()"


def test_the_gradebook_is_written_as_csv_and_a_page(graded, tmp_path):
    _, _, table, _ = graded
    csv, page = write_gradebook(table, tmp_path / "out")
    rows = csv.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "student," + ",".join(e.answer for e in EXERCISES)
    assert len(rows) == len(table) + 1
    ours = "solution-bye_consumer,passed,missing: no cell defines finite_producer(),"
    assert any(row.startswith(ours) for row in rows)
    text = page.read_text(encoding="utf-8")
    passed = sum(str(grade) == "passed" for grade in table["bye_consumer"])
    assert f"<td>{passed} of {len(table)}</td>" in text and "timed out" in text


def test_the_command_line_grades_and_writes_the_gradebook(copy, tmp_path, capsys):
    exercise = EXERCISES[0]
    solution = (SOLUTIONS / f"{exercise.solution}.py").read_text()
    with_answer(copy, exercise, solution, tmp_path / "ada" / exercise.lesson)
    out = tmp_path / "grades"
    code = main(["grade", str(tmp_path / "ada"), "--out", str(out), "--lessons", str(copy)])
    assert code == 0
    said = capsys.readouterr().out
    assert said.startswith("graded 1 submissions in ") and str(out / "grades.csv") in said
    assert (out / "grades.csv").read_text().splitlines()[1].startswith("ada,passed,missing")
    with pytest.raises(SystemExit) as refused:
        main(["grade", str(tmp_path / "nobody")])
    assert refused.value.code == 2
    assert "no submission at" in capsys.readouterr().err


def test_the_same_call_grades_from_a_notebook(copy, tmp_path, kernel):
    exercise = EXERCISES[0]
    solution = (SOLUTIONS / f"{exercise.solution}.py").read_text()
    ada = with_answer(copy, exercise, solution, tmp_path / "ada.ipynb")
    said = execute(kernel, f"""
        from wspatterns.teaching import grade
        table = grade([{str(ada)!r}], lessons={str(copy)!r})  # the kernel's loop is running
        print(type(table).__name__, table.loc["ada", "bye_consumer"], table.shape)
    """)  # fmt: skip
    assert said["stdout"] == "DataFrame passed (1, 7)\n"


def test_a_time_limit_must_be_positive(copy):
    with pytest.raises(ValueError, match="time_limit must be a number of seconds > 0"):
        grade([copy], time_limit=0)


# The student copy, run as a class receives it


@pytest.mark.timeout(900)
def test_the_student_copy_runs_and_no_exercise_has_passed(copy, tmp_path):
    """Every lesson with an exercise, run top to bottom in a kernel: no error, and each
    exercise's check says what is not yet done (the others are unchanged, and nbval runs
    them as committed)."""
    from nbclient import NotebookClient

    for number, exercise in enumerate(EXERCISES):
        notebook = nbformat.read(copy / exercise.lesson, as_version=4)
        kernel = kernel_manager(tmp_path / str(number))  # this Python's, as nbval's would be
        NotebookClient(notebook, km=kernel, timeout=600,
                       resources={"metadata": {"path": str(copy)}}).execute()  # fmt: skip
        [check] = [cell for cell in notebook.cells if cell.source.strip() == exercise.check_code]
        shown = json.dumps(check.outputs)
        assert re.search(rf"{exercise.answer}: \d+ of \d+ checks passed", shown), shown
        assert "all" not in re.findall(rf"{exercise.answer}: (\w+)", shown)
