"""What the lessons and the cheat sheet say of websockets, run against the installed websockets.

Plain websockets on both ends, no kit: if a release changes one of these, this file
fails, and the lessons' sentences about it must change with it.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State

from .utils import BOUND


async def test_a_close_frame_without_a_code_ends_async_for_quietly():
    """01, 02 and the cheat sheet: 1005 (no status) is a normal close, like 1000 and 1001."""
    ended = asyncio.get_running_loop().create_future()

    async def handler(websocket):
        try:
            async for _ in websocket:
                pass
        except Exception as error:  # noqa: BLE001 - whatever it is, the test names it
            ended.set_result(error)
        else:
            ended.set_result(websocket.close_code)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", proxy=None) as client:
            # A close frame with an empty body: no status code at all.
            client.protocol.send_frame(Frame(Opcode.CLOSE, b""))
            client.send_data()  # hand what the protocol wrote to the transport
            async with asyncio.timeout(BOUND):
                assert await ended == 1005
                with pytest.raises(ConnectionClosedOK):
                    await client.recv()


async def test_a_silent_peer_is_dropped_after_the_ping_and_then_close_timeout():
    """04 and the cheat sheet: ping_interval + ping_timeout, then close_timeout more."""
    close_timeout = 1.0
    seen: dict[str, float] = {}
    closed = asyncio.get_running_loop().create_future()

    async def handler(websocket):
        await websocket.wait_closed()
        closed.set_result(websocket)

    async with serve(
        handler, "127.0.0.1", 0, ping_interval=0.1, ping_timeout=0.1, close_timeout=close_timeout
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", proxy=None, close_timeout=0.1) as client:
            client.transport.pause_reading()  # silent: no pong, no close frame ever comes back
            [connection] = list(server.connections)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(BOUND):
                while connection.state is State.OPEN:
                    await asyncio.sleep(0.005)
                seen["failed"] = loop.time()
                # Failed with 1011, its close frame sent, the connection waits for the answer.
                assert connection.state is State.CLOSING
                assert connection.protocol.close_sent == Close(1011, "keepalive ping timeout")
                await closed
                seen["closed"] = loop.time()
            client.transport.resume_reading()
    # A lower bound only: a busy machine makes it longer, never shorter.
    assert seen["closed"] - seen["failed"] >= close_timeout * 0.9
