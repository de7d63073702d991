"""What a flow costs to keep and to draw.

* memory per stored event, measured with tracemalloc while a flow fills up;
* how much the process grows once the flow is full (it should not);
* how long flow.sequence() takes on a full flow of 100,000 events;
* for scale, the same memory measured for plain tuples of the same fields.

Events are recorded through the kit's real recorders (the extension every kit
connection puts first), without a network, so that nothing but the recorder is measured.

    python benchmarks/memory.py [--events 100000]
"""

import argparse
import gc
import os
import time
import tracemalloc

import psutil
from websockets.frames import Frame, Opcode

from wspatterns import Flow


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
        frame = Frame(Opcode.TEXT, f"message {number:>10} {'.' * 40}".encode())  # 63 B
        client.encode(frame)
        server.decode(frame)


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


def main(events: int) -> None:
    per_event = bytes_per_event(events)
    print(f"memory per stored event: {per_event:,.0f} B (a {events:,}-event flow: "
          f"{per_event * events / 1e6:,.1f} MB)")  # fmt: skip
    rss, traced = growth_past_the_cap(events // 2, 5 * events)
    print(f"after {5 * events:,} more events through a full flow of {events // 2:,}: "
          f"process grew {rss / 1e6:+.1f} MB, traced memory {traced / 1e6:+.2f} MB")  # fmt: skip
    print(f"flow.sequence() on {events:,} events: {sequence_seconds(events):.3f} s (best of 3)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    main(parser.parse_args().events)
