"""Tests for wspatterns.errors: one tree, each exception also the builtin it refines."""

import ast
import builtins
import inspect
import textwrap
from pathlib import Path

import pytest

from wspatterns import errors


def kit_exceptions() -> list[type[Exception]]:
    """The classes of errors.py, and every WSPatternsError a room defines (browsers' own)."""
    import wspatterns.browsers  # noqa: F401 - defines some of its own

    found = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    ]
    subclasses = list(errors.WSPatternsError.__subclasses__())
    while subclasses:
        kind = subclasses.pop()
        subclasses += kind.__subclasses__()
        if kind not in found and kind.__module__.startswith("wspatterns."):
            found.append(kind)
    return found


@pytest.mark.parametrize("kind", kit_exceptions(), ids=lambda kind: kind.__name__)
def test_every_kit_exception_is_a_wspatterns_error_and_a_builtin(kind):
    assert issubclass(kind, errors.WSPatternsError)
    if kind is not errors.WSPatternsError:
        builtins = [base for base in kind.__mro__ if base.__module__ == "builtins"]
        assert builtins[0] not in (Exception, BaseException, object), kind  # refines something


def test_the_tree_is_what_the_kit_raises():
    assert {kind.__name__ for kind in kit_exceptions()} >= {
        "WSPatternsError", "PortInUseError", "ServerStoppedError", "InvalidTargetError",
        "KitTimeoutError", "ProcessFailed", "HubUnavailable", "BadRequest",
        "InvalidArgumentError", "WrongTypeError", "InvalidHandlerError", "NothingToShowError",
        "MissingFileError", "NothingListeningError", "NotStartedByKitError",
        "NoSuchWorkerError", "NoFrontEndError", "BrowserConnectionError", "BrowserNotOpenError",
    }  # fmt: skip
    assert issubclass(errors.PortInUseError, OSError)
    assert issubclass(errors.KitTimeoutError, TimeoutError)
    assert issubclass(errors.InvalidTargetError, errors.InvalidArgumentError)
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.HandlerNotAwaitableError, errors.InvalidHandlerError)
    assert issubclass(errors.InvalidHandlerError, TypeError)
    assert issubclass(errors.MissingFileError, FileNotFoundError)
    assert issubclass(errors.NothingListeningError, ConnectionRefusedError)
    assert issubclass(errors.NoSuchWorkerError, IndexError)


def test_a_kit_os_error_keeps_its_errno():
    import errno

    refused = errors.NothingListeningError(errno.ECONNREFUSED, "nothing is listening")
    assert refused.errno == errno.ECONNREFUSED and refused.strerror == "nothing is listening"
    assert isinstance(refused, ConnectionRefusedError)


async def test_a_kit_timeout_is_caught_as_a_plain_timeout():
    from wspatterns.waiting import wait_until

    with pytest.raises(TimeoutError):
        await wait_until(lambda: False, 0.01)
    with pytest.raises(errors.WSPatternsError):
        await wait_until(lambda: False, 0.01)


# Everything the kit raises is a WSPatternsError: the package, walked.

PACKAGE = Path(errors.__file__).parent
BUILTIN_EXCEPTIONS = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)

# The builtins the kit may make as they are, each for a reason: (module, exception).
ALLOWED = {
    # A module's __getattr__ speaks Python's own protocol: "has no attribute", as Python says it.
    ("apps/__init__.py", "AttributeError"),
    # An abstract method: every broadcast strategy overrides it.
    ("broadcast/strategies.py", "NotImplementedError"),
    # Marks a line that cannot run (the loop always returns); never reaches anyone.
    ("flow/labels.py", "AssertionError"),
    # The business logic a checker hands a learner's handler fails as the learner's own would,
    # with a plain ValueError; the checker looks for it, and lesson 03 prints its name.
    ("exercises/scripted.py", "ValueError"),
}


def builtin_exceptions_made(root: Path) -> list[tuple[str, int, str]]:
    """(module, line, name) for each builtin exception made under ``root``: ``raise
    ValueError(...)``, ``raise KeyError``, or one handed on (``set_exception(RuntimeError())``)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                made = node.func
            elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Name):
                made = node.exc  # raise KeyError, the class itself
            else:
                continue
            if isinstance(made, ast.Name) and made.id in BUILTIN_EXCEPTIONS:
                found.append((module, node.lineno, made.id))
    return sorted(found)


def test_everything_the_kit_raises_is_a_wspatterns_error():
    offenders = [
        f"wspatterns/{module}:{line} {name}"
        for module, line, name in builtin_exceptions_made(PACKAGE)
        if (module, name) not in ALLOWED
    ]
    assert not offenders, (
        f"{len(offenders)} builtin exception(s) raised where a kit error belongs "
        "(wspatterns/errors.py):\n" + "\n".join(offenders)
    )


def test_every_allowed_builtin_is_still_there():
    made = {(module, name) for module, _, name in builtin_exceptions_made(PACKAGE)}
    assert ALLOWED <= made, f"no longer raised, drop from ALLOWED: {ALLOWED - made}"


def test_the_walk_finds_every_way_of_making_a_builtin_exception(tmp_path):
    (tmp_path / "rooms").mkdir()
    (tmp_path / "rooms" / "room.py").write_text(
        textwrap.dedent(
            """
            from wspatterns.errors import KitTimeoutError

            def check(value, future):
                if value is None:
                    raise ValueError("no value")
                if value == 1:
                    raise KeyError
                if value == 2:
                    future.set_exception(RuntimeError("refused"))
                if value == 3:
                    raise KitTimeoutError("late")  # a kit error: fine
                try:
                    return int(value)
                except TypeError:
                    raise  # re-raised as it came: fine
            """
        )
    )
    assert builtin_exceptions_made(tmp_path) == [
        ("rooms/room.py", 6, "ValueError"),
        ("rooms/room.py", 8, "KeyError"),
        ("rooms/room.py", 10, "RuntimeError"),
    ]
