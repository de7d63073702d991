"""Echo round trips per second: the kit, recording, against plain websockets.

Three set-ups run side by side in this process, on loopback:

* plain websockets server and client (and a second such client, as a
  control: its ratio to the first shows how precise the figures are);
* a kit server (recording) with a plain websockets client, as when a browser
  or any other program is the client;
* a kit server and a kit client, both recording into one flow (the default
  in the lessons, which is what lets the views pair sends with receipts).

All three connections stay open, and short batches of round trips take
turns on them, so that the three are measured in the same seconds: on a
shared machine the speed of the CPU itself drifts from second to second, and
batches far apart in time would compare the machine with itself. Each batch
is counted in CPU time of this process (client and server share its one
thread). Pauses of the machine only ever add time to a batch, so each
set-up's fastest batch is the closest to what its code costs: the script
prints those best rates and their ratio to plain websockets (goal: >= 0.95),
and, as a check on the noise, the median of the ratios turn by turn.

    python benchmarks/echo.py [--batch 50] [--turns 1000]
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
    """Round trips per CPU-second over ``messages`` send/recv pairs."""
    start = time.process_time()
    for _ in range(messages):
        await websocket.send("ping")
        await websocket.recv()
    return messages / (time.process_time() - start)


async def main(batch: int, turns: int) -> None:
    async with plain_serve(echo, "127.0.0.1", 0) as plain_server:
        plain_url = f"ws://127.0.0.1:{plain_server.sockets[0].getsockname()[1]}/"
        kit_server = await wspatterns.serve(echo, name="echo")
        both_server = await wspatterns.serve(echo, name="echo, both ends")
        try:
            async with (
                plain_connect(plain_url, proxy=None) as plain,
                plain_connect(plain_url, proxy=None) as control,
                plain_connect(kit_server.url, proxy=None) as kit,
                wspatterns.connect(both_server) as both,
            ):
                setups = {
                    "plain websockets": plain,
                    "plain again (control)": control,
                    "kit server, plain client": kit,
                    "kit server and kit client": both,
                }
                for websocket in setups.values():
                    await round_trips(websocket, batch)  # warm up
                rates = {name: [] for name in setups}
                order = list(setups.items())
                for turn in range(turns):
                    # Each set-up goes first as often as the others: whatever runs right
                    # after another connection's batch pays to bring its own data back.
                    shift = turn % len(order)
                    for name, websocket in order[shift:] + order[:shift]:
                        rates[name].append(await round_trips(websocket, batch))
        finally:
            await kit_server.stop()
            await both_server.stop()
    # Recording was really on: each round trip is two events at the kit server,
    # four when both ends record (the flows keep their latest 100,000).
    assert kit_server.flow.recorded >= 2 * batch * turns
    assert both_server.flow.recorded >= 4 * batch * turns
    plain_rates = rates["plain websockets"]
    plain_best = max(plain_rates)
    for name, values in rates.items():
        best = max(values)
        turn_by_turn = statistics.median(k / p for k, p in zip(values, plain_rates, strict=True))
        print(
            f"{name:>26}: {best:8,.0f} round trips per CPU-second ({1e6 / best:5.1f} µs each); "
            f"ratio {best / plain_best:.3f} (turn by turn, median: {turn_by_turn:.3f})"
        )
    print(f"(best of {turns} turns of {batch} round trips on each connection; goal: ratio >= 0.95)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--turns", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.batch, args.turns))
