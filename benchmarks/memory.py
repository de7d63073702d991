"""What a flow costs to keep and to draw.

* memory per stored event, measured with tracemalloc while a flow fills up;
* how much the process grows once the flow is full (it should not);
* how long flow.sequence() takes on a full flow of 100,000 events;
* for scale, the same memory measured for plain tuples of the same fields, kept in a
  deque without a recorder: the least a record of that shape can weigh in Python;
* memory the flow keeps per delivery of a broadcast() (300 clients, 40 broadcasts),
  and how many broadcasts to 1000 clients a full flow holds;
* memory a full flow keeps per connection that came and went (it should keep none
  once the connection's events are dropped), through the recorders and through
  plain websockets clients connecting to a kit server.

Events are recorded through the kit's real recorders (the extension every kit
connection puts first), without a network, so that nothing but the recorder is measured.
Broadcasts need a network: only a frame that websockets' broadcast() writes is
recorded as one, so those go to real clients on loopback, and only what the flow's
own code allocated is counted.

Each line with a goal says whether it is met.

    python benchmarks/memory.py [--events 100000]
"""

import argparse
import asyncio
import gc
import itertools
import os
import resource
import time
import tracemalloc
from collections import deque

import psutil
from websockets.asyncio.client import connect as plain_connect
from websockets.asyncio.server import broadcast
from websockets.frames import Close, Frame, Opcode

import wspatterns.flow
from wspatterns import Flow, serve
from wspatterns.patterns import registration


def fill(flow: Flow, events: int, connections: int = 10) -> None:
    """Record ``events`` message events: each message sent by one end, received by the other."""
    ends = [
        (
            flow.end(number, "server", f"client-{number}", "client"),
            flow.end(number, "server", f"client-{number}", "server"),
        )
        for number in range(1, connections + 1)
    ]
    for number in range(events // 2):
        client, server = ends[number % connections]
        sent = f"message {number:>10} {'.' * 40}".encode()  # 63 B
        client.encode(Frame(Opcode.TEXT, sent))
        server.decode(Frame(Opcode.TEXT, bytes(bytearray(sent))))  # a copy, as off a socket


def bytes_per_event(events: int) -> float:
    flow = Flow(cap=events)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fill(flow, events)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / len(flow)


def bytes_per_plain_tuple(events: int, connections: int = 10) -> float:
    """The same records as :func:`fill` makes, as bare tuples in a deque: ``(time, meta,
    size, head)``, one shared ``meta`` tuple per end and way, as the recorder shares them."""
    metas = [
        ("message", (number, "server", f"client-{number}", at), "client", "text")
        for number in range(1, connections + 1)
        for at in ("client", "server")
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    records: deque = deque(maxlen=events)
    for number, meta in zip(range(events), itertools.cycle(metas)):
        sent = f"message {number // 2:>10} {'.' * 40}".encode()  # 63 B, one copy per end
        records.append((time.monotonic_ns(), meta, len(sent), sent[:48]))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / len(records)


def growth_past_the_cap(cap: int, more: int) -> tuple[int, int]:
    """Process memory (RSS) and traced memory grown while ``more`` events pass a full flow."""
    process = psutil.Process(os.getpid())
    flow = Flow(cap=cap)
    tracemalloc.start()  # before filling, so that what the full flow holds is traced too
    fill(flow, cap)
    gc.collect()
    rss, traced = process.memory_info().rss, tracemalloc.get_traced_memory()[0]
    fill(flow, more)
    gc.collect()
    grown = process.memory_info().rss - rss, tracemalloc.get_traced_memory()[0] - traced
    tracemalloc.stop()
    assert flow.dropped >= more
    return grown


def sequence_seconds(events: int) -> float:
    flow = Flow(cap=events)
    fill(flow, events)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        flow.sequence()
        best = min(best, time.perf_counter() - start)
    return best


# Connections that come and go


def short_connection(flow: Flow, number: int) -> None:
    """Record a short connection at both ends, as a kit server and client sharing ``flow``
    would: open, one message each way, the closing handshake, the end (12 events)."""
    ends = [flow.end(number, "server", f"client-{number}", at) for at in ("client", "server")]
    client, server = ends
    close = Close(1000, "").serialize()
    for end in ends:
        end.add("open", detail="/")
    client.decode(server.encode(Frame(Opcode.TEXT, b"hi")))
    server.decode(client.encode(Frame(Opcode.TEXT, b"hi")))
    server.decode(client.encode(Frame(Opcode.CLOSE, close)))
    client.decode(server.encode(Frame(Opcode.CLOSE, close)))
    for end in ends:
        end.add("end", "client", code=1000)


def growth_per_connection(cap: int, connections: int) -> list[int]:
    """What the flow's own modules hold more, traced, after each tenth of ``connections``
    short ones through a flow of ``cap`` already full of them."""
    flow = Flow(cap=cap)
    for number in range(1, cap + 1):
        short_connection(flow, number)
    gc.collect()
    tracemalloc.start()
    before, grown = kept_by_the_flow(), []
    for number in range(cap + 1, cap + connections + 1):
        short_connection(flow, number)
        if (number - cap) % (connections // 10) == 0:
            grown.append(kept_by_the_flow() - before)
    tracemalloc.stop()
    return grown


async def growth_per_plain_connection(cap: int, connections: int) -> list[int]:
    """The same for ``connections`` plain websockets clients in turn, each sending one
    message to a kit echo server and leaving, measured after each tenth of them."""

    async def echo(websocket) -> None:
        async for message in websocket:
            await websocket.send(message)

    flow = Flow(cap=cap)
    server = await serve(echo, flow=flow)

    async def one() -> None:
        async with plain_connect(server.url, proxy=None) as websocket:
            await websocket.send("hi")
            await websocket.recv()

    for _ in range(cap):  # six events each at the server: past the cap
        await one()
    gc.collect()
    tracemalloc.start()
    before, grown = kept_by_the_flow(), []
    for number in range(1, connections + 1):
        await one()
        if number % (connections // 10) == 0:
            await asyncio.sleep(0.05)  # the last one's end recorded
            gc.collect()
            grown.append(kept_by_the_flow() - before)
    tracemalloc.stop()
    await server.stop()
    return grown


# Broadcasts


async def clients_in_a_room(count: int, flow: Flow):
    """A kit server with ``count`` plain clients registered in a set, each reading all it gets."""
    room = set()
    server = await serve(registration(room), flow=flow, compression=None)
    clients = []
    for start in range(0, count, 100):  # in batches, within the listening backlog
        opening = [plain_connect(server.url, proxy=None, compression=None) for _ in range(100)]
        clients += await asyncio.gather(*opening[: count - start])
    while len(room) < count:
        await asyncio.sleep(0.01)

    async def read(client) -> None:
        async for _ in client:
            pass

    readers = [asyncio.create_task(read(client)) for client in clients]
    return server, room, readers


async def broadcast_rounds(room: set, rounds: int) -> None:
    for number in range(rounds):
        broadcast(room, f"broadcast {number:>6} {'.' * 47}")  # 64 B
        await asyncio.sleep(0.005)  # the clients read it


def kept_by_the_flow() -> int:
    """Bytes traced right now that the flow's own modules allocated (they still hold them)."""
    where = os.path.join(os.path.dirname(wspatterns.flow.__file__), "*")
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, where)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def bytes_per_delivery(clients: int = 300, rounds: int = 40) -> float:
    """Memory the flow keeps per delivery of a broadcast, traced while ``rounds`` reach
    ``clients``."""
    flow = Flow()
    server, room, readers = await clients_in_a_room(clients, flow)
    gc.collect()
    tracemalloc.start()
    before = kept_by_the_flow()
    await broadcast_rounds(room, rounds)
    gc.collect()
    kept = kept_by_the_flow() - before
    tracemalloc.stop()
    deliveries = sum(end.sent for end in flow.totals)
    assert deliveries == clients * rounds, deliveries
    await server.stop()
    await asyncio.gather(*readers)
    return kept / deliveries


async def broadcasts_a_full_flow_holds(cap: int, clients: int = 1000) -> tuple[int, float]:
    """How many broadcasts to ``clients`` a flow of ``cap`` keeps once full, and its memory."""
    flow = Flow(cap=cap)
    server, room, readers = await clients_in_a_room(clients, flow)
    gc.collect()
    tracemalloc.start()
    await broadcast_rounds(room, 2 * (cap + 1) // (1 + clients // wspatterns.flow.FANOUT) + 2)
    gc.collect()
    kept = kept_by_the_flow()
    tracemalloc.stop()
    held = sum(1 for entry in flow.entries if isinstance(entry, wspatterns.flow.Broadcast))
    await server.stop()
    await asyncio.gather(*readers)
    return held, kept


def goal(met: bool) -> str:
    return "met" if met else "NOT met"


def main(events: int) -> None:
    per_event = bytes_per_event(events)
    per_tuple = bytes_per_plain_tuple(events)
    print(f"memory per stored event: {per_event:,.0f} B (a {events:,}-event flow: "
          f"{per_event * events / 1e6:,.1f} MB); plain tuples of the same fields in a deque: "
          f"{per_tuple:,.0f} B, so the flow keeps {per_event / per_tuple:.2f}× that")  # fmt: skip
    rss, traced = growth_past_the_cap(events // 2, 5 * events)
    print(f"after {5 * events:,} more events through a full flow of {events // 2:,}: "
          f"process grew {rss / 1e6:+.1f} MB, traced memory {traced / 1e6:+.2f} MB "
          f"(goal: < 1 MB traced: {goal(traced < 1e6)})")  # fmt: skip
    seconds = sequence_seconds(events)
    print(f"flow.sequence() on {events:,} events: {seconds:.3f} s, best of 3 "
          f"(goal: under 1 s: {goal(seconds < 1)})")  # fmt: skip
    per_delivery = asyncio.run(bytes_per_delivery())
    print(f"memory the flow keeps per broadcast delivery: {per_delivery:.1f} B "
          f"(300 clients, 40 broadcasts; goal: <= 16 B: {goal(per_delivery <= 16)})")  # fmt: skip
    cap = 2_000  # a full flow of the usual cap holds 50 times as many
    held, kept = asyncio.run(broadcasts_a_full_flow_holds(cap))
    scale = wspatterns.flow.CAP / cap
    before = wspatterns.flow.CAP / 1000  # one event per delivery: 100 broadcasts to 1000
    times = held * scale / before
    print(f"a full flow holds {held * scale:,.0f} broadcasts to 1,000 clients, in "
          f"{kept * scale / 1e6:.1f} MB (measured at cap {cap:,}: {held}, scaled to "
          f"{wspatterns.flow.CAP:,}); {times:.0f}× the {before:.0f} it held with one event "
          f"per delivery (goal: >= 10×: {goal(times >= 10)})")  # fmt: skip
    connections = 100_000
    grown = growth_per_connection(1_000, connections)
    print(f"{connections:,} short connections through a full flow of 1,000 events, the flow's "
          f"memory after each tenth: {', '.join(f'{size / 1e3:+,.0f}' for size in grown)} kB: "
          f"{grown[-1] / connections:,.1f} B per connection (goal: flat, < 1 MB after all: "
          f"{goal(max(grown) < 1e6)})")  # fmt: skip
    connections = 2_000
    grown = asyncio.run(growth_per_plain_connection(100, connections))
    print(f"{connections:,} plain websockets clients in turn to a kit server whose flow of 100 "
          f"events is full, the flow's memory after each tenth: "
          f"{', '.join(f'{size / 1e3:+,.0f}' for size in grown)} kB: "
          f"{grown[-1] / connections:,.1f} B per connection (goal: flat, < 1 MB after all: "
          f"{goal(max(grown) < 1e6)})")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1000 clients and their server
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    main(parser.parse_args().events)
