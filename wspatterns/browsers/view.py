"""The widget a browser client is drawn as: an anywidget whose JavaScript opens the WebSocket.

Its ES module and style sheet are ``static/client.js`` and ``static/client.css``,
shipped with the package. The kernel talks to the page with custom messages:
``{"do": ...}`` one way, ``{"event": ...}`` the other (see the module's comments).
Importing this module imports anywidget and ipywidgets, so only a browser client does.
"""

from __future__ import annotations

from importlib import resources

import anywidget
import traitlets

STATIC = resources.files("wspatterns.browsers") / "static"


class BrowserView(anywidget.AnyWidget):
    """One browser client's widget: ``key`` tells its pages apart, ``name`` is shown."""

    _esm = (STATIC / "client.js").read_text(encoding="utf-8")
    _css = (STATIC / "client.css").read_text(encoding="utf-8")
    key = traitlets.Unicode("").tag(sync=True)
    name = traitlets.Unicode("").tag(sync=True)
