"""The one line a plain websockets program adds so that the kit can draw what it served.

Inside the program, the server stays websockets' own::

    from wspatterns.apps import recorded

    async with serve(chat, "127.0.0.1", port, process_request=check, **recorded()) as server:
        ...

Run by hand, ``recorded()`` is ``{}`` and the program is exactly what it would be
without the kit. Started by :func:`~wspatterns.apps.start_app`, it returns the one
option websockets offers for this, ``create_connection=``: each connection then
records its frames into the program's flow, as the kit's own servers do (see
:mod:`wspatterns.flow.recorder`), and changes nothing else. The notebook asks for
the flow on the program's stdin, a pipe only the process that started it holds;
the answers come back on stdout, on lines of their own; at exit, the program writes
its last flow there too, so a graceful stop keeps its final frames.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import os
import sys
from typing import Any

from ..flow import Flow
from ..runtime.processes import stdin_lines
from ..runtime.server import KitServerConnection

#: Set by the kit for the programs it starts: the name the flow gives the program.
NAME_VARIABLE = "WSPATTERNS_APP_NAME"
#: Set by the kit: the notebook's flow token, so both ends of a kit client pair up.
TOKEN_VARIABLE = "WSPATTERNS_APP_FLOW_TOKEN"
#: What starts the program's lines for the kit on stdout; the rest is the program's own.
KIT_LINE = "\x1ewspatterns-app "


class _Program:
    """The program's side of the kit: its flow, its name, the names it gives clients."""

    def __init__(self, name: str, token: str | None) -> None:
        self.name = name
        self.flow = Flow(token=token)
        self._numbers = itertools.count(1)
        self.listener: asyncio.Task[None] | None = None

    def next_client_name(self) -> str:
        return f"client-{next(self._numbers)}"

    def new_connection(self, *args: Any, **kwargs: Any) -> KitServerConnection:
        return KitServerConnection(*args, kit=self, **kwargs)

    async def obey(self) -> None:
        """Answer the notebook: ``flow`` (the flow so far) and ``clear``."""
        async for command in stdin_lines():
            if command == "flow":
                tell({"flow": self.flow.export()})
            elif command == "clear":
                self.flow.clear()
                tell({"cleared": self.name})

    def last_words(self) -> None:
        tell({"final": self.flow.export()})


def tell(what: dict[str, Any]) -> None:
    """One line for the kit on stdout."""
    with contextlib.suppress(OSError, ValueError):  # the notebook's side may be gone already
        sys.stdout.write(KIT_LINE + json.dumps(what) + "\n")
        sys.stdout.flush()


_program: _Program | None = None


def recorded() -> dict[str, Any]:
    """Options for websockets' ``serve()`` that record the program's connections for the kit.

    ``{}`` unless the kit started this program (:func:`~wspatterns.apps.start_app`), so the
    program runs by hand unchanged. Call it inside the running event loop, as an argument
    of ``serve()``. Each call gives the same recorder.
    """
    global _program
    name = os.environ.get(NAME_VARIABLE)
    if not name:
        return {}
    if _program is None:
        _program = _Program(name, os.environ.get(TOKEN_VARIABLE) or None)
        _program.listener = asyncio.get_running_loop().create_task(_program.obey())
        atexit.register(_program.last_words)
    return {"create_connection": _program.new_connection}
