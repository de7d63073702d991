"""Fan-out across processes through Redis, beside broadcast() in one process, to 1000 clients.

Three set-ups deliver the same stamped 64-byte messages to 1000 clients, held in
each case by one clients process of its own (wspatterns.broadcast):

- in-process: one server process calls websockets' broadcast() to all 1000;
- in-process again: the same, as a control;
- through Redis: a publisher process publishes each message on a channel of a
  redis-server the kit starts (await start_redis()); two relay processes, servers
  subscribed to that channel through a RedisHub, broadcast() it to their 500
  clients each (the clients process shares its clients out between them).
  Publisher and relays are redis_roles.py, beside this script; they get the
  Redis URL, secret and all, through their environment.

So the only difference is the hop through Redis. They are scheduled as in
broadcast_latency.py, whose turn this script borrows: each set-up sends a
message every 300 ms, 100 ms after the one before it (the machine carries
upstream's load, one message to 1000 clients every 100 ms), all three measure
over the same seconds, the order goes through all six orders of three, servers,
publisher, relays and redis-server run on the first CPU and clients on the
second, and every set-up (Redis too) is started afresh for each round.

For every turn the script takes each set-up's p50 and p99 minus the in-process
ones (ms) and over them (ratio), and prints the medians, with deliveries/s.
The relays also time the hop itself: from the publisher's stamp to the relay
receiving the message. Goal: through Redis p50 - in-process p50 <= 0.5 ms.

    python benchmarks/redis_fanout.py [--clients 1000] [--relays 2] [--rounds 3] [--seconds 6]
"""

import argparse
import asyncio
import contextlib
import statistics
from itertools import permutations
from typing import Any

from broadcast_latency import PERIOD, can_pin, middle_half, one_turn, pin
from redis_roles import PublisherProcess, RelayProcess

from wspatterns.broadcast import ClientsProcess, ServerProcess
from wspatterns.pubsub import start_redis

BASE, CONTROL, REDIS = "in-process", "in-process again (control)", "through Redis"
SETUPS = (BASE, CONTROL, REDIS)
ORDERS = list(permutations(SETUPS))  # a round is one turn in each order
GOAL_MS = 0.5  # what the hop through Redis may add at p50


class Audience:
    """A clients process whose summary also gives deliveries per second."""

    def __init__(self, clients: ClientsProcess) -> None:
        self.clients = clients

    def start(self) -> None:
        self.clients.start()

    async def stop(self) -> dict[str, Any]:
        summary = await self.clients.stop()
        return {**summary, "deliveries_per_s": summary["messages"] / summary["seconds"]}


class ThroughRedis:
    """The publisher and the relays of one set-up, started and stopped as one server is."""

    def __init__(self, publisher: PublisherProcess, relays: list[RelayProcess]) -> None:
        self.publisher, self.relays = publisher, relays

    def start(self) -> None:
        for relay in self.relays:
            relay.start()
        self.publisher.start()

    async def stop(self) -> dict[str, Any]:
        """CPU of publisher and relays together, one relay's broadcast() call, a publish, and
        the hop's p50 at the relay served first and at the one served last, and its p99."""
        published = await self.publisher.stop()
        relayed = [await relay.stop() for relay in self.relays]
        hops = sorted(report["hop_p50_ms"] for report in relayed)
        return {
            "cpu": published["cpu"] + sum(report["cpu"] for report in relayed),
            "broadcast_ms": statistics.mean(report["broadcast_ms"] for report in relayed),
            "publish_ms": published["broadcast_ms"],
            "hop_first_ms": hops[0],
            "hop_last_ms": hops[-1],
            "hop_p99_ms": max(report["hop_p99_ms"] for report in relayed),
        }


async def one_round(count: int, relays: int, seconds: float, pinned: bool) -> list[dict[str, dict]]:
    """Start the three set-ups (and a Redis), measure a turn in each order, stop them all."""
    async with contextlib.AsyncExitStack() as stack:
        redis = await start_redis(name="redis_fanout")
        stack.callback(redis.stop)  # last out, after every process that uses it
        pairs, servers = {}, []
        for name in (BASE, CONTROL):
            server = ServerProcess("default", size=64, rate=1 / PERIOD)
            servers.append(await stack.enter_async_context(server))
            pairs[name] = (server, ClientsProcess(server.url, count))
        relaying = [await stack.enter_async_context(RelayProcess(redis.url)) for _ in range(relays)]
        publisher = PublisherProcess(redis.url, size=64, rate=1 / PERIOD)
        servers += [await stack.enter_async_context(publisher), *relaying]
        if redis.process is not None:  # not with WSPATTERNS_REDIS_URL: somebody else's Redis
            servers.append(redis)
        pairs[REDIS] = (
            ThroughRedis(publisher, relaying),
            ClientsProcess([r.url for r in relaying], count),
        )
        audiences = {}
        for name, (server, clients) in pairs.items():
            await stack.enter_async_context(clients)
            if clients.ready["connected"] != count:
                raise SystemExit(f"{name}: only {clients.ready['connected']} clients connected")
            audiences[name] = (server, Audience(clients))
        if pinned:
            pin(servers, [clients for _, clients in pairs.values()])
        turns = []
        for order in ORDERS:
            turns.append(await one_turn(audiences, order, seconds))
            figures = [f"{f['p50_ms']:5.1f} / {f['p99_ms']:5.1f}" for f in turns[-1].values()]
            hop = f"{turns[-1][REDIS]['hop_first_ms']:.2f} / {turns[-1][REDIS]['hop_last_ms']:.2f}"
            print(f"    {', '.join(figures)}; hop {hop}")
    return turns


def differences(turns: list[dict[str, dict]], name: str, figure: str) -> list[float]:
    """``figure`` of set-up ``name`` minus in-process's in the same turn, sorted."""
    return sorted(turn[name][figure] - turn[BASE][figure] for turn in turns)


def ratios(turns: list[dict[str, dict]], name: str, figure: str) -> list[float]:
    """``figure`` of set-up ``name`` over in-process's in the same turn, sorted."""
    return sorted(turn[name][figure] / turn[BASE][figure] for turn in turns)


def spread_ms(ordered: list[float]) -> str:
    """From the first to the third quartile of sorted differences ``ordered``."""
    quarter = len(ordered) // 4
    return f"{ordered[quarter]:+.2f} to {ordered[-1 - quarter]:+.2f}"


async def main(count: int, relays: int, rounds: int, seconds: float, pinned: bool) -> None:
    pinned = pinned and can_pin()
    print(
        f"{rounds} rounds of {len(ORDERS)} turns of {seconds:g} s, {count} clients per set-up, "
        f"{relays} relays; "
        + ("servers on one CPU, clients on another" if pinned else "CPUs not pinned")
    )
    print("  p50 / p99 ms of " + ", ".join(SETUPS) + "; the hop's p50 at the first / last relay")
    turns = []
    for number in range(rounds):
        print(f"  round {number + 1}")
        measured = await one_round(count, relays, seconds, pinned)
        for name in (CONTROL, REDIS):
            p50 = statistics.median(differences(measured, name, "p50_ms"))
            print(f"    {name}: p50 {p50:+.2f} ms")
        turns += measured
    print()

    def median(name: str, figure: str) -> float:
        return statistics.median(turn[name][figure] for turn in turns)

    print(f"{'':28} {'p50 ms':>7} {'p99 ms':>7} {'deliveries/s':>13}  a broadcast() call")
    for name in SETUPS:
        each = count // relays if name == REDIS else count
        call = median(name, "broadcast_ms")
        print(
            f"{name:28} {median(name, 'p50_ms'):7.2f} {median(name, 'p99_ms'):7.2f} "
            f"{median(name, 'deliveries_per_s'):13.0f}  {call:.2f} ms to {each} "
            f"({call * 1000 / each:.1f} µs a delivery)"
        )
    print("\nturn by turn, minus in-process (median, middle half of the turns):")
    for name in (CONTROL, REDIS):
        p50, p99 = differences(turns, name, "p50_ms"), differences(turns, name, "p99_ms")
        p50_ratio = ratios(turns, name, "p50_ms")
        print(
            f"  {name}: p50 {statistics.median(p50):+.2f} ms ({spread_ms(p50)}), "
            f"p99 {statistics.median(p99):+.2f} ms ({spread_ms(p99)}), "
            f"p50 ratio {statistics.median(p50_ratio):.3f} ({middle_half(p50_ratio)})"
        )
    first, last = median(REDIS, "hop_first_ms"), median(REDIS, "hop_last_ms")
    print(
        f"the hop, publisher to relay (timed in the relays): p50 {first:.2f} ms at the relay "
        f"served first, {last:.2f} ms at the last; p99 {median(REDIS, 'hop_p99_ms'):.2f} ms; "
        f"a publish {median(REDIS, 'publish_ms'):.2f} ms\n"
        f"CPU: publisher and relays {median(REDIS, 'cpu'):.1%}, "
        f"an in-process server {median(BASE, 'cpu'):.1%}"
    )
    added, noise = differences(turns, REDIS, "p50_ms"), differences(turns, CONTROL, "p50_ms")
    quarter = len(noise) // 4
    width = noise[-1 - quarter] - noise[quarter]
    print(
        f"\ngoal: through Redis adds <= {GOAL_MS} ms at p50\n"
        f"  end to end: {statistics.median(added):+.2f} ms, "
        + (
            f"which this run cannot tell from {GOAL_MS} ms: the control's middle half spans "
            f"{width:.2f} ms"
            if width > GOAL_MS
            else ("met" if statistics.median(added) <= GOAL_MS else "not met")
        )
        + f"\n  the hop alone: {first:.2f} ms at the first relay, "
        + ("met" if first <= GOAL_MS else "not met")
        + f"; {last:.2f} ms at the last, "
        + ("met" if last <= GOAL_MS else "not met")
    )
    print(
        f"(medians of {len(turns)} turns of {seconds:g} s; {count} clients, 64 B, one message "
        f"every {PERIOD * 1000:.0f} ms per set-up)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--relays", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--no-pin", action="store_true", help="let the system place processes")
    args = parser.parse_args()
    if not 1 <= args.relays <= args.clients:
        parser.error("--relays must be 1 or more, and no more than --clients")
    asyncio.run(main(args.clients, args.relays, args.rounds, args.seconds, not args.no_pin))
