"""Echo round-trips per second: the kit (recording on both ends) against plain websockets.

Both run in this process, on loopback, in alternating rounds, and the script
prints each rate and the kit/plain ratio (goal: >= 0.95).

    python benchmarks/echo.py [--messages 5000] [--rounds 7]
"""

import argparse
import asyncio
import statistics
import time

from websockets.asyncio.client import connect as plain_connect
from websockets.asyncio.server import serve as plain_serve

import wspatterns


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def round_trips(websocket, messages: int) -> float:
    """Round trips per second of CPU time over ``messages`` send/recv pairs.

    Client and server share this process and its one thread, so the CPU time
    it spends is the work both ends do; unlike wall time, it hardly moves when
    something else on the machine wakes up.
    """
    start = time.process_time()
    for _ in range(messages):
        await websocket.send("ping")
        await websocket.recv()
    return messages / (time.process_time() - start)


async def plain(messages: int) -> float:
    async with plain_serve(echo, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with plain_connect(url, proxy=None) as websocket:
            return await round_trips(websocket, messages)


async def kit(messages: int) -> float:
    server = await wspatterns.serve(echo)
    try:
        async with wspatterns.connect(server) as websocket:
            rate = await round_trips(websocket, messages)
    finally:
        await server.stop()
    assert len(server.flow) >= 4 * messages  # recording was really on
    return rate


async def main(messages: int, rounds: int) -> None:
    await plain(500), await kit(500)  # warm up
    rates = {"plain websockets": [], "wspatterns": []}
    ratios = []
    for _ in range(rounds):
        # Alternate, and compare each kit round with the plain round beside it,
        # so that the machine's drifts in speed cancel out.
        plain_rate, kit_rate = await plain(messages), await kit(messages)
        rates["plain websockets"].append(plain_rate)
        rates["wspatterns"].append(kit_rate)
        ratios.append(kit_rate / plain_rate)
    for name, values in rates.items():
        print(f"{name:>17}: {statistics.median(values):9,.0f} round trips per CPU-second (median of {rounds})")
    print(f"ratio kit/plain: {statistics.median(ratios):.3f} (median of {rounds} pairs; goal >= 0.95)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.rounds))
