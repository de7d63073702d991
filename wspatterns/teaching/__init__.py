"""For teachers: hand the lessons out, and grade what comes back.

* :mod:`~wspatterns.teaching.catalog` — the exercises: which lesson holds each, the
  function a learner writes, the checker that judges it, our solution;
* :mod:`~wspatterns.teaching.student_copy` — the lessons as a class receives them,
  without our solutions (``python -m wspatterns student-copy DEST``);
* :mod:`~wspatterns.teaching.grading` — each submitted answer run through its exercise's
  own checker, in a kernel of its own, with a time limit (``python -m wspatterns grade``);
* :mod:`~wspatterns.teaching.gradebook` — the table of grades as CSV and as a page.
"""

from __future__ import annotations

from .catalog import EXERCISES, Exercise
from .gradebook import write_gradebook
from .grading import grade
from .student_copy import student_copy

__all__ = ["EXERCISES", "Exercise", "grade", "student_copy", "write_gradebook"]
