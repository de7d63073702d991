"""The exercise of lesson 03b: a queue and a few worker *tasks* inside one handler, which
drop the backlog when the client leaves (not lesson 05's worker processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from ..reports import leaves
from ..runtime import Server
from .harness import (
    GRACE,
    RETURNED_EARLY,
    Watch,
    build,
    check_nothing_left,
    checker_client,
    judge_end,
    not_awaited,
    not_over,
    send_all,
    serving,
    until,
)
from .report import Report
from .scripted import ScriptedConsume


async def check_workers(dropping_workers: Callable[..., Any]) -> Report:
    """Check the exercise of lesson 03b: workers that drop the backlog when the client leaves.

    ``dropping_workers(consume, count)`` must return a handler in which
    ``count`` workers consume messages side by side; when the client leaves,
    whether it closes the connection or the connection drops, each worker
    finishes the message it holds, what the client sent and nobody started is
    dropped, and the handler ends leaving no task running.
    """
    report = Report("dropping_workers")
    count = 3
    consume = ScriptedConsume(delay=0.2)
    handler = build(report, dropping_workers, {"consume": consume, "count": count})
    if handler is None:
        return report
    async with serving(handler, "workers", consume) as (server, watch):
        # 1. count workers at once, no more, and every message consumed.
        sent = [f"job {number}" for number in range(1, 7)]
        async with checker_client(server, watch) as client:
            await send_all(client, *sent)
            await until(lambda: len(consume.done) >= len(sent) or watch.ended.is_set(), GRACE * 3)
        if sorted(consume.done) != sorted(sent):
            report.add(
                False,
                f"With the client connected, consume() finished {len(consume.done)} of "
                f"{len(sent)} messages." + not_awaited(consume),
            )
        else:
            report.add(True, "With the client connected, every message was consumed.")
        if not consume.got:
            report.skip(f"Whether {count} workers consumed side by side", "consume() never ran")
        else:
            report.add(
                consume.most == count,
                f"{count} workers consumed side by side, never more.",
                f"At most {consume.most} consume() call(s) ran at once; with count={count} "
                f"there should be {count}.",
            )
        await watch.end()

        # 2. The client leaves with a backlog: finish what is in hand, drop the rest.
        consume.reset(delay=0.3)
        watch.error = None
        before = asyncio.all_tasks()
        async with checker_client(server, watch) as client:
            await send_all(client, *(f"job {number}" for number in range(1, 11)))
            await until(lambda: consume.running >= count or watch.ended.is_set())
            in_hand = consume.running >= count
            early = watch.ended.is_set()
        ended = await watch.end(GRACE + 0.3)
        judge_end(report, watch, ended, "after the client left", early=early)
        if early or not in_hand:  # no backlog to drop: the first part says why
            because = RETURNED_EARLY if early else f"{count} workers never held a message at once"
            report.skip("Whether each worker finished the message it held", because)
            report.skip("Whether what was still queued was dropped", because)
            await check_nothing_left(report, before, "after the client left", because)
            _skip_the_drop(report, because)
            report.skip(f"Whether your handler left nothing running {DROPPED}", because)
            return report
        report.add(
            consume.cut == 0,
            "Each worker finished the message it held when the client left.",
            f"{consume.cut} message(s) were cut off in the middle of consume(): "
            "let each worker finish the message it holds.",
        )
        started_after = len(consume.got) - count
        report.add(
            started_after <= 0,
            "What was still queued when the client left was dropped.",
            f"After the client left, {started_after} queued message(s) were still "
            f"consumed: {DROP_HINT}",
        )
        await check_nothing_left(report, before, "after the client left", not_over(early, ended))

        # 3. The connection drops with a backlog: async for raises instead of ending.
        await _check_a_drop(report, server, watch, consume, count)
    return report


# What sits between a client and the workers is not only the handler's queue: with a
# bounded queue, what the client sent waits in websockets' buffer too, and async for
# hands it over even after the connection has closed.
DROP_HINT = (
    "once the client is gone, drop what nobody has started. With a bounded queue, part "
    "of it still waits in websockets' buffer, and `async for` hands it over after the "
    "client left: a worker can check, before it consumes, whether a task awaiting "
    "`websocket.wait_closed()` is done."
)


async def _check_a_drop(
    report: Report, server: Server, watch: Watch, consume: ScriptedConsume, count: int
) -> None:
    consume.reset(delay=0.3)
    watch.error = None
    before = asyncio.all_tasks()
    async with checker_client(server, watch) as client:
        await send_all(client, *(f"job {number}" for number in range(1, 11)))
        await until(lambda: consume.running >= count or watch.ended.is_set())
        in_hand = consume.running >= count and not watch.ended.is_set()
        client.transport.abort()  # the network fails: no closing handshake
        ended = await watch.end(GRACE + 0.3)
    when = DROPPED
    if not in_hand:
        because = f"{count} workers never held a message at once"
        _skip_the_drop(report, because)
        await check_nothing_left(report, before, when, because)
        return
    error = watch.error
    if not ended:
        report.add(False, f"Your handler was still running {GRACE + 0.3:g} s {when}.")
    elif error is not None and not all(isinstance(e, ConnectionClosed) for e in leaves(error)):
        report.add(False, f"Your handler raised {type(error).__name__} {when}: {error}.")
    else:  # ending with the ConnectionClosedError of async for is how a drop looks
        report.add(True, f"Your handler ended {when}.")
    report.add(
        consume.cut == 0,
        "Each worker finished the message it held when the connection dropped.",
        f"{consume.cut} message(s) were cut off in the middle of consume() when the "
        "connection dropped: let each worker finish the message it holds here too. A drop "
        "makes `async for` raise ConnectionClosedError, so code after the loop never runs "
        "(and a TaskGroup then cancels the workers): wait for them in a `finally:`.",
    )
    started_after = len(consume.got) - count
    report.add(
        started_after <= 0,
        "What was queued when the connection dropped was dropped.",
        f"After the connection dropped, {started_after} queued message(s) were still "
        f"consumed: {DROP_HINT}",
    )
    await check_nothing_left(report, before, when, None if ended else "your handler had not ended")


def _skip_the_drop(report: Report, because: str) -> None:
    for what in DROP_CHECKS:
        report.skip(what, because)


DROPPED = "after the connection dropped"
DROP_CHECKS = (
    f"Whether your handler ended {DROPPED}",
    "Whether each worker finished the message it held when the connection dropped",
    "Whether what was queued when the connection dropped was dropped",
)
