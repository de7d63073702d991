"""Echo round trips per second: the kit, recording, against plain websockets.

Two messages, each measured on its own set of connections:

* ``ping``: a 4-byte text with websockets' defaults (compression on);
* ``json``: a 64-byte JSON text with compression off on both ends, as
  upstream's experiments run: a small message as applications send them.

For each, three set-ups run side by side in this process, on loopback:

* plain websockets server and client (and a second such client, as a
  control: its ratio to the first shows how precise the figures are);
* a kit server (recording) with a plain websockets client, as when a browser
  or any other program is the client;
* a kit server and a kit client, both recording into one flow (the default
  in the lessons, which is what lets the views pair sends with receipts).

All the connections of one message stay open, and short batches of round
trips take turns on them, so that they are measured in the same seconds: on a
shared machine the speed of the CPU itself drifts from second to second, and
batches far apart in time would compare the machine with itself. Each batch
is counted in CPU time of this process (client and server share its one
thread). Pauses of the machine only ever add time to a batch, so each
set-up's fastest batch is the closest to what its code costs: the script
prints those best rates and their ratio to plain websockets (goal: >= 0.95),
and, as a check on the noise, the median of the ratios turn by turn.

    python benchmarks/echo.py [--batch 50] [--turns 1000] [--message ping|json|both]
"""

import argparse
import asyncio
import json
import statistics
import time

from websockets.asyncio.client import connect as plain_connect
from websockets.asyncio.server import serve as plain_serve

import wspatterns

# A chat message as a web page would send it: 64 bytes of JSON.
JSON = json.dumps({"type": "message", "room": "lobby", "text": "see you at eight"})
assert len(JSON.encode()) == 64

#: Each message, and the options both ends are opened with.
MESSAGES = {
    "ping": ("ping", {}),  # websockets' defaults: compression on
    "json": (JSON, {"compression": None}),
}


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def round_trips(websocket, message: str, count: int) -> float:
    """Round trips per CPU-second over ``count`` send/recv pairs."""
    start = time.process_time()
    for _ in range(count):
        await websocket.send(message)
        await websocket.recv()
    return count / (time.process_time() - start)


async def measure(kind: str, batch: int, turns: int) -> None:
    message, options = MESSAGES[kind]
    async with plain_serve(echo, "127.0.0.1", 0, **options) as plain_server:
        plain_url = f"ws://127.0.0.1:{plain_server.sockets[0].getsockname()[1]}/"
        kit_server = await wspatterns.serve(echo, name=f"echo {kind}", **options)
        both_server = await wspatterns.serve(echo, name=f"echo {kind}, both ends", **options)
        try:
            async with (
                plain_connect(plain_url, proxy=None, **options) as plain,
                plain_connect(plain_url, proxy=None, **options) as control,
                plain_connect(kit_server.url, proxy=None, **options) as kit,
                wspatterns.connect(both_server, **options) as both,
            ):
                setups = {
                    "plain websockets": plain,
                    "plain again (control)": control,
                    "kit server, plain client": kit,
                    "kit server and kit client": both,
                }
                for websocket in setups.values():
                    await round_trips(websocket, message, batch)  # warm up
                rates = {name: [] for name in setups}
                order = list(setups.items())
                for turn in range(turns):
                    # Each set-up goes first as often as the others: whatever runs right
                    # after another connection's batch pays to bring its own data back.
                    shift = turn % len(order)
                    for name, websocket in order[shift:] + order[:shift]:
                        rates[name].append(await round_trips(websocket, message, batch))
        finally:
            await kit_server.stop()
            await both_server.stop()
    # Recording was really on: each round trip is two events at the kit server,
    # four when both ends record (the flows keep their latest 100,000).
    assert kit_server.flow.recorded >= 2 * batch * turns
    assert both_server.flow.recorded >= 4 * batch * turns
    compression = "off" if options.get("compression", "deflate") is None else "on"
    print(f"{kind}: a {len(message.encode())}-byte text, compression {compression}")
    plain_rates = rates["plain websockets"]
    plain_best = max(plain_rates)
    ratios = {}
    for name, values in rates.items():
        best = max(values)
        ratios[name] = best / plain_best
        turn_by_turn = statistics.median(k / p for k, p in zip(values, plain_rates, strict=True))
        print(
            f"{name:>26}: {best:8,.0f} round trips per CPU-second ({1e6 / best:5.1f} µs each); "
            f"ratio {best / plain_best:.3f} (turn by turn, median: {turn_by_turn:.3f})"
        )
    print(f"(best of {turns} turns of {batch} round trips on each connection)")
    name = "kit server, plain client"
    met = "met" if ratios[name] >= 0.95 else "NOT met"
    print(f"goal: {name} >= 0.95 x plain: {ratios[name]:.3f}, {met}; "
          f"both ends recording (reported): {ratios['kit server and kit client']:.3f}")  # fmt: skip


async def main(batch: int, turns: int, kinds: list[str]) -> None:
    for kind in kinds:
        await measure(kind, batch, turns)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--message", choices=[*MESSAGES, "both"], default="both")
    args = parser.parse_args()
    kinds = list(MESSAGES) if args.message == "both" else [args.message]
    asyncio.run(main(args.batch, args.turns, kinds))
