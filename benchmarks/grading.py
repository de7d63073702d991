"""How long one command takes to grade a class of 30 on this machine.

The class is made as tests/test_teaching.py makes its own, from a fresh student copy: our
solutions, the starters, wrong answers from the exercise tests, hostile and broken
submissions; the first 30 of those, taken so that every kind is in. Then
``python -m wspatterns grade`` runs on them, once, as a teacher would, and this prints how
long it took and how many answers were graded each way.

    python benchmarks/grading.py [--students 30] [--jobs N]
"""

from __future__ import annotations

import argparse
import collections
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_teaching import make_class  # noqa: E402 - the tests' class, on purpose
from wspatterns.teaching import student_copy  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, help="answers at once (as many as cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wspatterns-grading-bench-") as root:
        copy, folder = Path(root) / "lessons", Path(root) / "class"
        student_copy(copy)
        folder.mkdir()
        expected = make_class(copy, folder)
        kinds = collections.defaultdict(list)  # solution, starter, wrong, a hostile one...
        for student in sorted(expected):
            kinds[student.split("-")[0]].append(student)
        chosen: list[str] = []
        while len(chosen) < min(args.students, len(expected)):  # one of each kind in turn
            for names in kinds.values():
                if names and len(chosen) < args.students:
                    chosen.append(names.pop(0))
        paths = [str(path) for path in folder.iterdir() if path.stem in chosen]
        command = [sys.executable, "-m", "wspatterns", "grade", *paths, "--out", f"{root}/out",
                   "--lessons", str(copy)]  # fmt: skip
        if args.jobs:
            command += ["--jobs", str(args.jobs)]
        start = time.monotonic()
        subprocess.run(command, check=True)
        took = time.monotonic() - start
        with open(f"{root}/out/grades.csv", encoding="utf-8") as table:
            rows = list(csv.DictReader(table))
        counted = collections.Counter(
            value.split(":")[0] for row in rows for key, value in row.items()
            if key != "student" and not value.startswith("missing")
        )  # fmt: skip
        print(f"{len(rows)} students, {sum(counted.values())} answers graded in {took:.0f} s:"
              f" {dict(counted)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
