"""The exercise of lesson 03b: a queue and a few worker *tasks* inside one handler, which
drop the backlog when the client leaves (not lesson 05's worker processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .harness import (
    GRACE,
    RETURNED_EARLY,
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
    each worker finishes the message it holds, what is still queued is
    dropped, and the handler returns leaving no task running.
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
            "consumed: drop what is queued (empty the queue) once the client is gone.",
        )
        await check_nothing_left(report, before, "after the client left", not_over(early, ended))
    return report
