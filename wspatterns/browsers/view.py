"""The widget a browser client is drawn as: an anywidget whose JavaScript opens the WebSocket.

Its ES module and style sheet are ``static/client.js`` and ``static/client.css``,
shipped with the package. The kernel talks to the page with custom messages:
``{"do": ...}`` one way, ``{"event": ...}`` the other (see the module's comments).
Importing this module imports anywidget and ipywidgets, so only a browser client does.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

import anywidget
import traitlets

STATIC = resources.files("wspatterns.browsers") / "static"


def esm(name: str, folder: Traversable = STATIC) -> str:
    """The ES module ``folder/name``, with ``where.js`` (where the page is) in front of it."""
    where = (STATIC / "where.js").read_text(encoding="utf-8")
    return where + "\n" + (folder / name).read_text(encoding="utf-8")


class BrowserView(anywidget.AnyWidget):
    """One browser client's widget: ``key`` tells its pages apart, ``name`` is shown."""

    _esm = esm("client.js")
    _css = (STATIC / "client.css").read_text(encoding="utf-8")
    key = traitlets.Unicode("").tag(sync=True)
    name = traitlets.Unicode("").tag(sync=True)
