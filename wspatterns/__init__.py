"""wspatterns: run WebSocket servers and clients inside a notebook and watch the messages move.

Start here::

    from wspatterns import serve, connect

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    server = await serve(echo)
    async with connect(server) as websocket:
        await websocket.send("hello")
        print(await websocket.recv())
"""

from .browsers import BrowserClient, browser
from .errors import InvalidTargetError, PortInUseError, ServerStoppedError, WSPatternsError
from .flow import Event, Flow
from .reports import ErrorReport
from .runtime import (
    Client,
    Server,
    ThreadServer,
    connect,
    run,
    serve,
    serve_in_thread,
    servers,
    stop_all,
)
from .settings import TIMEOUT

__all__ = [
    "TIMEOUT",
    "BrowserClient",
    "Client",
    "ErrorReport",
    "Event",
    "Flow",
    "InvalidTargetError",
    "PortInUseError",
    "Server",
    "ServerStoppedError",
    "ThreadServer",
    "WSPatternsError",
    "browser",
    "connect",
    "run",
    "serve",
    "serve_in_thread",
    "servers",
    "stop_all",
]
