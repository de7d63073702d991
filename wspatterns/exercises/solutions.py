"""Our solutions to the exercises, loaded beside the learner's own answer, never over it.

A lesson checks our solution with ``ours = solution("01_bye_consumer")`` and
``await check_consumer(ours.bye_consumer)``: the learner's ``bye_consumer``
stays theirs, even after Run All. ``%load solutions/01_bye_consumer.py`` still
pastes our code into a cell for whoever wants to read or change it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from ..errors import MissingFileError


def solution(name: str, folder: str | Path = "solutions") -> ModuleType:
    """Load ``folder/name.py`` (beside the lessons) as a module of its own and return it.

    Raises FileNotFoundError naming the folder looked in and what is there.
    """
    path = Path(folder) / f"{name.removesuffix('.py')}.py"
    if not path.is_file():
        there = sorted(each.stem for each in Path(folder).glob("*.py"))
        raise MissingFileError(
            f"no solution {name!r} in {Path(folder).resolve()}; there are: {', '.join(there)}. "
            "Lessons run from the notebooks folder, where solutions/ is."
        )
    spec = importlib.util.spec_from_file_location(f"solutions.{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py file always has both
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
