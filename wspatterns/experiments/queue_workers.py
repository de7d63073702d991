"""Lesson 03b, multiple consumers: who consumed what and when, how fast a team of workers goes,
and what a bounded queue does to the client."""

from __future__ import annotations

import asyncio
import bisect
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import InvalidArgumentError, KitTimeoutError, NothingToShowError
from ..runtime import connect, serve
from ..settings import DEFAULT, Handler, timeout_seconds
from ..waiting import wait_until
from .buffers import limit_os_buffers

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure


class Span(NamedTuple):
    """One call of consume(): which worker made it, for which message, from when to when."""

    worker: int  # 1, 2, ...: in the order the workers first took a message
    message: Any
    start: float  # seconds since the log was made or cleared
    end: float
    finished: bool  # False if the call was cancelled or raised


class WorkLog:
    """A ``consume(message)`` that runs yours and notes a :class:`Span` for every call.

    Hand it to a handler where it takes ``consume``. The task that calls it is the worker:
    workers are numbered in the order they first took a message. ``mark(label)`` notes a
    moment (say, when the client left) for :meth:`timeline` to draw.
    """

    def __init__(self, consume: Callable[[Any], Awaitable[None]]) -> None:
        self.consume = consume
        self.clear()

    def clear(self) -> None:
        """Forget every call and mark; times count from now."""
        self.spans: list[Span] = []
        self.marks: dict[str, float] = {}
        self.workers: dict[asyncio.Task[Any] | None, int] = {}
        self.started = time.monotonic()

    def now(self) -> float:
        """Seconds since the log was made or cleared."""
        return time.monotonic() - self.started

    def mark(self, label: str) -> None:
        """Note this moment as ``label``."""
        self.marks[label] = self.now()

    async def __call__(self, message: Any) -> None:
        worker = self.workers.setdefault(asyncio.current_task(), len(self.workers) + 1)
        start, finished = self.now(), False
        try:
            await self.consume(message)
            finished = True
        finally:
            self.spans.append(Span(worker, message, start, self.now(), finished))

    @property
    def finished(self) -> list[Any]:
        """The messages consume() finished, in the order it finished them."""
        return [span.message for span in self.spans if span.finished]

    def most_at_once(self) -> int:
        """The most calls that were running at the same moment."""
        edges = sorted(
            [(span.start, 1) for span in self.spans] + [(span.end, -1) for span in self.spans]
        )
        running = most = 0
        for _, step in edges:  # at a tie an end (-1) sorts first: back to back is not at once
            running += step
            most = max(most, running)
        return most

    def timeline(self, title: str = "When each worker was consuming") -> Figure:
        """A bar per call, a row per worker, against time; hatched bars were cut off."""
        import matplotlib.pyplot as pyplot
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        if not self.spans:
            raise NothingToShowError(
                "nothing to draw: consume() was never called since the log was cleared."
            )
        lanes = max(span.worker for span in self.spans)
        figure, axes = pyplot.subplots(figsize=(8, 1.2 + 0.45 * lanes))
        pyplot.close(figure)  # shown once, by being returned
        last = max([span.end for span in self.spans] + list(self.marks.values()))
        for span in self.spans:
            width = max(span.end - span.start, last / 200)
            axes.broken_barh(
                [(span.start, width)], (span.worker - 0.35, 0.7),
                facecolors="tab:blue" if span.finished else "white", linewidth=1.5,
                edgecolors="white" if span.finished else "tab:blue",
                hatch=None if span.finished else "///",
            )  # fmt: skip
            if width > last / 25:
                colour = "white" if span.finished else "black"
                axes.text(span.start + width / 2, span.worker, str(span.message),
                          ha="center", va="center", color=colour, fontsize=9)  # fmt: skip
        keys: list[Any] = []
        for number, (label, moment) in enumerate(self.marks.items()):
            colour = ("tab:red", "tab:green", "tab:purple", "black")[number % 4]
            axes.axvline(moment, color=colour, linestyle="--")
            keys.append(Line2D([], [], color=colour, linestyle="--", label=label))
        if not all(span.finished for span in self.spans):
            keys.append(
                Patch(facecolor="white", edgecolor="tab:blue", hatch="///", label="cut off")
            )
        axes.set_yticks(range(1, lanes + 1), [f"worker {lane}" for lane in range(1, lanes + 1)])
        axes.set_ylim(lanes + 0.6, 0.4)  # worker 1 on top
        axes.set_xlim(0, last * 1.05)
        axes.set_xlabel("seconds")
        axes.set_title(title)
        axes.grid(True, axis="x", alpha=0.3)
        if keys:
            axes.legend(handles=keys, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
        figure.tight_layout()
        return figure


def ideal_rate(workers: int, consume_time: float) -> float:
    """Messages per second ``workers`` workers reach at best, when each message takes
    ``consume_time`` seconds to consume and they never wait for a message."""
    return workers / consume_time


#: The team sizes lesson 03b compares.
WORKER_COUNTS = (1, 2, 4, 8, 16)

#: What lesson 03b's handler factories look like: ``make_handler(consume, count)``; the
#: backpressure experiment also passes ``maxsize``, the bound of the queue.
MakeWorkersHandler = Callable[..., Handler]


async def workers_experiment(
    make_handler: MakeWorkersHandler,
    counts: Iterable[int] = WORKER_COUNTS,
    *,
    messages: int = 16,
    consume_time: float = 0.05,
    timeout: float | None = DEFAULT,
) -> pandas.DataFrame:
    """Time how long ``make_handler(consume, count)`` takes to consume a batch, for each count.

    ``consume`` sleeps ``consume_time`` seconds, like business logic waiting on a database.
    Returns one row per count: seconds, messages/s, the ideal rate, and the most calls of
    consume() that ran at once. Raises TimeoutError, saying how many messages were consumed,
    if a batch takes longer than ``timeout`` seconds (left out: twice what one worker
    needs, plus 2 s; None: never).
    """
    import pandas

    _check_batch(messages, consume_time)
    limit = timeout_seconds(timeout, 2 * messages * consume_time + 2)
    rows = []
    for count in counts:
        seconds, most = await _time_one_batch(make_handler, count, messages, consume_time, limit)
        rows.append((count, seconds, messages / seconds, ideal_rate(count, consume_time), most))
    return pandas.DataFrame(
        rows, columns=["workers", "seconds", "messages/s", "ideal messages/s", "most at once"]
    )


def _check_batch(messages: int, consume_time: float) -> None:
    if messages < 1 or consume_time <= 0:
        raise InvalidArgumentError(
            f"need at least 1 message and a positive consume_time; got {messages} "
            f"and {consume_time}."
        )


async def _time_one_batch(
    make_handler: MakeWorkersHandler,
    count: int,
    messages: int,
    consume_time: float,
    limit: float | None,
) -> tuple[float, int]:
    """Seconds from the first message sent to the last one consumed, the client staying on;
    and the most calls of consume() that ran at once."""
    log = WorkLog(functools.partial(_sleep_then_drop, consume_time))
    async with serve(make_handler(log, count), name="workers-experiment") as server:
        async with connect(server, name="batch") as websocket:
            log.clear()
            for number in range(messages):
                await websocket.send(str(number))
            await _until_consumed(log, messages, limit, f"with {count} worker(s)")
            return log.spans[-1].end, log.most_at_once()


async def _sleep_then_drop(seconds: float, message: Any) -> None:
    await asyncio.sleep(seconds)


async def _until_consumed(log: WorkLog, messages: int, limit: float | None, who: str) -> None:
    try:
        await wait_until(lambda: len(log.finished) >= messages, limit)
    except TimeoutError:
        raise KitTimeoutError(
            f"{who}, only {len(log.finished)} of {messages} messages were consumed within "
            f"{limit:g} s: does every worker take messages from the queue and await consume() "
            "on each?"
        ) from None


class Backpressure:
    """What :func:`backpressure_experiment` saw: per queue bound, when the client's send()
    calls returned and when the workers finished each message (seconds from the first send)."""

    def __init__(self, messages: int) -> None:
        self.messages = messages
        self.sent: dict[int, list[float]] = {}
        self.consumed: dict[int, list[float]] = {}

    def summary(self) -> pandas.DataFrame:
        """One row per queue bound (``maxsize``; 0 is no bound): how long the client took to
        send everything, how many messages were consumed by then, and how far ahead of the
        workers the client got at most (sent but not yet consumed)."""
        import pandas

        rows = []
        for maxsize, sent in self.sent.items():
            consumed = sorted(self.consumed[maxsize])
            ahead = [
                number - bisect.bisect_right(consumed, at) for number, at in enumerate(sent, 1)
            ]
            rows.append((maxsize, sent[-1], bisect.bisect_right(consumed, sent[-1]), max(ahead)))
        columns = ["maxsize", "sending took (s)", "consumed by then", "most messages ahead"]
        return pandas.DataFrame(rows, columns=columns).set_index("maxsize")

    def plot(self) -> Figure:
        """A panel per queue bound: messages sent by the client and consumed by the workers."""
        import matplotlib.pyplot as pyplot

        figure, axes = pyplot.subplots(
            1, len(self.sent), figsize=(4.5 * len(self.sent), 3.6), sharey=True, squeeze=False
        )
        pyplot.close(figure)  # shown once, by being returned
        for panel, (maxsize, sent) in zip(axes[0], self.sent.items(), strict=True):
            consumed = sorted(self.consumed[maxsize])
            counts = range(1, self.messages + 1)
            panel.step(sent, counts, where="post", label="sent (the client's send() returned)")
            panel.step(consumed, counts, where="post", label="consumed by the workers")
            panel.set_title(f"maxsize={maxsize}" + (" (no bound)" if maxsize <= 0 else ""))
            panel.set_xlabel("seconds")
            panel.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("messages")
        axes[0][0].legend(loc="lower right", fontsize=8)
        figure.suptitle("The client against slow workers")
        figure.tight_layout()
        return figure


async def backpressure_experiment(
    make_handler: MakeWorkersHandler,
    maxsizes: Iterable[int] = (0, 4),
    *,
    workers: int = 4,
    messages: int = 200,
    size: int = 16 * 1024,
    consume_time: float = 0.025,
    buffers: int = 64 * 1024,
    timeout: float | None = DEFAULT,
) -> Backpressure:
    """Let one client send ``messages`` messages of ``size`` bytes as fast as it can to
    ``make_handler(consume, workers, maxsize)``, for each ``maxsize``; consume() sleeps
    ``consume_time`` seconds. Notes when each send() returned and each message was consumed.

    The connection's socket buffers (the client's for sending, the server's for receiving)
    are capped at ``buffers`` bytes, and compression is off, so that what sits between the
    client and the handler is about the same on any machine. Raises TimeoutError, saying how
    many messages were consumed, if a run takes longer than ``timeout`` seconds (left out:
    twice what the workers need, plus 5 s; None: never).
    """
    _check_batch(messages, consume_time)
    limit = timeout_seconds(timeout, 2 * messages * consume_time / workers + 5)
    result = Backpressure(messages)
    payload = bytes(size)
    for maxsize in maxsizes:
        log = WorkLog(functools.partial(_sleep_then_drop, consume_time))
        handler = make_handler(log, workers, maxsize)
        async with serve(handler, name="backpressure-experiment", compression=None) as server:
            async with connect(server, name="sender", compression=None) as websocket:
                limit_os_buffers(websocket, server, buffers, toward="server")
                sent, log.started = [], time.monotonic()
                for _ in range(messages):
                    await websocket.send(payload)
                    sent.append(log.now())
                await _until_consumed(log, messages, limit, f"with maxsize={maxsize}")
        result.sent[maxsize] = sent
        result.consumed[maxsize] = [span.end for span in log.spans if span.finished]
    return result
