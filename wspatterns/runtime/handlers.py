"""What a handler must look like for websockets to call it, checked before anything starts.

websockets calls a handler with the connection and awaits what it returns: an ``async def``,
or any callable returning an awaitable (``lambda websocket: echo(websocket)``). Whether a
plain function returns one is known only once it is called; the server reports it then.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InvalidHandlerError


def check_handler(handler: Any) -> None:
    """Refuse, with the fix in the message, a handler websockets could not call."""
    if not callable(handler):
        raise InvalidHandlerError(
            f"serve() needs a handler function, like `async def handler(websocket): ...`; "
            f"got {handler!r}."
        )
    name = name_of(handler)
    if name == "<lambda>":
        name = "handler"
    if inspect.isasyncgenfunction(handler) or inspect.isgeneratorfunction(handler):
        kind = "an async generator" if inspect.isasyncgenfunction(handler) else "a generator"
        raise InvalidHandlerError(
            f"handler {name!r} is {kind} (it contains `yield`); a handler "
            "sends with `await websocket.send(...)` instead of yielding."
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(object())
    except TypeError:
        required = [
            p
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(required) == 2:
            fix = (
                f"Since websockets 13 a handler gets only the connection: drop "
                f"{required[1].name!r} and read websocket.request.path instead."
            )
        else:
            fix = f"Write it as `async def {name}(websocket):`."
        raise InvalidHandlerError(
            f"handler {name}{signature} must take exactly one argument, the connection. {fix}"
        ) from None


def name_of(handler: Any) -> str:
    """The handler's name, as servers are named by default (a partial's function's name)."""
    inner = getattr(handler, "func", handler)  # functools.partial
    return getattr(inner, "__name__", None) or type(inner).__name__
