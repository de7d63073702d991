"""How what went wrong inside a handler reaches the learner.

A handler runs in the background, so an exception raised inside it has no
cell to land in. The kit keeps every such exception on the server's
``errors`` list and shows it:

* in a notebook, at the end of the next cell that runs (an IPython
  ``post_run_cell`` hook), as text on stderr;
* in a script or a terminal, on stderr as soon as it happens.
"""

from __future__ import annotations

import asyncio
import os
import sys
import sysconfig
import threading
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


#: How a report's first line starts: what a worker's parent reads its reports by.
ERROR = "wspatterns: "
NEWS = "wspatterns news: "


@dataclass
class ErrorReport:
    """One thing that went wrong inside a server, kept for the learner to read.

    ``exception`` is the exception itself; ``str(report)`` explains it in words,
    with the lines of your own code that led to it. A report with ``news`` set is
    not an error (Redis is back, say): it is shown on stdout, not stderr.
    """

    server: str
    connection: str | None
    exception: BaseException | None
    summary: str
    hint: str = ""
    frames: list[traceback.FrameSummary] = field(default_factory=list)
    news: bool = False

    def __str__(self) -> str:
        lines = [f"{NEWS if self.news else ERROR}{self.summary}"]
        for frame in self.frames:
            lines.append(f"  {_place(frame.filename)}, line {frame.lineno}, in {frame.name}")
            if frame.line:
                lines.append(f"    {frame.line.strip()}")
        if self.exception is not None:
            for inner in leaves(self.exception):  # the errors inside a group, not the group
                lines.extend(traceback.format_exception_only(inner)[-1:])
        if self.hint:
            lines.append(self.hint)
        return "\n".join(line.rstrip("\n") for line in lines)


def handler_failed(
    server: str,
    handler: str,
    connection: str,
    exc: BaseException,
    *,
    still_open: bool | None = None,
) -> ErrorReport:
    """Describe an exception that escaped ``handler`` while it served ``connection``.

    ``still_open`` says whether ``connection`` itself was still open (None: not known).
    Open, a ConnectionClosed came from another connection the handler was sending to;
    closed, websockets had no connection left to close with 1011.
    """
    # websockets closes with 1011 after a handler fails, unless the connection is gone already.
    ending = (
        "its connection had already closed"
        if still_open is False
        else "websockets closed that connection with code 1011"
    )
    if isinstance(exc, ConnectionClosed) and still_open:
        summary = (
            f"handler {handler!r} of server {server!r} ended with {type(exc).__name__} "
            f"while serving {connection}, whose connection was still open: another "
            f"connection it was sending to had closed ({_who_closed(exc)})."
        )
        hint = (
            "Sending to other clients: remove a connection from your registry when its "
            "handler ends, or use broadcast(), which skips connections that are not open."
        )
    elif isinstance(exc, ConnectionClosed):
        summary = (
            f"handler {handler!r} of server {server!r} ended with {type(exc).__name__} "
            f"for {connection}: {_who_closed(exc)} while the handler was still using it."
        )
        hint = (
            "To end quietly when a client leaves, catch "
            "websockets.exceptions.ConnectionClosed around recv() and send()."
        )
    elif isinstance(exc, BaseExceptionGroup):
        inner = leaves(exc)
        more = f" and {len(inner) - 1} more error(s)" if len(inner) > 1 else ""
        summary = (
            f"handler {handler!r} of server {server!r} raised {type(inner[0]).__name__}{more} "
            f"for {connection}, inside an {type(exc).__name__} (the tasks of a TaskGroup "
            f"fail together); {ending}."
        )
        frames = _your_frames(exc) + [f for e in inner for f in _your_frames(e)]
        return ErrorReport(server, connection, exc, summary, "", frames)
    else:
        summary = (
            f"handler {handler!r} of server {server!r} raised {type(exc).__name__} "
            f"for {connection}; {ending}."
        )
        hint = ""
    return ErrorReport(server, connection, exc, summary, hint, _your_frames(exc))


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside an exception group, however deep; ``[exc]`` for any other."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def _who_closed(exc: ConnectionClosed) -> str:
    if exc.rcvd is None and exc.sent is None:
        return "the connection was lost without a closing handshake"
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        return f"the client closed the connection (code {exc.rcvd.code})"
    assert exc.sent is not None  # neither case above: the server sent a close frame
    return f"the server closed the connection (code {exc.sent.code})"


# Where a frame comes from: your code, or a library's (the kit, websockets, asyncio).
_KIT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LIBRARY_DIRS = tuple(
    {
        os.path.abspath(path) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_paths().get(key))
    }
)


def is_yours(filename: str) -> bool:
    """True for code you wrote (a notebook cell, a file of yours); False for kit and libraries."""
    if filename.startswith("<"):
        return True
    path = os.path.abspath(filename)
    return not path.startswith(_KIT_DIR) and not path.startswith(_LIBRARY_DIRS)


def _your_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    frames = traceback.extract_tb(exc.__traceback__)
    return [frame for frame in frames if is_yours(frame.filename)]


def _place(filename: str) -> str:
    """Name a source file as a learner knows it: ``Cell In[3]`` for notebook cells."""
    shell = ipython()
    if shell is not None:
        label = shell.compile.format_code_name(filename)
        if label is not None:
            return " ".join(label)
    return f'File "{filename}"'


def ipython() -> InteractiveShell | None:
    """The running IPython shell, or None; never imports IPython itself."""
    module = sys.modules.get("IPython")
    shell: InteractiveShell | None = module.get_ipython() if module is not None else None
    return shell


# Reports wait here until a notebook cell finishes, then print under it.
_pending: list[ErrorReport] = []
_pending_lock = threading.Lock()
_hooked = False


def show(report: ErrorReport) -> None:
    """Make ``report`` visible: under the next cell in a notebook, on stderr elsewhere.

    Under a cell, news goes to stdout and errors to stderr (drawn red). Elsewhere both go
    to stderr: a worker process keeps its stdout for talking to its parent.
    """
    global _hooked
    shell = ipython()
    if shell is None:
        print(report, file=sys.stderr, flush=True)
        return
    with _pending_lock:
        _pending.append(report)
        if not _hooked:
            shell.events.register("post_run_cell", _print_pending)
            _hooked = True


def waiting(report: ErrorReport) -> bool:
    """True while ``report`` waits for the next cell to finish, to be printed under it."""
    with _pending_lock:
        return any(each is report for each in reversed(_pending))


def _print_pending(*_args: Any) -> None:
    with _pending_lock:
        reports = _pending[:]
        _pending.clear()
    if reports:
        sys.stdout.flush()  # so the cell's own prints come first, then what went wrong
    # Grouped by server, each server's in the order they happened: reports from worker
    # processes arrive in whichever order the processes ran, and must not read shuffled.
    for report in sorted(reports, key=lambda report: report.server):
        print(report, file=sys.stdout if report.news else sys.stderr, flush=True)


# Which task runs the notebook cell now, so that a hint about a long wait speaks only of
# the cell's own waits, not of a background task's.
_cell_task: asyncio.Task[Any] | None = None
_watching_cells = False


def _cell_started(*_args: Any) -> None:
    global _cell_task
    try:
        _cell_task = asyncio.current_task()
    except RuntimeError:  # a cell run without an event loop
        _cell_task = None


def _cell_finished(*_args: Any) -> None:
    global _cell_task
    _cell_task = None


def watch_cells() -> None:
    """Start noting which task runs each notebook cell (does nothing outside IPython)."""
    global _watching_cells
    shell = ipython()
    if shell is None or _watching_cells:
        return
    shell.events.register("pre_run_cell", _cell_started)
    shell.events.register("post_run_cell", _cell_finished)
    _watching_cells = True


def waits_in_cell(task: asyncio.Task[Any] | None) -> bool:
    """True if ``task`` is what a notebook cell is awaiting now, or if there is no notebook."""
    if ipython() is None:
        return True
    return task is not None and task is _cell_task


def note(text: str) -> None:
    """Say something that is not an error, at once: under the running cell, or on stdout."""
    print(f"wspatterns: {text}", flush=True)
