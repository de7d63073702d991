"""Which way a page's WebSocket goes to a kit server, and what the page needs to know to go.

The kit's servers listen on 127.0.0.1 of the kernel's machine. A browser on that
machine reaches them there: the **direct** route, the server's own URL. A browser
elsewhere (JupyterHub, Binder, Codespaces, a remote JupyterLab) cannot: its
127.0.0.1 is its own. It goes **through jupyter-server-proxy** instead:
``<base_url>proxy/<port>/`` on the page's own Jupyter server, ``ws`` or ``wss``
as the page is served, authenticated like the page.

Only the page knows where it is served from, so the page chooses (see
``static/client.js``): ``"auto"`` takes the direct route when the page comes
from a loopback address (or from no Jupyter server at all, as in VS Code), and
the proxy otherwise. ``route="direct"`` or ``route="proxy"`` forces one, and so
does the environment variable ``WSPATTERNS_BROWSER_ROUTE``.
"""

from __future__ import annotations

import os
from typing import Literal, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import InvalidArgumentError
from ..runtime.server import NAME_PARAMETER

#: ``"auto"`` (the page decides), ``"direct"`` or ``"proxy"``.
Route: TypeAlias = Literal["auto", "direct", "proxy"]
ROUTES: tuple[Route, ...] = ("auto", "direct", "proxy")

#: Set it to ``direct`` or ``proxy`` to force a route for every browser client.
ROUTE_VARIABLE = "WSPATTERNS_BROWSER_ROUTE"


def asked_route(route: str | None) -> tuple[Route, str]:
    """The route asked for, and who asked, in words: ``route`` if given, else
    ``$WSPATTERNS_BROWSER_ROUTE``, else ``"auto"``.

    Raises ValueError, naming the choices, for anything else.
    """
    where = "route="
    if route is None:
        route = os.environ.get(ROUTE_VARIABLE, "").strip() or "auto"
        where = f"${ROUTE_VARIABLE}="
    if route not in ROUTES:
        raise InvalidArgumentError(
            f"{where}{route!r} is not a route: use one of {', '.join(ROUTES)}."
        )
    return route, f"{where}{route} asked for it"


def with_name(url: str, name: str) -> str:
    """``url`` with the client's name in its query, where a kit server reads it."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = [(k, v) for k, v in query if k != NAME_PARAMETER] + [(NAME_PARAMETER, name)]
    return urlunsplit(parts._replace(path=parts.path or "/", query=urlencode(query)))


def target(url: str, name: str, route: Route, asked_by: str = "") -> dict[str, object]:
    """What a page needs to reach the server at ``url`` as ``name``, either way."""
    named = urlsplit(with_name(url, name))
    if named.port is None:
        raise InvalidArgumentError(
            f"{url!r} names no port: a browser client needs one to reach it."
        )
    return {
        "direct": named.geturl(),
        "port": named.port,
        "path": f"{named.path}?{named.query}",
        "route": route,
        "asked_by": asked_by,
    }
