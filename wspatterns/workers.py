"""Worker processes: several pub/sub servers, each in a process of its own, and their flows.

A real application runs its WebSocket server in several processes. This
module starts such processes from a notebook and brings back what they saw::

    workers = await start_workers(2, hub="redis")   # two servers, one Redis between them
    alice = await workers.connect("alice")          # clients are spread across the workers
    bob = await workers.connect("bob")
    ...
    flow = await workers.flow()                     # the clients' records and the workers', merged
    flow.sequence()
    await workers.stop()

Each worker serves :func:`wspatterns.pubsub.hub_handler` on 127.0.0.1 (any
free port) with its own hub: ``"memory"`` (a :class:`~wspatterns.pubsub.MemoryHub`
per process: they share nothing), ``"redis"`` (a :class:`~wspatterns.pubsub.RedisHub`)
or ``"streams"`` (a :class:`~wspatterns.streams.StreamHub`). With a Redis hub,
the worker also records its traffic with Redis, so a message can be followed
from one process through Redis to another.

What goes wrong inside a worker (a handler's error, Redis going away) is
shown here like the kit's own reports: under the next cell in a notebook.
Workers are stopped by ``stop()``, by leaving ``async with``, at the end of the
interpreter, and, on Linux, as soon as the process that started them dies.

Run one by hand: ``python -m wspatterns.workers --name worker-1 --hub memory``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from typing import Any

from . import errors
from .flow import Flow, merge
from .processes import ChildProcess, ProcessFailed, say, stdin_lines, until_signal
from .pubsub import MAX_MESSAGE_SIZE, Hub, MemoryHub, RedisHub, hub_handler
from .redis_server import RedisServer, start_redis
from .runtime import TIMEOUT, Client, connect, serve

HUBS = ("memory", "redis", "streams")

#: The workers running, by the name they were started under.
_running: dict[str, Workers] = {}


# The worker's side


def make_hub(kind: str, url: str | None, name: str, flow: Flow) -> Hub:
    """The hub a worker serves: ``kind`` is one of :data:`HUBS`; Redis ones need ``url``."""
    if kind == "memory":
        return MemoryHub()
    if url is None:
        raise ValueError(f"a {kind!r} hub needs a Redis URL")
    if kind == "redis":
        return RedisHub(url, name=name, flow=flow)
    from .streams import StreamHub

    return StreamHub(url, name=name, flow=flow)


async def run_worker(name: str, kind: str, url: str | None, token: str | None) -> None:
    """Serve a hub until told to quit; answer the parent's commands on stdin.

    Prints ``{"url": ...}`` once listening. Commands: ``flow`` (prints
    ``{"flow": <Flow.export()>}``), ``clear`` (forgets the flow's events; prints
    ``{"cleared": name}``), ``quit`` or the end of stdin.
    """
    flow = Flow(token=token)  # the parent's clients' connections keep their numbers here
    async with make_hub(kind, url, name, flow) as hub:
        handler = hub_handler(hub)
        async with serve(handler, name=name, flow=flow, max_size=MAX_MESSAGE_SIZE) as server:
            say({"url": server.url})
            async for command in stdin_lines():
                if command == "flow":
                    say({"flow": flow.export()})
                elif command == "clear":
                    flow.clear()
                    say({"cleared": name})
                elif command == "quit":
                    break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wspatterns.workers",
        description="One pub/sub worker: serve hub_handler on 127.0.0.1 and print the URL. "
        "Commands on stdin: flow, clear, quit.",
    )
    parser.add_argument("--name", default="worker-1", help="the server's name (worker-1)")
    parser.add_argument("--hub", choices=HUBS, default="memory", help="the hub (memory)")
    parser.add_argument("--redis", help="Redis URL, for the redis and streams hubs")
    parser.add_argument("--token", help="the parent's flow token (see Flow.token)")
    args = parser.parse_args(argv)
    if args.hub != "memory" and not args.redis:
        parser.error(f"--hub {args.hub} needs --redis URL")
    asyncio.run(until_signal(run_worker(args.name, args.hub, args.redis, args.token)))
    return 0


# The notebook's side


class Worker(ChildProcess):
    """One worker process; ``url`` is where it serves, ``name`` what the flow calls it."""

    module = "wspatterns.workers"

    def __init__(self, name: str, kind: str, url: str | None, token: str) -> None:
        args = ["--name", name, "--hub", kind, "--token", token]
        super().__init__(args + (["--redis", url] if url else []))
        self.name = name
        self.role = f"worker {name!r}"
        self.url = ""
        self.reports: list[errors.ErrorReport] = []

    async def start_serving(self, timeout: float) -> None:
        await self._start()
        self.url = (await self.read_json(timeout, "URL"))["url"]

    async def ask(self, command: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        self.send(command)
        return await self.read_json(timeout, f"answer to {command!r}")

    def heard(self, line: str) -> None:
        # The kit in the worker writes its reports on stderr: "wspatterns: ..." and
        # the lines that explain it, up to the next report. Shown here, they name the worker.
        if line.startswith("wspatterns: "):
            summary = f"[{self.name}] {line.removeprefix('wspatterns: ')}"
            self.reports.append(errors.ErrorReport(self.name, None, None, summary))
            errors.show(self.reports[-1])
        elif self.reports:
            report = self.reports[-1]
            report.hint = f"{report.hint}\n{line}" if report.hint else line


class Workers:
    """Worker processes started by :func:`start_workers`, and the clients connected to them.

    ``urls`` lists where they serve; ``connect()`` opens a client to one of them
    (in turn, unless told which); ``flow()`` merges what the clients here and
    every worker recorded; ``clear()`` forgets it; ``stop()`` ends everything.
    """

    def __init__(self, prefix: str, kind: str, redis: RedisServer | None, owns_redis: bool):
        self.prefix = prefix  # the workers are named prefix-1, prefix-2, ...
        self.kind = kind
        self.redis = redis
        self.local = Flow()  # what the clients opened here record
        self.processes: list[Worker] = []
        self._owns_redis = owns_redis
        self._turn = itertools.count()

    @property
    def urls(self) -> list[str]:
        return [worker.url for worker in self.processes]

    @property
    def names(self) -> list[str]:
        return [worker.name for worker in self.processes]

    @property
    def reports(self) -> list[errors.ErrorReport]:
        """What the workers reported (handler errors, Redis lost and back), oldest first."""
        return [report for worker in self.processes for report in worker.reports]

    def connect(self, name: str, worker: int | None = None, **options: Any) -> connect:
        """A client named ``name`` to worker number ``worker`` (0, 1, …), else the next in turn.

        Use it as :func:`wspatterns.connect`: ``await workers.connect("alice")``.
        """
        if worker is None:
            worker = next(self._turn) % len(self.processes)
        if not 0 <= worker < len(self.processes):
            raise IndexError(f"there are {len(self.processes)} workers, numbered from 0")
        return connect(self.urls[worker], name=name, flow=self.local, **options)

    async def flow(self, timeout: float = TIMEOUT) -> Flow:
        """One flow: this process's clients and every worker, in the order things happened."""
        await self._check_alive()
        exported = await asyncio.gather(*(worker.ask("flow", timeout) for worker in self.processes))
        return merge(self.local, *(answer["flow"] for answer in exported))

    async def clear(self, timeout: float = TIMEOUT) -> None:
        """Forget what was recorded so far, here and in every worker."""
        await self._check_alive()
        await asyncio.gather(*(worker.ask("clear", timeout) for worker in self.processes))
        self.local.clear()

    async def stop(self) -> None:
        """Close this side's clients, stop every worker (killing any that lingers), and Redis
        if :func:`start_workers` started it."""
        if _running.get(self.prefix) is self:
            del _running[self.prefix]
        clients = _clients_of(self.local)
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
        await asyncio.gather(*(worker.close(grace=2) for worker in self.processes))
        if self._owns_redis and self.redis is not None:
            self.redis.stop()

    async def _check_alive(self) -> None:
        for worker in self.processes:
            if worker.process is not None and worker.process.returncode is not None:
                raise ProcessFailed(await worker.gone() or f"the {worker.role} process is gone")

    async def __aenter__(self) -> Workers:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    def __repr__(self) -> str:
        running = sum(1 for w in self.processes if w.process and w.process.returncode is None)
        return f"<Workers: {running} of {len(self.processes)} running, {self.kind} hub>"


def _clients_of(flow: Flow) -> list[Client]:
    from .runtime import _clients, _registry_lock

    with _registry_lock:
        return [client for client in _clients.values() if client.flow is flow]


async def start_workers(
    count: int = 2,
    *,
    hub: str = "memory",
    redis: RedisServer | str | None = None,
    name: str = "worker",
    timeout: float = TIMEOUT,
) -> Workers:
    """Start ``count`` worker processes named ``worker-1``, ``worker-2``, … serving ``hub``.

    Workers started before under the same ``name`` are stopped first, so running a
    cell again replaces its workers instead of adding more.

    ``hub`` is ``"memory"``, ``"redis"`` or ``"streams"``. The Redis ones use
    ``redis`` (a :class:`~wspatterns.redis_server.RedisServer` or a URL), or a
    private Redis started here and stopped with the workers. Returns once every
    worker listens; raises :class:`~wspatterns.processes.ProcessFailed` (with the
    worker's last words) if one cannot start, after stopping the others.
    """
    if hub not in HUBS:
        raise ValueError(f"hub must be one of {', '.join(HUBS)}; got {hub!r}")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be 1 or more workers; got {count!r}")
    if name in _running:  # a cell run again: the workers it started before make way
        await _running[name].stop()
    owns_redis = hub != "memory" and redis is None
    if owns_redis:
        redis = start_redis()
    url = redis if isinstance(redis, str) else redis.url if redis is not None else None
    server = redis if isinstance(redis, RedisServer) else None
    workers = Workers(name, hub, server, owns_redis)
    hub_url = url if hub != "memory" else None
    try:
        for number in range(1, count + 1):
            workers.processes.append(Worker(f"{name}-{number}", hub, hub_url, workers.local.token))
        await asyncio.gather(*(worker.start_serving(timeout) for worker in workers.processes))
    except BaseException:
        await asyncio.gather(*(worker.close(grace=0) for worker in workers.processes))
        if owns_redis and server is not None:
            server.stop()
        raise
    _running[name] = workers
    return workers


if __name__ == "__main__":
    sys.exit(main())
