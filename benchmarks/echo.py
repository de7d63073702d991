"""Echo round trips per second: the kit, recording, against plain websockets.

Three set-ups run in this process, on loopback, in alternating rounds:

* plain websockets server and client;
* a kit server (recording) with a plain websockets client, as when a browser
  or any other program is the client;
* a kit server and a kit client, both recording into one flow (the default
  in the lessons, which is what lets the views pair sends with receipts).

It prints round trips per CPU-second of this process (client and server share
its one thread, so CPU time is the work both ends do, and it hardly moves when
something else on the machine wakes up), the best of all rounds, and each
set-up's ratio to plain websockets (goal: >= 0.95).

    python benchmarks/echo.py [--messages 2000] [--rounds 20]
"""

import argparse
import asyncio
import time

from websockets.asyncio.client import connect as plain_connect
from websockets.asyncio.server import serve as plain_serve

import wspatterns


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def round_trips(websocket, messages: int) -> float:
    """Round trips per CPU-second over ``messages`` send/recv pairs."""
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


async def kit_server(messages: int) -> float:
    server = await wspatterns.serve(echo)
    try:
        async with plain_connect(server.url, proxy=None) as websocket:
            rate = await round_trips(websocket, messages)
    finally:
        await server.stop()
    assert len(server.flow) >= 2 * messages  # recording was really on
    return rate


async def kit_both(messages: int) -> float:
    server = await wspatterns.serve(echo)
    try:
        async with wspatterns.connect(server) as websocket:
            rate = await round_trips(websocket, messages)
    finally:
        await server.stop()
    assert len(server.flow) >= 4 * messages  # recording was really on, at both ends
    return rate


SETUPS = {
    "plain websockets": plain,
    "kit server, plain client": kit_server,
    "kit server and kit client": kit_both,
}


async def main(messages: int, rounds: int) -> None:
    for setup in SETUPS.values():
        await setup(300)  # warm up
    rates = {name: [] for name in SETUPS}
    for _ in range(rounds):
        for name, setup in SETUPS.items():
            rates[name].append(await setup(messages))
    plain_best = max(rates["plain websockets"])
    for name, values in rates.items():
        best = max(values)
        print(
            f"{name:>26}: {best:8,.0f} round trips per CPU-second, "
            f"{1e6 / best:5.1f} µs each; ratio {best / plain_best:.3f}"
        )
    print(f"(best of {rounds} rounds of {messages:,} round trips; goal: ratio >= 0.95)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.rounds))
