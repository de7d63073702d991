"""A page with a browser client, answered on the server's own port: for the terminal.

``python -m wspatterns serve echo`` answers a plain HTTP ``GET /`` with this page
(websockets' ``process_request`` may answer a request with any HTTP response
instead of upgrading it). Its script opens a WebSocket back to the same host
and port, so any browser tab on the machine joins the server, named by the
address's ``?name=`` or ``tab-XXXX``. WebSocket requests pass through untouched.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from http import HTTPStatus
from importlib import resources

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

STATIC = resources.files("wspatterns.browsers") / "static"


def page(pattern: str) -> str:
    """The HTML of the page for a server of ``pattern``."""
    template = (STATIC / "page.html").read_text(encoding="utf-8")
    style = (STATIC / "client.css").read_text(encoding="utf-8")
    return template.replace("/*CSS*/", style).replace("__PATTERN__", html.escape(pattern))


def answer_pages(
    pattern: str,
) -> Callable[[ServerConnection, Request], Response | None]:
    """A ``process_request`` that serves the page at ``/`` and lets WebSocket requests through."""
    body = page(pattern)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if request.path.partition("?")[0] != "/":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found: the page is at /\n")
        response = connection.respond(HTTPStatus.OK, body)
        del response.headers["Content-Type"]  # websockets' Headers add; they do not replace
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        response.headers["Cache-Control"] = "no-store"
        return response

    return process_request
