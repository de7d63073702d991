"""A browser tab inside the notebook: the page a program serves, framed under the cell.

``dana = browser_tab(chat, "/?name=dana")`` shows the program's page at that path
in an iframe, as a tab of its own would: the page's script is the program's, and
so is its WebSocket, which the notebook neither opens nor drives. The program's
flow records it, under the name its page gives it. ``dana.close()`` empties the
frame, as closing the tab would (its WebSocket closes with 1001, going away).
An anywidget (``static/tab.js``): it needs JupyterLab, Notebook 7 or VS Code.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import anywidget
import traitlets

from ..browsers.routes import asked_route
from ..browsers.view import esm
from ..errors import InvalidArgumentError

STATIC = resources.files("wspatterns.apps") / "static"


class BrowserTab(anywidget.AnyWidget):
    """An iframe of ``http://127.0.0.1:{port}{path}`` (or through jupyter-server-proxy)."""

    _esm = esm("tab.js", STATIC)
    port = traitlets.Int(0).tag(sync=True)
    path = traitlets.Unicode("/").tag(sync=True)
    route = traitlets.Unicode("auto").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    showing = traitlets.Bool(True).tag(sync=True)

    def close_tab(self) -> None:
        """Empty the frame: the page unloads and its WebSocket closes, as a closed tab's."""
        self.showing = False

    def __repr__(self) -> str:
        state = "open" if self.showing else "closed"
        return f"<BrowserTab 127.0.0.1:{self.port}{self.path} {state}>"


def browser_tab(app: Any, path: str = "/", *, route: str | None = None) -> BrowserTab:
    """Show ``app``'s page at ``path`` in a frame under the cell, and return the frame.

    ``app`` is anything with a ``port`` (a program from :func:`start_app`, a kit server).
    ``route`` forces how the frame reaches it, as for :func:`wspatterns.browser`.
    """
    if not path.startswith("/"):
        raise InvalidArgumentError(f"a path starts with '/'; got {path!r}")
    chosen, _ = asked_route(route)
    name = getattr(app, "name", "a program")
    return BrowserTab(port=app.port, path=path, route=chosen, title=f"{name}'s page")
