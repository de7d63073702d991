"""Broadcast latency to 1000 clients: a recording kit server against plain websockets.

Upstream's experiments/broadcast settings: 1000 clients, 64 bytes, one broadcast
every 100 ms with websockets' own broadcast(), no compression, the server in one
process and its clients in another. Three such set-ups are kept open side by
side, each a server process with a clients process of its own: plain
websockets, plain websockets again (the control), and the kit's serve() with
recording on (--kit).

They take turns broadcast by broadcast: each server broadcasts every 300 ms,
100 ms after the one before it, so the machine carries upstream's load (one
broadcast to 1000 clients every 100 ms) and only one set-up is busy at a time.
All three measure over the same seconds (a turn), so a drift in the speed of
this shared machine reaches all of them alike. A broadcast's slowest deliveries
can still be arriving when the next set-up broadcasts, so the order changes
every turn through all six orders of three: each set-up follows each other one
equally often. Where the system allows it, servers run on the first CPU and
clients processes on the second.

A pair of processes can also settle, for minutes, into a state where its
clients take twice as long over the same messages (seen with two plain
set-ups, pinned or not). So the set-ups are started afresh for each round, and
the control's ratios show how precise the others are. For every turn the
script divides each set-up's p99 (and p50, and the time one broadcast() call
takes in the server) by plain websockets' in that turn, and prints the medians
of those ratios (goal: kit / plain p99 <= 1.05).

    python benchmarks/broadcast_latency.py [--clients 1000] [--rounds 3] [--seconds 6]
"""

import argparse
import asyncio
import contextlib
import os
import statistics
from itertools import permutations

from wspatterns.broadcast import ClientsProcess, ServerProcess

SETUPS = {  # name: does the server run through the kit (recording on)?
    "plain websockets": False,
    "plain again (control)": False,
    "wspatterns": True,
}
GAP = 0.1  # seconds between two broadcasts on the machine, as upstream
PERIOD = GAP * len(SETUPS)  # seconds between two broadcasts of one server
ORDERS = list(permutations(SETUPS))  # a round is one turn in each order
FIGURES = ("p50_ms", "p99_ms", "broadcast_ms")


async def one_turn(pairs: dict, order: tuple[str, ...], seconds: float) -> dict[str, dict]:
    """Broadcast from every set-up in ``order``, GAP apart; measure all of them for ``seconds``.

    Returns, by set-up, the clients' summary and the server's report of that time.
    """
    for name in order:
        server, _ = pairs[name]
        server.start()
        await asyncio.sleep(GAP)
    await asyncio.sleep(PERIOD)  # a warm-up broadcast each
    for _, clients in pairs.values():
        clients.start()
    await asyncio.sleep(seconds)
    summaries = {name: await clients.stop() for name, (_, clients) in pairs.items()}
    reports = {name: await server.stop() for name, (server, _) in pairs.items()}
    return {
        name: {**summaries[name], "server_cpu": reports[name]["cpu"], **reports[name]}
        for name in pairs
    }


async def one_round(count: int, seconds: float) -> list[dict[str, dict]]:
    """Start the three set-ups, measure a turn in each order, stop them; the turns' figures."""
    async with contextlib.AsyncExitStack() as stack:
        pairs = {}
        for name, kit in SETUPS.items():
            server = ServerProcess("default", size=64, rate=1 / PERIOD, kit=kit)
            await stack.enter_async_context(server)
            clients = await stack.enter_async_context(ClientsProcess(server.url, count))
            if clients.ready["connected"] != count:
                raise SystemExit(f"{name}: only {clients.ready['connected']} clients connected")
            pairs[name] = (server, clients)
        pin([server for server, _ in pairs.values()], [c for _, c in pairs.values()])
        turns = []
        for order in ORDERS:
            turns.append(await one_turn(pairs, order, seconds))
            figures = [f"{f['p50_ms']:5.1f} / {f['p99_ms']:5.1f}" for f in turns[-1].values()]
            print("    " + ", ".join(figures))
    broadcasts = count * seconds / PERIOD
    assert all(turn["wspatterns"]["recorded"] >= broadcasts for turn in turns)  # recording on
    return turns


def ratios(turns: list[dict[str, dict]], name: str, figure: str) -> list[float]:
    """``figure`` of set-up ``name`` over plain websockets' in the same turn, sorted."""
    return sorted(turn[name][figure] / turn["plain websockets"][figure] for turn in turns)


async def main(count: int, rounds: int, seconds: float) -> None:
    pinned = can_pin()
    print(
        f"{rounds} rounds of {len(ORDERS)} turns of {seconds:g} s, {count} clients per set-up; "
        + ("servers on one CPU, clients on another" if pinned else "CPUs not pinned")
    )
    print("  p50 / p99 ms of " + ", ".join(SETUPS))
    turns = []
    for number in range(rounds):
        print(f"  round {number + 1}")
        measured = await one_round(count, seconds)
        for name in SETUPS:
            print(
                f"    {name}: p99 ratio {statistics.median(ratios(measured, name, 'p99_ms')):.3f}"
            )
        turns += measured
    print()
    for name in SETUPS:

        def median(figure: str, name: str = name) -> float:
            return statistics.median(turn[name][figure] for turn in turns)

        p99, call = ratios(turns, name, "p99_ms"), ratios(turns, name, "broadcast_ms")
        print(
            f"{name}: p50 {median('p50_ms'):.1f} ms, p99 {median('p99_ms'):.1f} ms, "
            f"a broadcast() call {median('broadcast_ms'):.1f} ms, "
            f"server CPU {median('server_cpu'):.1%}\n"
            f"    ratio to plain: p50 {statistics.median(ratios(turns, name, 'p50_ms')):.3f}, "
            f"p99 {statistics.median(p99):.3f} (middle half of the turns: {middle_half(p99)}), "
            f"broadcast() call {statistics.median(call):.3f} ({middle_half(call)})"
        )
    print(
        f"(medians of {len(turns)} turns of {seconds:g} s; {count} clients, 64 B, one broadcast "
        f"every {GAP * 1000:.0f} ms in turn; goal: wspatterns p99 ratio <= 1.05)"
    )


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def pin(servers: list[ServerProcess], clients: list[ClientsProcess]) -> None:
    """Servers on the first CPU, clients on the second, if the system lets us."""
    if not can_pin():
        return
    first, second, *_ = sorted(os.sched_getaffinity(0))
    for processes, cpu in ((servers, first), (clients, second)):
        for each in processes:
            os.sched_setaffinity(each.process.pid, {cpu})


def middle_half(ordered: list[float]) -> str:
    """From the first to the third quartile of sorted ``ordered``."""
    quarter = len(ordered) // 4
    return f"{ordered[quarter]:.2f}–{ordered[-1 - quarter]:.2f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.rounds, args.seconds))
