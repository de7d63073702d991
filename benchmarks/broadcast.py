"""Broadcast deliveries per second to 1000 clients: a recording kit server against plain websockets.

This process runs three servers: two plain websockets ones, set up alike
but apart (the second is the control), and one from the kit, recording
every frame; a second process holds 1000 clients on each (one process for
all, so that no server's clients are scheduled better than another's), as
upstream's experiments/broadcast does. Each server keeps its clients in a
set, as the seed's registration handler does. The script times
broadcast() to all of them in short turns that go from server to server,
counting CPU time of this process. For every turn it divides each rate by
the first plain server's rate in that turn, and prints the median of those
ratios (goal: >= 0.95 for the kit) beside the median rates, and the spread
between turns: turn by turn, because on a shared machine the cost of a
socket write drifts over seconds by far more than the recorder costs. The
control's ratio says how far apart two identical plain set-ups come out:
a kit ratio within that of 1 is no measurable cost.

    python benchmarks/broadcast.py [--clients 1000] [--broadcasts 10] [--turns 60]
"""

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time

from websockets.asyncio.client import connect as plain_connect
from websockets.asyncio.server import broadcast
from websockets.asyncio.server import serve as plain_serve

import wspatterns
from wspatterns.patterns import registration

MESSAGE = "x" * 64  # upstream's default message size


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The clients' process


async def hold_clients(urls: list[str], count: int) -> None:
    """Open ``count`` clients to each of ``urls``, say so, and read until the servers close them."""
    total = count * len(urls)

    async def client(url: str, ready: asyncio.Event, opened: list) -> None:
        async with plain_connect(url, proxy=None, open_timeout=60) as websocket:
            opened.append(websocket)
            if len(opened) == total:
                ready.set()
            async for _ in websocket:
                pass

    ready, opened = asyncio.Event(), []
    clients = [
        asyncio.create_task(client(url, ready, opened)) for _ in range(count) for url in urls
    ]
    await asyncio.wait_for(ready.wait(), 120)
    print("ready", flush=True)
    await asyncio.gather(*clients, return_exceptions=True)


# The servers' process


async def start_clients(urls: list[str], count: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--clients", str(count), "--hold", *urls,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    line = await asyncio.wait_for(process.stdout.readline(), 180)
    if line.strip() != b"ready":
        raise RuntimeError(f"the clients' process did not start: {line!r}")
    return process


def serve_plain(room: set):
    return plain_serve(registration(room), "127.0.0.1", 0)


def url_of(server) -> str:
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


def deliveries_per_cpu_second(room: set, broadcasts: int) -> float:
    start = time.process_time()
    for _ in range(broadcasts):
        broadcast(room, MESSAGE)
    return len(room) * broadcasts / (time.process_time() - start)


async def main(clients: int, broadcasts: int, turns: int) -> None:
    plain_room, control_room, kit_room = set(), set(), set()
    async with serve_plain(plain_room) as plain_server, serve_plain(control_room) as control:
        kit_server = await wspatterns.serve(registration(kit_room), name="broadcast")
        urls = [url_of(plain_server), url_of(control), kit_server.url]
        processes = []
        try:
            processes.append(await start_clients(urls, clients))
            rooms = {
                "plain websockets": plain_room,
                "plain, a second set-up (control)": control_room,
                "wspatterns": kit_room,
            }
            while min(map(len, rooms.values())) < clients:
                await asyncio.sleep(0.05)
            order = list(rooms.items())
            rates = {name: [] for name in rooms}
            for turn in range(turns):
                shift = turn % len(order)  # each goes first as often as the others
                for name, room in order[shift:] + order[:shift]:
                    rates[name].append(deliveries_per_cpu_second(room, broadcasts))
                    await asyncio.sleep(0.2)  # let the clients drain their sockets
            flow = kit_server.flow
            assert flow.recorded >= clients * broadcasts * turns  # recording was really on
            kept = sum(1 for entry in flow.entries if isinstance(entry, wspatterns.flow.Broadcast))
        finally:
            await kit_server.stop()
            plain_server.close()
            control.close()
            for process in processes:
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
    plain_rates = rates["plain websockets"]
    ratios = {}
    for name, values in rates.items():
        turn_by_turn = [k / p for k, p in zip(values, plain_rates, strict=True)]
        ratios[name] = ratio = statistics.median(turn_by_turn)
        low, _, high = statistics.quantiles(turn_by_turn, n=4)
        print(
            f"{name:>32}: {statistics.median(values):9,.0f} deliveries per CPU-second "
            f"({1e6 / statistics.median(values):4.1f} µs each); ratio {ratio:.3f} "
            f"(IQR {low:.3f}-{high:.3f})"
        )
    print(f"(medians of {turns} turns of {broadcasts} broadcasts to {clients} clients each)")
    print(f"the kit's flow recorded {flow.recorded:,} events, kept {len(flow):,} "
          f"({kept:,} broadcast records)")  # fmt: skip
    met = "met" if ratios["wspatterns"] >= 0.95 else "NOT met"
    print(f"goal: wspatterns >= 0.95 x plain: {ratios['wspatterns']:.3f}, {met} "
          f"(the control, a plain set-up like the first: {ratios[list(rates)[1]]:.3f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=10)
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--hold", metavar="URL", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_file_limit()
    if args.hold:
        asyncio.run(hold_clients(args.hold, args.clients))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        asyncio.run(main(args.clients, args.broadcasts, args.turns))
