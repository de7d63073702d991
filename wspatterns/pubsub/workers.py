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

Run one by hand:
``python -m wspatterns.pubsub.worker_process --name worker-1 --hub memory``. A Redis
hub's URL comes from ``$WSPATTERNS_HUB_REDIS_URL``, which is how the notebook's side hands
it over: a URL carrying a password must stay off the command line, which anyone can read.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from .. import reports
from ..errors import InvalidArgumentError, NoSuchWorkerError, ProcessFailed
from ..flow import Flow, merge
from ..reports import ErrorReport
from ..runtime import Client, connect, lifecycle
from ..runtime.processes import ChildProcess
from ..settings import DEFAULT, timeout_seconds
from .hub import HUBS
from .redis_server import URL_VARIABLE, RedisServer, start_redis


class Worker(ChildProcess):
    """One worker process; ``url`` is where it serves, ``name`` what the flow calls it."""

    module = "wspatterns.pubsub.worker_process"

    def __init__(self, name: str, kind: str, url: str | None, token: str) -> None:
        args = ["--name", name, "--hub", kind, "--token", token]
        super().__init__(args, env={URL_VARIABLE: url} if url else None)
        self.name = name
        self.role = f"worker {name!r}"
        self.url = ""
        self.reports: list[ErrorReport] = []
        self._asking = asyncio.Lock()  # one question at a time, answered in order
        self._unanswered = 0  # questions sent whose answer is not read yet

    async def start_serving(self, timeout: float | None) -> None:
        await self.launch()
        self.url = (await self.read_json(timeout, "URL"))["url"]

    async def ask(self, command: str, timeout: float | None = DEFAULT) -> dict[str, Any]:
        """Send ``command`` and return the worker's answer; ProcessFailed after ``timeout``
        seconds (``TIMEOUT`` when left out; None: never).

        The worker answers every command in turn: the answers to questions given up on
        (too slow) are read and dropped first, so they are never taken for this one's.
        """
        what = f"answer to {command!r}"
        timeout = timeout_seconds(timeout)
        async with self._asking:
            self.send(command)
            self._unanswered += 1
            while True:
                line = await self.read(timeout, what)
                self._unanswered -= 1
                if not self._unanswered:
                    return self.parse(line, what)

    def heard(self, line: str) -> None:
        # The kit in the worker writes its reports on stderr: "wspatterns: ..." (or
        # "wspatterns news: ..." for what is not an error) and the lines that explain it,
        # up to the next report. Shown here, they name the worker.
        for start, news in ((reports.ERROR, False), (reports.NEWS, True)):
            if line.startswith(start):
                summary = f"[{self.name}] {line.removeprefix(start)}"
                self.reports.append(ErrorReport(self.name, None, None, summary, news=news))
                reports.show(self.reports[-1])
                return
        if self.reports:
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
    def reports(self) -> list[ErrorReport]:
        """What the workers reported (handler errors, Redis lost and back), oldest first."""
        return [report for worker in self.processes for report in worker.reports]

    def connect(self, name: str, worker: int | None = None, **options: Any) -> connect:
        """A client named ``name`` to worker number ``worker`` (0, 1, …), else the next in turn.

        Use it as :func:`wspatterns.connect`: ``await workers.connect("alice")``.
        """
        if worker is None:
            worker = next(self._turn) % len(self.processes)
        if not 0 <= worker < len(self.processes):
            raise NoSuchWorkerError(f"there are {len(self.processes)} workers, numbered from 0")
        return connect(self.urls[worker], name=name, flow=self.local, **options)

    async def flow(self, timeout: float | None = DEFAULT) -> Flow:
        """One flow: this process's clients and every worker, in the order things happened."""
        await self._check_alive()
        exported = await asyncio.gather(*(worker.ask("flow", timeout) for worker in self.processes))
        return merge(self.local, *(answer["flow"] for answer in exported))

    async def clear(self, timeout: float | None = DEFAULT) -> None:
        """Forget what was recorded so far, here and in every worker."""
        await self._check_alive()
        await asyncio.gather(*(worker.ask("clear", timeout) for worker in self.processes))
        self.local.clear()

    async def stop(self) -> None:
        """Close this side's clients, stop every worker (killing any that lingers), and Redis
        if :func:`start_workers` started it."""
        lifecycle.forget("workers", self.prefix, self)
        clients = _clients_of(self.local)
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
        await asyncio.gather(*(worker.close(grace=2) for worker in self.processes))
        if self._owns_redis and self.redis is not None:
            self.redis.stop()

    async def retire(self, why: str) -> None:
        await self.stop()

    def retire_now(self, why: str) -> None:
        for worker in self.processes:
            worker.kill()
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
    return [
        client
        for client in lifecycle.of_kind("client")
        if isinstance(client, Client) and client.flow is flow
    ]


async def start_workers(
    count: int = 2,
    *,
    hub: str = "memory",
    redis: RedisServer | str | None = None,
    name: str = "worker",
    timeout: float | None = DEFAULT,
) -> Workers:
    """Start ``count`` worker processes named ``worker-1``, ``worker-2``, … serving ``hub``.

    Workers started before under the same ``name`` are stopped first, so running a
    cell again replaces its workers instead of adding more.

    ``hub`` is ``"memory"``, ``"redis"`` or ``"streams"``. The Redis ones use
    ``redis`` (a :class:`~wspatterns.redis_server.RedisServer` or a URL, handed to the
    workers through their environment), or a private Redis started here, under the name
    ``"{name}-redis"``, and stopped with the workers. Returns once every
    worker listens; raises :class:`~wspatterns.processes.ProcessFailed` (with the
    worker's last words) if one cannot start within ``timeout`` seconds (``TIMEOUT`` when
    left out; None: never), after stopping the others.
    """
    if hub not in HUBS:
        raise InvalidArgumentError(f"hub must be one of {', '.join(HUBS)}; got {hub!r}")
    if not isinstance(count, int) or count < 1:
        raise InvalidArgumentError(f"count must be 1 or more workers; got {count!r}")
    # A cell run again: the workers it started before make way.
    await lifecycle.retire("workers", name, f"a newer start_workers(name={name!r}) replaced them")
    owns_redis = hub != "memory" and redis is None
    if owns_redis:
        redis = await start_redis(name=f"{name}-redis")
    url = redis if isinstance(redis, str) else redis.url if redis is not None else None
    server = redis if isinstance(redis, RedisServer) else None
    workers = Workers(name, hub, server, owns_redis)
    hub_url = url if hub != "memory" else None
    try:
        for number in range(1, count + 1):
            workers.processes.append(Worker(f"{name}-{number}", hub, hub_url, workers.local.token))
        limit = timeout_seconds(timeout)
        await asyncio.gather(*(worker.start_serving(limit) for worker in workers.processes))
    except BaseException:
        await asyncio.gather(*(worker.close(grace=0) for worker in workers.processes))
        if owns_redis and server is not None:
            server.stop()
        raise
    lifecycle.add("workers", name, workers)
    return workers
