"""The kit's few settings, on the lowest floor: every module may import them.

``CAP`` is how many events a flow keeps; set ``WSPATTERNS_CAP`` to change it. ``TIMEOUT``
bounds what the kit adds (opening a client, ``wait_closed()``, ``run()``, the waits of
:mod:`~wspatterns.waiting`, programs and workers, its own checkers); set
``WSPATTERNS_TIMEOUT`` to change it. It never bounds ``recv()``: that waits as long as
websockets' own does.

Every ``timeout`` of the kit means the same, as in asyncio and websockets:

* left out, the wait gives up after ``TIMEOUT`` seconds (this module's, read when the
  call is made); a client's own waits take the ``timeout`` its ``connect()`` was given,
  itself ``TIMEOUT`` when left out; the few waits with a bound of their own (a grace for
  handlers in ``stop()``, an experiment's, grown with its run) name it;
* a number of seconds, after that many;
* ``None``, never: it waits for ever.

Giving up raises a :class:`~wspatterns.errors.WSPatternsError` that says what was
still missing: a ``TimeoutError`` (:class:`~wspatterns.errors.KitTimeoutError`), or,
for a child process, :class:`~wspatterns.errors.ProcessFailed`. The default is one
object, :data:`DEFAULT`, and :func:`timeout_seconds` turns it into seconds.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

from websockets.asyncio.server import ServerConnection

from .errors import InvalidArgumentError


def _from_environment(variable: str, default: str, convert: Callable[[str], Any]) -> Any:
    """The setting in ``variable`` of the environment, a positive number; ``default`` if unset."""
    text = os.environ.get(variable, default)
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise InvalidArgumentError(f"{variable}={text!r}: it must be a positive number.")
    return value


#: Seconds a wait of the kit may take before it gives up, unless told otherwise.
TIMEOUT: float = _from_environment("WSPATTERNS_TIMEOUT", "10", float)

#: Events a flow keeps unless its ``cap`` says otherwise; set ``WSPATTERNS_CAP`` to change
#: it, for the flows of the programs and workers the kit starts too (they inherit it).
CAP: int = _from_environment("WSPATTERNS_CAP", "100000", int)

#: Seconds a handler gets to return after its connection is closed by ``stop()``.
STOP_GRACE: float = 2.0

#: What websockets calls for each connection: ``async def handler(websocket)``.
Handler: TypeAlias = Callable[[ServerConnection], Awaitable[None]]


class _Default:
    """The type of :data:`DEFAULT`: one object, that no number or None can be mistaken for."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT"


#: The default of every ``timeout`` of the kit: ``timeout`` left out. Typed Any so that
#: ``timeout: float | None = DEFAULT`` says what a caller may pass: seconds, or None.
DEFAULT: Final[Any] = _Default()


def timeout_seconds(timeout: float | None, default: float | None = DEFAULT) -> float | None:
    """The seconds a wait may take (None: no limit): ``timeout`` as given or, if it was left
    out (:data:`DEFAULT`), the wait's own ``default`` if it has one, else ``TIMEOUT`` as it
    is now."""
    if timeout is not DEFAULT:
        return timeout
    return TIMEOUT if default is DEFAULT else default
