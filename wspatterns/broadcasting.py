"""Six ways to send one message to many clients, and the processes that measure them.

A strategy keeps the clients a server has and sends them a message::

    room = STRATEGIES["queue"]()
    server = await serve(room.handler)
    await room.broadcast("hello, everyone")

The six are the ones upstream websockets compares in ``experiments/broadcast``:
its own ``broadcast()``, awaiting ``send()`` to each client in turn, a task per
client, ``asyncio.wait`` over those tasks, a queue and a relay task per client,
and a chain of futures each client's relay follows. They differ in what one
client that stops reading does to the others.

To measure them as upstream does, a server and its clients run in separate
processes; this module is both::

    python -m wspatterns.broadcasting server --method naive --size 64 --rate 10
    python -m wspatterns.broadcasting clients ws://127.0.0.1:PORT/ --count 100 --slow 1

To fan out across processes instead, a publisher publishes on a Redis channel
and relays, each a server subscribed to it, ``broadcast()`` every message to
their own clients; clients can be shared out over several URLs::

    python -m wspatterns.broadcasting publisher redis://127.0.0.1:PORT/0 --rate 10
    python -m wspatterns.broadcasting relay redis://127.0.0.1:PORT/0
    python -m wspatterns.broadcasting clients ws://127.0.0.1:P1/ ws://127.0.0.1:P2/ --count 100

:class:`ServerProcess`, :class:`ClientsProcess`, :class:`PublisherProcess`,
:class:`RelayProcess` and :func:`measure` start and drive those processes from
Python, and always stop them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data
from websockets.uri import parse_uri

from .patterns import registration
from .processes import ChildProcess, ProcessFailed, obey, say, until_signal

# The strategies


async def send_quietly(websocket: ServerConnection, message: Data) -> None:
    """Send ``message`` to one client; if that client has left, there is nobody to tell."""
    try:
        await websocket.send(message)
    except ConnectionClosed:
        pass


class Strategy:
    """A way to broadcast: serve ``handler``, then ``await broadcast(message)`` sends to everyone.

    ``clients`` holds the open connections. Subclasses say how a message reaches them.
    """

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self._register = registration(self.clients)

    async def handler(self, websocket: ServerConnection) -> None:
        """Keep ``websocket`` in ``clients`` until it closes."""
        await self._register(websocket)

    async def broadcast(self, message: Data) -> None:
        raise NotImplementedError


class BuiltIn(Strategy):
    """websockets' ``broadcast()``: writes to every open client at once and never waits.

    A client that stops reading is not waited for; what it does not read piles up in its
    write buffer for as long as it does not read (once that buffer is full, websockets 17's
    keepalive ping waits behind it and never times out).
    """

    async def broadcast(self, message: Data) -> None:
        broadcast(self.clients, message)


class InTurn(Strategy):
    """``await send()`` to each client in turn: a client that stops reading holds up the rest."""

    async def broadcast(self, message: Data) -> None:
        for websocket in list(self.clients):  # a copy: clients may leave while we await
            await send_quietly(websocket, message)


class TaskPerClient(Strategy):
    """A ``send()`` task per client, and return at once: tasks pile up behind a slow client."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: set[asyncio.Task] = set()

    async def broadcast(self, message: Data) -> None:
        for websocket in self.clients:
            task = asyncio.create_task(send_quietly(websocket, message))
            self.tasks.add(task)  # asyncio itself keeps only a weak reference to a task
            task.add_done_callback(self.tasks.discard)


class WaitForAll(Strategy):
    """A ``send()`` task per client, then wait for all of them: as slow as the slowest client."""

    async def broadcast(self, message: Data) -> None:
        if self.clients:  # asyncio.wait() refuses an empty set
            sends = [asyncio.create_task(send_quietly(ws, message)) for ws in self.clients]
            await asyncio.wait(sends)


class QueuePerClient(Strategy):
    """A queue per client, emptied by that client's relay task: a slow client's queue grows."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[ServerConnection, asyncio.Queue] = {}

    async def handler(self, websocket: ServerConnection) -> None:
        queue = self.queues[websocket] = asyncio.Queue()
        relay = asyncio.create_task(self.relay(websocket, queue))
        try:
            await super().handler(websocket)
        finally:
            del self.queues[websocket]
            relay.cancel()

    async def relay(self, websocket: ServerConnection, queue: asyncio.Queue) -> None:
        while True:
            await send_quietly(websocket, await queue.get())

    async def broadcast(self, message: Data) -> None:
        for queue in self.queues.values():
            queue.put_nowait(message)


class FutureChain(Strategy):
    """Publish into a chain of futures that each client's relay task follows at its own pace.

    Each future holds a message and the next future; a slow client's relay keeps the
    chain from where it is, so everything published since stays in memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self._next: asyncio.Future | None = None

    @property
    def next(self) -> asyncio.Future:
        """The future the next message will be published into."""
        if self._next is None:  # made here, on the running loop, not in __init__
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    async def handler(self, websocket: ServerConnection) -> None:
        relay = asyncio.create_task(self.relay(websocket, self.next))
        try:
            await super().handler(websocket)
        finally:
            relay.cancel()

    async def relay(self, websocket: ServerConnection, future: asyncio.Future) -> None:
        while True:
            # shield(): cancelling this relay must not cancel the future the others wait on.
            message, future = await asyncio.shield(future)
            await send_quietly(websocket, message)

    async def broadcast(self, message: Data) -> None:
        published, self._next = self.next, asyncio.get_running_loop().create_future()
        published.set_result((message, self._next))


#: The strategies by the names upstream's experiment gives them.
STRATEGIES: dict[str, type[Strategy]] = {
    "default": BuiltIn,
    "naive": InTurn,
    "task": TaskPerClient,
    "wait": WaitForAll,
    "queue": QueuePerClient,
    "pubsub": FutureChain,
}


def check_method(method: str) -> None:
    """Raise ValueError, naming the strategies there are, unless ``method`` is one of them."""
    if method not in STRATEGIES:
        raise ValueError(
            f"unknown broadcast method {method!r}; the methods are: {', '.join(STRATEGIES)}."
        )


# Messages that carry the time they were sent


def stamped_message(size: int, *, text: bool = False) -> bytes:
    """``size`` bytes starting with ``time.time_ns()`` in digits and a space, then random bytes.

    Random bytes, because compression would shrink anything else to nothing. With ``text``,
    random hex digits instead, so that the message is also UTF-8 text, as a Redis hub
    carries. A message is never shorter than its stamp (19 digits).
    """
    stamp = str(time.time_ns()).encode()
    if size <= len(stamp) + 1:
        return stamp
    rest = size - len(stamp) - 1
    filler = os.urandom((rest + 1) // 2).hex()[:rest].encode() if text else os.urandom(rest)
    return stamp + b" " + filler


def latency_ns(message: Data, received: int) -> int:
    """Nanoseconds from the stamp of ``message`` to ``received`` (a ``time.time_ns()``)."""
    if isinstance(message, str):
        message = message.encode()
    return received - int(message.partition(b" ")[0])


def percentile(ordered: list[int], share: float) -> int:
    """The value below which ``share`` (0 to 1) of the sorted ``ordered`` values fall."""
    index = max(0, math.ceil(share * len(ordered)) - 1)  # nearest rank
    return ordered[index]


# The server process


def resident_bytes() -> int:
    """Memory this process occupies right now (resident set), in bytes; where the system
    does not say, the most it has occupied so far."""
    try:
        with open("/proc/self/statm") as statm:  # Linux
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # Elsewhere only the peak is known (and on Linux it would include the parent's,
        # inherited through fork).
        import resource  # not on Windows, where this module's processes do not run anyway

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class Broadcaster:
    """Broadcasts a stamped message every ``1 / rate`` seconds and measures the CPU it takes.

    A window opens at each :meth:`start`; :meth:`report` says what happened since.
    """

    def __init__(self, strategy: Strategy, size: int, rate: float, *, text: bool = False) -> None:
        self.strategy = strategy
        self.size = size
        self.text = text  # messages of text, not bytes: see stamped_message()
        self.period = 1 / rate
        self.broadcasts = 0
        self.busy = 0.0  # seconds spent inside strategy.broadcast()
        self.open = False
        self._task: asyncio.Task | None = None
        self._wall = self._cpu = 0.0

    def start(self) -> None:
        """Broadcast (if paused) and open a new measuring window."""
        self.broadcasts, self.busy, self.open = 0, 0.0, True
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        if self._task is None:
            self._task = asyncio.create_task(self._broadcast_forever())

    def pause(self) -> None:
        """Stop broadcasting, even in the middle of a broadcast; the window closes."""
        self.open = False
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def report(self) -> dict[str, Any]:
        """What the window measured: broadcasts, the time one took on average, seconds, CPU
        load (CPU time / wall time), and the memory the process occupies at the end."""
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        each = self.busy / self.broadcasts if self.broadcasts else None
        return {
            "event": "report",
            "clients": len(self.strategy.clients),
            "broadcasts": self.broadcasts,
            "broadcast_ms": None if each is None else round(each * 1000, 3),
            "seconds": round(wall, 4),
            "cpu": round(cpu / wall, 4) if wall > 0 else None,
            "memory_mb": round(resident_bytes() / 2**20, 1),
        }

    async def _broadcast_forever(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            start = time.perf_counter()
            await self.strategy.broadcast(stamped_message(self.size, text=self.text))
            self.busy += time.perf_counter() - start
            self.broadcasts += 1
            # Keep to the schedule; after a broadcast that overran it, start again from now
            # rather than sending a burst to catch up.
            due = max(due + self.period, loop.time())
            await asyncio.sleep(due - loop.time())


async def run_server(method: str, size: int, rate: float, *, kit: bool, paused: bool) -> None:
    """Serve on 127.0.0.1, print the URL, broadcast, and obey commands on stdin until told to quit.

    Commands, one per line: ``start`` (broadcast and open a measuring window), ``stop``
    (print the window's report as a JSON line and pause), ``quit``. End of stdin, SIGTERM
    and SIGINT also quit, after printing the report of a window still open.
    """
    strategy = STRATEGIES[method]()
    options = {"compression": None}  # as upstream's experiment: the cost is in the sending
    if kit:
        from .runtime import serve as kit_serve

        kit_server = await kit_serve(strategy.handler, name=f"broadcast-{method}", **options)
        url = kit_server.url
    else:
        ws_server = await serve(strategy.handler, "127.0.0.1", 0, **options)
        url = f"ws://127.0.0.1:{ws_server.sockets[0].getsockname()[1]}/"
    say(url)
    broadcaster = Broadcaster(strategy, size, rate)
    if not paused:
        broadcaster.start()

    def report() -> dict[str, Any]:
        figures = broadcaster.report()
        if kit:  # proof that recording was on: events recorded since the server started
            figures["recorded"] = kit_server.flow.recorded
        return figures

    try:
        await measure_on_command(broadcaster, report)
    finally:
        broadcaster.pause()
        if kit:
            await kit_server.stop()
        else:
            await close_plain_server(ws_server)


async def measure_on_command(
    window: Broadcaster | Relay, report: Callable[[], dict[str, Any]]
) -> None:
    """Obey the parent until told to quit: ``start`` opens ``window``, ``stop`` prints
    ``report()`` as a JSON line and pauses it. End of stdin, SIGTERM and SIGINT also quit,
    after printing the report of a window still open."""

    def stop() -> None:
        say(report())
        window.pause()

    await until_signal(obey(window.start, stop))
    if window.open:
        say(report())


async def close_plain_server(server: Server) -> None:
    """Close a websockets server, giving its connections at most 5 s to close."""
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5)


# Fan-out through Redis: a publisher process, relay processes

#: The Redis channel the publisher and relay processes use unless told otherwise.
CHANNEL = "fanout"


class RedisPublisher(Strategy):
    """Broadcast by publishing on a Redis channel: the relays subscribed to it send it on.

    It has no clients of its own; ``client`` is a ``redis.asyncio`` client.
    """

    def __init__(self, client: Any, channel: str) -> None:
        super().__init__()
        self.client = client
        self.channel = channel

    async def broadcast(self, message: Data) -> None:
        await self.client.publish(self.channel, message)


async def run_publisher(redis_url: str, channel: str, size: int, rate: float, *, paused: bool):
    """Publish a stamped text message on ``channel`` every ``1 / rate`` s.

    Prints ``redis_url`` once Redis answers, then obeys commands on stdin as :func:`run_server`
    does; the report's ``broadcast_ms`` is the time one publish takes. Raises redis-py's
    ConnectionError if Redis cannot be reached.
    """
    import redis.asyncio

    client = redis.asyncio.from_url(redis_url)
    try:
        await client.ping()
        say(redis_url)
        publisher = Broadcaster(RedisPublisher(client, channel), size, rate, text=True)
        if not paused:
            publisher.start()
        try:
            await measure_on_command(publisher, publisher.report)
        finally:
            publisher.pause()
    finally:
        await client.aclose()


class Relay:
    """Sends each message published on a Redis channel to all its clients with websockets'
    ``broadcast()``, and measures the hop: how late messages arrive from their publisher.

    Serve :attr:`room`'s handler and give :meth:`deliver` to a hub's ``subscribe()``. A
    window opens at each :meth:`start`; :meth:`report` says what happened since.
    """

    def __init__(self) -> None:
        self.room = BuiltIn()
        self.hop = LatencyLog(1)
        self.busy = 0.0  # seconds spent inside broadcast() while the window is open

    @property
    def open(self) -> bool:
        return self.hop.open

    def start(self) -> None:
        self.hop.start()
        self.busy = 0.0

    def pause(self) -> None:
        self.hop.open = False

    def deliver(self, channel: str, message: str, id: str | None = None) -> None:
        """Send ``message`` on (bytes: a binary frame, as the server process sends)."""
        data = message.encode()
        with contextlib.suppress(ValueError):  # a message without a stamp is sent, not timed
            self.hop.record(0, data)
        start = time.perf_counter()
        broadcast(self.room.clients, data)
        if self.hop.open:
            self.busy += time.perf_counter() - start

    def report(self) -> dict[str, Any]:
        """Messages relayed in the window, the hop's percentiles (ms), the time one
        ``broadcast()`` took, seconds, CPU load, and the memory the process occupies."""
        hop = self.hop.summary()
        messages = hop["messages"]
        return {
            "event": "report",
            "clients": len(self.room.clients),
            "messages": messages,
            **{f"hop_{name}": hop[name] for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms")},
            "broadcast_ms": round(self.busy / messages * 1000, 3) if messages else None,
            "seconds": hop["seconds"],
            "cpu": hop["cpu"],
            "memory_mb": round(resident_bytes() / 2**20, 1),
        }


async def run_relay(redis_url: str, channel: str) -> None:
    """Serve on 127.0.0.1, subscribe to ``channel`` through a :class:`~wspatterns.pubsub.RedisHub`,
    print the URL, and relay every message to every client.

    Obeys commands on stdin as :func:`run_server` does. Raises
    :class:`~wspatterns.pubsub.HubUnavailable` if Redis cannot be reached.
    """
    from .pubsub import RedisHub  # only relays need Redis

    relay = Relay()
    server = await serve(relay.room.handler, "127.0.0.1", 0, compression=None)
    try:
        async with RedisHub(redis_url, name="relay") as hub:
            await hub.subscribe(channel, relay.deliver)
            say(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
            await measure_on_command(relay, relay.report)
    finally:
        await close_plain_server(server)


# The clients process


#: Opening handshakes the clients process runs at once: enough to be quick, few enough
#: not to overflow the server's accept queue.
OPENING_AT_ONCE = 50


class LatencyLog:
    """Latencies of the messages ``count`` clients receive, while a window is open."""

    def __init__(self, count: int) -> None:
        self.received = [0] * count
        self.latencies: list[int] = []
        self.open = False
        self._since = self._cpu = 0.0

    def start(self) -> None:
        """Forget what was measured, and measure from now."""
        self.received = [0] * len(self.received)
        self.latencies = []
        self.open, self._since, self._cpu = True, time.perf_counter(), time.process_time()

    def record(self, client: int, message: Data) -> None:
        if self.open:
            self.latencies.append(latency_ns(message, time.time_ns()))
            self.received[client] += 1

    def summary(self) -> dict[str, Any]:
        """Messages received and latency percentiles (ms) since :meth:`start`; None without any."""
        ordered = sorted(self.latencies)
        wall = time.perf_counter() - self._since
        result: dict[str, Any] = {
            "event": "summary",
            "seconds": round(wall, 4),
            "cpu": round((time.process_time() - self._cpu) / wall, 4),  # of the clients' process
            "messages": len(ordered),
            "fewest": min(self.received, default=0),  # by the client that received the fewest
        }
        for name, share in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
            value = percentile(ordered, share) / 1e6 if ordered else None
            result[f"{name}_ms"] = None if value is None else round(value, 3)
        return result


async def open_slow_client(url: str, timeout: float) -> ClientConnection:
    """A client that never reads: it asks its kernel for the smallest receive buffer, and
    websockets reads at most one message for it, so what the server sends it piles up sooner."""
    uri = parse_uri(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port)), timeout
        )
        return await connect(url, sock=sock, proxy=None, max_queue=1, open_timeout=timeout)
    except BaseException:
        sock.close()
        raise


async def run_clients(
    url: str | list[str], count: int, slow: int = 0, *, seconds: float | None, warmup: float = 0.5
) -> int:
    """Open ``count`` clients (and ``slow`` that never read), print progress as JSON lines.

    Several URLs share the clients out in turn (the relays of one channel, say). With
    ``seconds``, measure for that long after ``warmup`` and print the summary; without,
    obey ``start`` / ``stop`` / ``quit`` lines on stdin. Returns the exit code: 1 if no
    client could connect.
    """
    urls = [url] if isinstance(url, str) else url
    timeout = 30.0
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def open_one(is_slow: bool, number: int) -> ClientConnection:
        url = urls[number % len(urls)]
        async with gate:
            if is_slow:
                return await open_slow_client(url, timeout)
            return await connect(url, proxy=None, max_size=None, open_timeout=timeout)

    opened = await asyncio.gather(
        *(open_one(False, number) for number in range(count)),
        *(open_one(True, number) for number in range(slow)),
        return_exceptions=True,
    )
    clients = [c for c in opened[:count] if isinstance(c, ClientConnection)]
    slow_clients = [c for c in opened[count:] if isinstance(c, ClientConnection)]
    errors = [c for c in opened if isinstance(c, BaseException)]
    say(
        {
            "event": "ready",
            "connected": len(clients),
            "slow": len(slow_clients),
            "failed": len(errors),
            "error": f"{type(errors[0]).__name__}: {errors[0]}" if errors else None,
        }
    )
    if not clients:
        print(f"no client could connect to {', '.join(urls)}", file=sys.stderr, flush=True)
        return 1

    log = LatencyLog(len(clients))
    closed = 0

    async def read(number: int, websocket: ClientConnection) -> None:
        nonlocal closed
        try:
            async for message in websocket:
                log.record(number, message)
        except ConnectionClosed:
            pass
        closed += 1

    def summary() -> dict[str, Any]:
        still_open = sum(1 for c in slow_clients if c.protocol.state.name == "OPEN")
        return {**log.summary(), "closed": closed, "slow_open": still_open}

    readers = [asyncio.create_task(read(n, c)) for n, c in enumerate(clients)]
    try:
        if seconds is not None:
            await until_signal(_timed(log, warmup, seconds))
            say(summary())
        else:

            def stop() -> None:
                say(summary())
                log.open = False

            await until_signal(obey(log.start, stop))
    finally:
        for reader in readers:
            reader.cancel()
        # No closing handshakes: a server stuck sending to a slow client would delay them.
        for websocket in clients + slow_clients:
            websocket.transport.abort()
    return 0


async def _timed(log: LatencyLog, warmup: float, seconds: float) -> None:
    await asyncio.sleep(warmup)
    log.start()
    await asyncio.sleep(seconds)


def _raise_file_limit() -> None:
    """A thousand connections need a thousand file descriptors; ask for as many as allowed."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    """Run the process named in ``argv`` (server, clients, publisher, relay); the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m wspatterns.broadcasting",
        description="The processes of the broadcast experiment, and of fan-out through Redis.",
    )
    roles = parser.add_subparsers(dest="role", required=True)
    server = roles.add_parser(
        "server",
        help="broadcast to every client; print the URL, then a JSON report",
        description="Serve on 127.0.0.1 (any free port), print the URL, and broadcast a "
        "stamped message every 1/rate s. Reads commands on stdin: start, stop (prints the "
        "report as JSON), quit; end of stdin, SIGTERM and SIGINT quit too.",
    )
    server.add_argument("--method", choices=list(STRATEGIES), default="default")
    server.add_argument("--kit", action="store_true", help="serve with wspatterns (recording)")
    publisher = roles.add_parser(
        "publisher",
        help="publish on a Redis channel; print the Redis URL, then a JSON report",
        description="Publish a stamped text message on CHANNEL every 1/rate s, once Redis "
        "answers (then print REDIS_URL). Reads commands on stdin as the server does.",
    )
    publisher.add_argument("redis_url")
    for broadcasting in (server, publisher):
        broadcasting.add_argument("--size", type=int, default=64, help="bytes per message (64)")
        broadcasting.add_argument("--rate", type=float, default=10.0, help="a second (10)")
        broadcasting.add_argument("--paused", action="store_true", help="wait for 'start'")
    relay = roles.add_parser(
        "relay",
        help="broadcast every message of a Redis channel; print the URL, then a JSON report",
        description="Serve on 127.0.0.1 (any free port), subscribe to CHANNEL through a "
        "RedisHub, print the URL, and broadcast() every message to every client. Reads "
        "commands on stdin as the server does; the report gives how late messages reached "
        "the relay from the publisher (the hop).",
    )
    relay.add_argument("redis_url")
    for redis_role in (publisher, relay):
        redis_role.add_argument("--channel", default=CHANNEL, help=f"({CHANNEL})")
    clients = roles.add_parser(
        "clients",
        help="open clients to URL; print latencies as JSON",
        description="Open COUNT clients to URL (in turn to each URL, if several) and measure "
        "how late messages arrive. With --seconds, measure that long and print a JSON "
        "summary; without, measure between 'start' and 'stop' lines on stdin.",
    )
    clients.add_argument("url", nargs="+")
    clients.add_argument("--count", type=int, default=10, help="clients that read (10)")
    clients.add_argument("--slow", type=int, default=0, help="clients that never read (0)")
    clients.add_argument("--seconds", type=float, help="measure this long, then exit")
    clients.add_argument("--warmup", type=float, default=0.5, help="before measuring (0.5 s)")
    args = parser.parse_args(argv)
    _raise_file_limit()
    if args.role in ("server", "publisher") and (args.size < 0 or not args.rate > 0):
        parser.error("--size must be 0 or more and --rate more than 0")
    if args.role == "server":
        asyncio.run(run_server(args.method, args.size, args.rate, kit=args.kit, paused=args.paused))
        return 0
    if args.role == "publisher":
        run = run_publisher(args.redis_url, args.channel, args.size, args.rate, paused=args.paused)
        asyncio.run(run)
        return 0
    if args.role == "relay":
        asyncio.run(run_relay(args.redis_url, args.channel))
        return 0
    if args.count < 1 or args.slow < 0:
        parser.error("--count must be 1 or more and --slow 0 or more")
    return asyncio.run(
        run_clients(args.url, args.count, args.slow, seconds=args.seconds, warmup=args.warmup)
    )


# Driving the processes from Python


class AddressedProcess(ChildProcess):
    """A process of this module whose first line is a URL: entering starts it and waits for
    that line, kept in ``url``. Leaving stops it (killing it after an error)."""

    module = "wspatterns.broadcasting"
    report = "report"

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self.url = ""

    async def __aenter__(self) -> Self:
        await self._start()
        try:
            self.url = await self.read(30, "URL")
        except BaseException:
            await self.close(grace=0)
            raise
        return self


class ServerProcess(AddressedProcess):
    """A broadcasting server in its own process; ``async with ServerProcess(...) as server:``.

    ``server.url`` is where it listens. It starts paused: ``start()`` broadcasts and opens a
    measuring window, ``await stop()`` pauses and returns the window's report. Leaving the
    block stops the process (killing it after an error). Raises :class:`ProcessFailed`.
    """

    role = "server"
    report = "report"  # broadcasts, cpu, memory_mb

    def __init__(
        self, method: str, *, size: int = 64, rate: float = 10.0, kit: bool = False
    ) -> None:
        check_method(method)
        args = ["server", "--method", method, "--size", str(size), "--rate", str(rate), "--paused"]
        super().__init__(args + (["--kit"] if kit else []))
        self.method, self.kit = method, kit


class PublisherProcess(AddressedProcess):
    """Publishes stamped messages on ``channel`` of the Redis at ``redis_url``, from its own
    process; ``async with PublisherProcess(...) as publisher:``.

    Entering waits until Redis answers it (``url`` is then ``redis_url``). It starts paused:
    ``start()`` publishes every ``1 / rate`` s and opens a measuring window, ``await stop()``
    pauses and returns the window's report (``broadcast_ms``: one publish). Raises
    :class:`ProcessFailed`.
    """

    role = "publisher"

    def __init__(
        self, redis_url: str, *, channel: str = CHANNEL, size: int = 64, rate: float = 10.0
    ) -> None:
        super().__init__(
            ["publisher", redis_url, "--channel", channel]
            + ["--size", str(size), "--rate", str(rate), "--paused"]
        )


class RelayProcess(AddressedProcess):
    """A relay in its own process: subscribed to ``channel`` of the Redis at ``redis_url``, it
    ``broadcast()``s every message to its clients; ``async with RelayProcess(...) as relay:``.

    Entering waits until it is subscribed; ``url`` is where it listens. ``start()`` opens a
    measuring window, ``await stop()`` returns its report (messages, the hop from the
    publisher: ``hop_p50_ms``, ``hop_p99_ms``…, the time one ``broadcast()`` took). Raises
    :class:`ProcessFailed`.
    """

    role = "relay"

    def __init__(self, redis_url: str, *, channel: str = CHANNEL) -> None:
        super().__init__(["relay", redis_url, "--channel", channel])


class ClientsProcess(ChildProcess):
    """``count`` clients of ``url`` (plus ``slow`` that never read) in their own process.

    A list of URLs shares the clients out in turn. Entering waits until they are connected
    (``ready`` says how many could); ``start()`` opens a measuring window, ``await stop()``
    returns its summary (messages, p50/p95/p99/max latency in ms). Raises :class:`ProcessFailed`.
    """

    module = "wspatterns.broadcasting"
    role = "clients"

    def __init__(self, url: str | list[str], count: int, *, slow: int = 0) -> None:
        urls = [url] if isinstance(url, str) else url
        super().__init__(["clients", *urls, "--count", str(count), "--slow", str(slow)])
        self.count, self.slow = count, slow
        self.ready: dict[str, Any] = {}

    async def __aenter__(self) -> ClientsProcess:
        await self._start()
        try:
            self.ready = await self.read_json(30 + (self.count + self.slow) / 20, "ready line")
        except BaseException:
            await self.close(grace=0)
            raise
        return self

    report = "summary"  # messages, fewest, p50_ms, p95_ms, p99_ms, max_ms, closed, slow_open


class Measurement(NamedTuple):
    """What one run measured: how many clients connected, what they saw, what the server did."""

    ready: dict[str, Any]  # connected, slow, failed, error (the first one)
    clients: dict[str, Any]  # messages, fewest, p50_ms, p95_ms, p99_ms, max_ms, closed, slow_open
    server: dict[str, Any]  # clients, broadcasts, broadcast_ms, seconds, cpu, memory_mb


async def measure(
    method: str,
    clients: int,
    *,
    size: int = 64,
    rate: float = 10.0,
    seconds: float = 2.0,
    slow: int = 0,
    kit: bool = False,
    phase: Callable[[str], None] | None = None,
) -> Measurement:
    """One run: a server process broadcasting with ``method`` to a clients process.

    Warms up, then measures for ``seconds``; ``phase(text)`` hears what is happening.
    Raises :class:`ProcessFailed` if either process dies or stops answering; both are
    gone when this returns or raises, even when cancelled.
    """
    say = phase or (lambda _: None)
    say("starting the server")
    async with ServerProcess(method, size=size, rate=rate, kit=kit) as server:
        say(f"connecting {clients} clients" + (f" and {slow} slow" if slow else ""))
        try:
            async with ClientsProcess(server.url, clients, slow=slow) as audience:
                if not audience.ready["connected"]:
                    raise ProcessFailed(f"no client could connect: {audience.ready['error']}")
                say("warming up")
                server.start()
                await asyncio.sleep(max(0.5, 2 / rate))
                say(f"measuring for {seconds:g} s")
                server.start()  # a new window: the warm-up does not count
                audience.start()
                await asyncio.sleep(seconds)
                summary = await audience.stop()
                report = await server.stop()
        except ProcessFailed as exc:
            # The clients fail when their server dies: then the server's fate is the news.
            raise ProcessFailed(await server.gone() or str(exc)) from None
        say("stopping")
    return Measurement(audience.ready, summary, report)


if __name__ == "__main__":
    sys.exit(main())
