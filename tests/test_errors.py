"""Tests for wspatterns.errors: one tree, each exception also the builtin it refines."""

import inspect

import pytest

from wspatterns import errors


def kit_exceptions() -> list[type[Exception]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    ]


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
    }  # fmt: skip
    assert issubclass(errors.PortInUseError, OSError)
    assert issubclass(errors.KitTimeoutError, TimeoutError)
    assert issubclass(errors.InvalidTargetError, ValueError)


async def test_a_kit_timeout_is_caught_as_a_plain_timeout():
    from wspatterns.waiting import wait_until

    with pytest.raises(TimeoutError):
        await wait_until(lambda: False, 0.01)
    with pytest.raises(errors.WSPatternsError):
        await wait_until(lambda: False, 0.01)
