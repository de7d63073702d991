"""Grade submitted notebooks: each answer through its exercise's own checker, never here.

``python -m wspatterns grade SUBMISSION...`` (or :func:`grade` in a notebook) takes
notebooks, or folders of them (one folder a student), finds in each the learner's answer
to every exercise (:mod:`~wspatterns.teaching.catalog`), and runs it as the lesson would:
in a fresh kernel of its own, in a working folder of its own holding the lessons' support
files, the lesson's imports first, then the answer's cell, then the checker. Nothing a
submission does runs in the grader's process; each run has a time limit, and when it ends
its kernel and every process it started are killed and its folder deleted (what it wrote
to a temporary folder included). Runs go side by side, as many as there are cores.

Each exercise gets one grade (:class:`Grade`):

* ``passed`` — every check of the checker passed;
* ``failed`` — the checker's failing checks (✘) and those not reached (–) follow;
* ``not reached`` — the answer is still the starter the lesson hands out;
* ``missing`` — no cell defines the answer's function (or the file is not a notebook);
* ``timed out`` — the run outlived its time limit (an answer that loops for ever);
* ``crashed`` — the answer's cell raised (a syntax error, ``sys.exit()``), or its kernel
  died (``os._exit()``), before the checker could judge it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas
import psutil
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from tqdm.auto import tqdm

from ..errors import InvalidArgumentError, MissingFileError
from .catalog import (
    EXERCISES,
    LESSONS,
    Cell,
    Exercise,
    answer_cell,
    import_cells,
    read_lesson,
    read_notebook,
)
from .student_copy import LEFT_OUT

#: Seconds one exercise of one submission may take, kernel start to checker's verdict.
TIME_LIMIT = 120.0

#: What a submission prints is kept up to this many characters (the rest is counted).
PRINTED = 10_000

#: Every process a run starts carries this variable, set to the run's own secret, so that
#: what it started is found and killed when it ends, even if it left the kernel's group.
MARKER = "WSPATTERNS_GRADING"

STATUSES = ("passed", "failed", "not reached", "missing", "timed out", "crashed")


@dataclass(frozen=True)
class Grade:
    """One exercise of one submission: a status of :data:`STATUSES` and, for ``failed``
    and ``crashed``, what went wrong."""

    status: str
    details: str = ""

    def __str__(self) -> str:
        return f"{self.status}: {self.details}" if self.details else self.status


@dataclass(frozen=True)
class Submission:
    """A student's notebooks: the folder or file given, named after it."""

    student: str
    notebooks: tuple[Path, ...]


def submissions(paths: Iterable[str | Path]) -> list[Submission]:
    """One :class:`Submission` for each path: a notebook, or a folder of notebooks (searched
    through). Raises FileNotFoundError for a path that does not exist."""
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            notebooks = [p for p in given.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
            found.append(Submission(given.name, tuple(sorted(notebooks))))
        elif given.exists():
            found.append(Submission(given.stem, (given,)))
        else:
            raise MissingFileError(f"no submission at {given}: no such file or folder")
    return found


def grade(
    paths: Iterable[str | Path],
    *,
    lessons: str | Path = LESSONS,
    jobs: int | None = None,
    time_limit: float = TIME_LIMIT,
    progress: bool = True,
) -> pandas.DataFrame:
    """Grade each submission in ``paths`` (notebooks, or folders of them, one a student):
    a row per student, a column per exercise, each cell a :class:`Grade`. ``lessons`` holds
    the lessons as handed out (their imports, starters and support files); ``jobs`` runs go
    at once (the number of cores); each stops after ``time_limit`` seconds. Works from a
    script and from a notebook (where it blocks the cell until the class is graded)."""
    if time_limit <= 0:
        raise InvalidArgumentError(f"time_limit must be a number of seconds > 0; got {time_limit}")
    every = submissions(paths)
    jobs = max(1, jobs or os.cpu_count() or 1)
    work = _grade_all(every, Path(lessons), jobs, time_limit, progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        grades = asyncio.run(work)
    else:  # a notebook's kernel: its loop is busy running this cell
        grades = _in_a_thread(work)
    columns = [exercise.answer for exercise in EXERCISES]
    rows = {each.student: [grades[each.student, e.answer] for e in EXERCISES] for each in every}
    table = pandas.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "student"
    return table


def _in_a_thread(work: Any) -> dict[tuple[str, str], Grade]:
    answer: dict[str, Any] = {}

    def run() -> None:
        try:
            answer["grades"] = asyncio.run(work)
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            answer["error"] = error

    thread = threading.Thread(target=run, name="wspatterns-grade")
    thread.start()
    thread.join()
    if "error" in answer:
        raise answer["error"]
    return dict(answer["grades"])


async def _grade_all(
    every: list[Submission], lessons: Path, jobs: int, time_limit: float, progress: bool
) -> dict[tuple[str, str], Grade]:
    grades: dict[tuple[str, str], Grade] = {}
    runs = []
    for each in every:
        cells = dict(_answers(each))
        for exercise in EXERCISES:
            if isinstance(cells.get(exercise), Grade):
                grades[each.student, exercise.answer] = cells[exercise]
            else:
                runs.append((each.student, exercise, cells[exercise]))
    slots = asyncio.Semaphore(jobs)
    bar = tqdm(total=len(runs), desc="grading", unit="answer", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="wspatterns-grading-") as root:

        async def one(student: str, exercise: Exercise, cell: Cell) -> None:
            async with slots:
                grades[student, exercise.answer] = await _run(
                    cell, exercise, lessons, Path(root), time_limit
                )
            bar.update()

        try:
            await asyncio.gather(*(one(*run) for run in runs))
        finally:
            bar.close()
    return grades


def _answers(each: Submission) -> Iterator[tuple[Exercise, Cell | Grade]]:
    """Each exercise and the cell that answers it in ``each``'s notebooks, or a Grade saying
    why there is none. A notebook named like the lesson is looked in first."""
    read: list[tuple[Path, list[Cell]]] = []
    unreadable = []
    for path in each.notebooks:
        try:
            read.append((path, list(read_notebook(path).cells)))
        except Exception as error:  # noqa: BLE001 - any file may be handed in
            unreadable.append(f"{path.name} is not a notebook ({type(error).__name__})")
    for exercise in EXERCISES:
        ordered = sorted(read, key=lambda pair: pair[0].name != exercise.lesson)
        found = (answer_cell(cells, exercise) for _, cells in ordered)
        cell = next((cell for cell in found if cell is not None), None)
        if cell is not None:
            yield exercise, cell
        else:
            why = "; ".join(unreadable) or f"no cell defines {exercise.answer}()"
            yield exercise, Grade("missing", why)


async def _run(
    cell: Cell, exercise: Exercise, lessons: Path, root: Path, time_limit: float
) -> Grade:
    """Run ``cell`` (an answer to ``exercise``) and its checker in a kernel of its own."""
    folder = Path(tempfile.mkdtemp(prefix=f"{exercise.answer}-", dir=root))
    work, temporary = folder / "work", folder / "tmp"
    shutil.copytree(lessons, work, ignore=shutil.ignore_patterns(*LEFT_OUT, "*.ipynb"))
    temporary.mkdir()
    secret = secrets.token_hex(16)
    env = {**os.environ, MARKER: secret, "TMPDIR": str(temporary), "MPLBACKEND": "Agg"}
    for name in [name for name in env if name.startswith("JPY_")]:  # the grader's kernel's
        del env[name]
    kernel = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=_this_python(root))
    client = None
    try:
        async with asyncio.timeout(time_limit):
            await kernel.start_kernel(
                cwd=str(work), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            client = kernel.client()
            client.start_channels()
            await client.wait_for_ready(timeout=time_limit)
            return await _judge(kernel, client, cell, exercise, lessons)
    except TimeoutError:
        return Grade("timed out", f"still running after {time_limit:g} s")
    finally:
        if client is not None:
            client.stop_channels()
        with contextlib.suppress(Exception):
            await kernel.shutdown_kernel(now=True)
        _kill_marked(secret)
        shutil.rmtree(folder, ignore_errors=True)


# What the kernel runs before the answer: what the answer prints goes to a sink that keeps
# the first PRINTED characters, so a submission printing 100 MB costs nothing here.
_SINK = f"""
import sys as __sys

class __Sink:
    def __init__(self):
        self.kept, self.more = [], 0
    def write(self, text):
        if sum(map(len, self.kept)) < {PRINTED}:
            self.kept.append(text[:{PRINTED}])
        else:
            self.more += len(text)
        return len(text)
    def flush(self):
        pass
    def isatty(self):
        return False

__sys.stdout = __sys.stderr = __Sink()
"""

# The checker comes from the kit, never from the answer's cell: an answer that defines its
# own check_consumer() is checked by the real one.
_VERDICT = """
from wspatterns.exercises import {checker} as __check
__report = await __check({answer})
__grade = __json.dumps([[mark.name, text] for mark, text in __report.lines])
"""


async def _judge(
    kernel: AsyncKernelManager, client: Any, cell: Cell, exercise: Exercise, lessons: Path
) -> Grade:
    lesson = read_lesson(exercise, lessons)
    for code in [*import_cells(lesson), "import json as __json", _SINK]:
        failed = await _execute(kernel, client, code)
        if failed:
            return Grade("crashed", f"setting the lesson up: {failed}")
    failed = await _execute(kernel, client, cell.source)
    if failed:
        return Grade("crashed", failed)
    verdict = _VERDICT.format(checker=exercise.checker, answer=exercise.answer)
    failed = await _execute(kernel, client, verdict)
    if failed:
        return Grade("crashed", f"checking it: {failed}")
    reply = await _execute(kernel, client, "", wanted="__grade")
    try:
        lines = json.loads(ast.literal_eval(reply))
    except (ValueError, SyntaxError):
        return Grade("crashed", "the checker's report could not be read")
    marks = [mark for mark, _ in lines]
    if marks and all(mark == "PASSED" for mark in marks):
        return Grade("passed")
    starter = answer_cell(lesson, exercise)
    if starter is not None and _same_code(starter.source, cell.source):
        return Grade("not reached", "the answer is the starter as handed out")
    sign = {"FAILED": "✘", "NOT_REACHED": "–"}
    return Grade("failed", "; ".join(f"{sign[m]} {text}" for m, text in lines if m in sign))


async def _execute(
    kernel: AsyncKernelManager, client: Any, code: str, wanted: str | None = None
) -> str:
    """Run ``code`` and wait until the kernel is done with it. Returns what went wrong in
    one line ("" if nothing did), or with ``wanted``, the repr of that expression after."""
    expressions = {"wanted": wanted} if wanted else {}
    msg_id = client.execute(code, store_history=False, allow_stdin=False,
                            user_expressions=expressions)  # fmt: skip
    error = ""
    while True:
        try:
            message = await client.get_shell_msg(timeout=1)
        except queue.Empty:
            if not await kernel.is_alive():
                return "its kernel died (did the answer end its own process?)"
            continue
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        content = message["content"]
        if content["status"] == "error":
            error = f"{content['ename']}: {content['evalue']}".strip()
            if content["ename"] == "SyntaxError":
                error = _syntax_error(code) or error
        elif wanted:
            value = content.get("user_expressions", {}).get("wanted", {})
            return str(value.get("data", {}).get("text/plain", "''"))
        return error


def _syntax_error(code: str) -> str:
    try:
        compile(code, "<answer>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as error:
        return f"SyntaxError: {error.msg} (line {error.lineno} of the answer's cell)"
    return ""


def _same_code(first: str, second: str) -> bool:
    """Whether two cells hold the same code, comments and layout aside."""
    try:
        return ast.dump(ast.parse(first)) == ast.dump(ast.parse(second))
    except SyntaxError:
        return first.strip() == second.strip()


#: The kernel every answer runs on: an ipykernel of this very Python (the one whose kit
#: grades), whatever kernels the machine's Jupyter lists under other names.
KERNEL = "wspatterns-grading"


def _this_python(root: Path) -> KernelSpecManager:
    spec = root / "kernels" / KERNEL
    if not spec.exists():
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        description = {"argv": argv, "display_name": KERNEL, "language": "python"}
        (spec / "kernel.json").write_text(json.dumps(description), encoding="utf-8")
    return KernelSpecManager(kernel_dirs=[str(spec.parent)])


def _kill_marked(secret: str) -> None:
    """Kill every process a run started: each carries the run's secret in its environment."""
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get(MARKER) == secret:
                process.kill()

