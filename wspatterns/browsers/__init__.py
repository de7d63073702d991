"""Browser clients: a real WebSocket in the notebook's page, recorded in the server's flow.

* :mod:`~wspatterns.browsers.client` — ``await browser(server, name="alice")`` and
  :class:`BrowserClient`, which Python drives as it drives a kit client;
* :mod:`~wspatterns.browsers.view` — the widget it is drawn as (anywidget; its JavaScript
  and CSS are ``static/client.js`` and ``static/client.css``);
* :mod:`~wspatterns.browsers.routes` — how the page reaches the server: straight, or
  through jupyter-server-proxy when the browser is not on the kernel's machine;
* :mod:`~wspatterns.browsers.frontends` — whether any page can draw one here;
* :mod:`~wspatterns.browsers.page` — the page ``python -m wspatterns serve`` answers
  plain HTTP with, so any browser tab can join from a terminal.
"""

from __future__ import annotations

from .client import (
    BrowserClient,
    BrowserConnectionError,
    BrowserNotOpenError,
    NoFrontEndError,
    browser,
)
from .routes import ROUTE_VARIABLE, ROUTES, Route

__all__ = [
    "ROUTES",
    "ROUTE_VARIABLE",
    "BrowserClient",
    "BrowserConnectionError",
    "BrowserNotOpenError",
    "NoFrontEndError",
    "Route",
    "browser",
]
