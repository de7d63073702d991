"""What every child process of the broadcast experiment does, whatever its role.

Each one holds many connections, so it first asks for file descriptors enough
(:func:`raise_file_limit`). Then it measures in windows its parent opens and
closes with lines on stdin (:func:`measure_on_command`): ``start`` opens a
window, ``stop`` prints what the window measured as one JSON line and closes
it, ``quit`` (or the end of stdin, SIGTERM, SIGINT) ends the process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..runtime.processes import obey, say, until_signal


class Window(Protocol):
    """Something that measures between :meth:`start` and :meth:`pause`."""

    @property
    def open(self) -> bool:
        """Whether it is measuring now."""
        ...

    def start(self) -> None:
        """Forget what was measured, and measure from now."""
        ...

    def pause(self) -> None:
        """Stop measuring."""
        ...


async def measure_on_command(window: Window, report: Callable[[], dict[str, Any]]) -> None:
    """Obey the parent until told to quit: ``start`` opens ``window``, ``stop`` prints
    ``report()`` as a JSON line and pauses it. End of stdin, SIGTERM and SIGINT also quit,
    after printing the report of a window still open."""

    def stop() -> None:
        say(report())
        window.pause()

    await until_signal(obey(window.start, stop))
    if window.open:
        say(report())


def raise_file_limit() -> None:
    """A thousand connections need a thousand file descriptors; ask for as many as allowed."""
    import resource  # not on Windows, where the experiment's processes do not run anyway

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
