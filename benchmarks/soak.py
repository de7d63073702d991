"""A long session of lessons 05 and 06b's set-ups: does anything grow, break or stay behind?

Both set-ups run side by side for ``--minutes`` (10 by default), as a learner who keeps
experimenting would leave them:

* lesson 05: a Redis started by the kit and two pub/sub worker processes on it; clients
  join (a worker each, in turn), subscribe to ``news``, publish, read, and leave; a
  publisher client sends to ``news`` all the time;
* lesson 06b: the chat program of lessons 06 and 06b (a copy of notebooks/chat/, which
  their %%writefile cells write), two processes on one port relayed through the same
  Redis; members join the lobby, talk, and leave;
* every 30 s both flows are read back (``workers.flow()``, ``flow_of(chat_1, chat_2)``).

It prints, for each minute, the RSS of this process (the kernel's side) and of every
process it started (workers, programs, Redis), at the start and the end of the minute,
and every error seen. The goal: memory flat after the first minute (warm-up), 0 errors.

    python benchmarks/soak.py [--minutes 10] [--clients 20]
    WSPATTERNS_CAP=10000 python benchmarks/soak.py

Warm-up lasts until every flow holds its cap's worth of events: with the default cap
(100,000) and 20 clients, the workers' flows fill in about five minutes, the chat
programs' in more than ten. ``WSPATTERNS_CAP``, read by this process and every process
it starts, makes that the first minute, so that the minutes after it show a leak if
there is one.

RSS alone cannot tell a leak from memory the allocator keeps after a peak. So each
minute also prints ``traced``: the memory Python's objects hold in this process
(tracemalloc) at the minute's end and its peak during the minute; ``--every 0`` reads no
flows, ``--traffic M`` stops the clients after M minutes (the flows are still read), and
``--trace`` prints which lines of code hold what grew since the first minute. At the end,
each child's RSS is printed, with the events its flow holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil
import websockets

from wspatterns import settings, stop_all
from wspatterns.apps import flow_of, start_app
from wspatterns.pubsub import start_redis, start_workers

ROOT = Path(__file__).resolve().parent.parent
CHAT = ROOT / "notebooks" / "chat"
FLOWS_EVERY = 30.0
TRACE_FRAMES = 8  # --trace: the stack kept per allocation, to name who holds it


def lesson_files(folder: Path) -> None:
    """The chat program of lessons 06 and 06b, copied into ``folder``."""
    shutil.copytree(CHAT, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


def mib(process: psutil.Process) -> float:
    try:
        return process.memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def memory() -> tuple[float, float]:
    """(this process, everything it started), in MiB."""
    me = psutil.Process()
    return mib(me), sum(mib(child) for child in me.children(recursive=True))


class Soak:
    def __init__(self, clients: int, deadline: float, every: float, traffic_end: float,
                 trace: bool) -> None:  # fmt: skip
        self.clients = clients
        self.deadline = deadline
        self.every = every
        self.traffic_end = traffic_end
        self.trace = trace
        self.warm: tracemalloc.Snapshot | None = None
        self.errors: list[str] = []
        self.counts = {"05 sessions": 0, "05 messages": 0, "06 sessions": 0, "06 messages": 0,
                       "flows read": 0, "events read": 0}  # fmt: skip

    def failed(self, where: str, error: BaseException) -> None:
        line = f"{time.strftime('%H:%M:%S')} {where}: {type(error).__name__}: {error}"
        self.errors.append(line)
        print("  ERROR", line, flush=True)

    async def pubsub_client(self, workers, number: int) -> None:
        """Join a worker, subscribe, publish a few, hear them, leave; again and again."""
        while time.monotonic() < self.traffic_end:
            name = f"c{number}"
            try:
                async with workers.connect(name, worker=number % 2) as client:
                    await client.send(json.dumps({"action": "subscribe", "channel": "news"}))
                    async with asyncio.timeout(10):
                        await client.recv()  # the subscription's answer
                        for turn in range(random.randint(1, 5)):
                            text = f"{name} says {turn}"
                            said = {"action": "publish", "channel": "news", "message": text}
                            await client.send(json.dumps(said))
                            while json.loads(await client.recv()).get("message") != text:
                                pass  # others' messages go by
                            self.counts["05 messages"] += 1
                self.counts["05 sessions"] += 1
            except Exception as error:  # noqa: BLE001 - a soak counts every kind
                self.failed(f"05 client {name}", error)
            await asyncio.sleep(random.uniform(0.2, 1.0))

    async def chat_member(self, url: str, token: str, number: int) -> None:
        """Join the lobby of lesson 06's program, say something, hear it, leave; again."""
        while time.monotonic() < self.traffic_end:
            name = f"m{number}"
            try:
                address = f"{url}lobby?name={name}&token={token}"
                async with websockets.connect(address, proxy=None) as websocket:
                    async with asyncio.timeout(10):
                        text = f"{name} here"
                        await websocket.send(text)
                        while json.loads(await websocket.recv()).get("text") != text:
                            pass
                self.counts["06 sessions"] += 1
                self.counts["06 messages"] += 1
            except Exception as error:  # noqa: BLE001
                self.failed(f"06 member {name}", error)
            await asyncio.sleep(random.uniform(0.2, 1.0))

    async def read_flows(self, workers, chat_1, chat_2) -> None:
        while self.every and time.monotonic() + self.every < self.deadline:
            await asyncio.sleep(self.every)
            for what, read in (
                ("05 flow", workers.flow),
                ("06 flow", lambda: flow_of(chat_1, chat_2)),
            ):
                try:
                    flow = await read()
                    self.counts["flows read"] += 1
                    self.counts["events read"] += len(flow)
                    self.counts[f"{what} last"] = len(flow)  # the caps filling, or full
                except Exception as error:  # noqa: BLE001
                    self.failed(what, error)

    async def report(self, minutes: int) -> None:
        start = memory()
        for minute in range(1, minutes + 1):
            await asyncio.sleep(max(0.0, min(60.0, self.deadline - time.monotonic())))
            end = memory()
            traced, peak = (x / 2**20 for x in tracemalloc.get_traced_memory())
            tracemalloc.reset_peak()
            gc.collect()  # a merged flow is a cycle (its ends point back at it): freed here
            live = tracemalloc.get_traced_memory()[0] / 2**20
            own = tracemalloc.get_tracemalloc_memory() / 2**20  # in the RSS, not in traced
            print(f"{minute:>6} {start[0]:>9.1f} {end[0]:>9.1f} {traced:>6.1f} {live:>6.1f}"
                  f" {peak:>6.1f} {own:>6.1f}"
                  f" {start[1]:>10.1f} {end[1]:>10.1f} {len(self.errors):>6}  {self.counts}",
                  flush=True)  # fmt: skip
            start = end
            if self.trace:
                self.grown(minute)

    def grown(self, minute: int) -> None:
        """--trace: the lines whose traced memory grew most since the first minute's end."""
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if self.warm is None:
            self.warm = snapshot
            return
        for stat in snapshot.compare_to(self.warm, "traceback")[:5]:
            print(f"         {stat.size_diff / 2**20:+7.2f} MiB {stat.count_diff:+8d} blocks,"
                  f" now {stat.size / 2**20:.2f} MiB at")  # fmt: skip
            for line in stat.traceback.format(limit=4, most_recent_first=True)[::2]:
                print("           ", line.strip())


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--clients", type=int, default=20, help="per set-up")
    parser.add_argument("--every", type=float, default=FLOWS_EVERY,
                        help="seconds between flow reads; 0: read none")  # fmt: skip
    parser.add_argument("--traffic", type=float, help="minutes the clients run (all)")
    parser.add_argument("--trace", action="store_true", help="name the lines that grew")
    args = parser.parse_args()
    tracemalloc.start(TRACE_FRAMES if args.trace else 1)
    folder = Path(tempfile.mkdtemp(prefix="wspatterns-soak-"))
    lesson_files(folder)
    token = secrets.token_urlsafe(16)
    broker = await start_redis()
    workers = await start_workers(2, hub="redis", redis=broker)
    env = {"CHAT_TOKEN": token, "REDIS_URL": broker.url}
    chat_1 = await start_app(folder / "chat_node.py", name="chat-1", env=env)
    chat_2 = await start_app(folder / "chat_node.py", name="chat-2", env=env,
                             port=chat_1.port, flow=chat_1.local)  # fmt: skip
    now = time.monotonic()
    traffic = args.minutes if args.traffic is None else args.traffic
    soak = Soak(args.clients, now + 60 * args.minutes, args.every, now + 60 * traffic, args.trace)
    print(f"{args.minutes} min, {args.clients} clients per set-up for {traffic:g} min,"
          f" flows read every {args.every:g} s, each flow's cap {settings.CAP:,} events."
          f" MiB: RSS; traced, Python's objects in this process at the minute's end,"
          f" then after gc.collect(), and their peak during it;"
          f" tm own, tracemalloc's own memory (in the kit's RSS, not in traced)")  # fmt: skip
    print(f"{'minute':>6} {'kit start':>9} {'kit end':>9} {'traced':>6} {'gc':>6} {'peak':>6}"
          f" {'tm own':>6} {'children st':>10} {'children end':>10}"
          f" {'errors':>6}  counts")  # fmt: skip
    tasks = [soak.pubsub_client(workers, number) for number in range(args.clients)]
    tasks += [soak.chat_member(chat_1.url, token, number) for number in range(args.clients)]
    tasks += [soak.read_flows(workers, chat_1, chat_2), soak.report(args.minutes)]
    await asyncio.gather(*tasks)
    print(f"kept here: {len(workers.local)} events (05's clients), {len(chat_1.local)} (06's)")
    events = {
        w.process.pid: len((await w.ask("flow"))["flow"]["events"]) for w in workers.processes
    }
    events |= {a.process.pid: len((await a.export())["events"]) for a in (chat_1, chat_2)}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            what = " ".join(Path(part).name for part in child.cmdline()[1:4]).splitlines()[0]
            kept = f", {events[child.pid]} events in its flow" if child.pid in events else ""
            print(f"  {child.pid} {what}: {mib(child):.1f} MiB{kept}")
    reports = [*workers.reports, *chat_1.reports, *chat_2.reports]
    for report in reports:
        soak.failed("reported by a child", RuntimeError(str(report)))
    await stop_all()
    left = psutil.Process().children(recursive=True)
    print(f"errors: {len(soak.errors)}; processes left after stop_all(): {len(left)}")
    return 1 if soak.errors or left else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
