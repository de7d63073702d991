from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from wspatterns.patterns import PATTERNS, echo


async def test_echo_is_a_plain_websockets_handler():
    async with serve(echo, "127.0.0.1", 0) as server:  # no kit involved
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", proxy=None) as websocket:
            for message in ["text", b"\x00binary", ""]:
                await websocket.send(message)
                assert await websocket.recv() == message


def test_every_pattern_is_an_async_handler():
    from wspatterns.runtime import _check_handler

    for handler in PATTERNS.values():
        _check_handler(handler)
