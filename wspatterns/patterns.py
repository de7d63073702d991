"""Reference handlers for the patterns the lessons teach, written as a learner would write them.

Each is a plain ``async def handler(websocket)``: serve it with
``wspatterns.serve``, or with websockets directly.
"""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection


async def echo(websocket: ServerConnection) -> None:
    """Send every message back to the client that sent it, until the client leaves."""
    async for message in websocket:
        await websocket.send(message)


#: The handlers ``python -m wspatterns serve NAME`` can run, by name.
PATTERNS = {
    "echo": echo,
}
