"""The exercise of lesson 02: a producer that stops when there is nothing left to send."""

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
    closed_by_server,
    in_time,
    judge_end,
    not_over,
    quote,
    receive,
    serving,
)
from .report import Report
from .scripted import ScriptedProduce


async def check_producer(finite_producer: Callable[..., Any]) -> Report:
    """Check the exercise of lesson 02: a producer that stops when there is nothing left.

    ``finite_producer(produce)`` must return a handler that sends what
    ``await produce()`` returns until it returns None, then ends (websockets then
    closes the connection normally), and ends quietly if the client leaves first.
    """
    report = Report("finite_producer")
    produce = ScriptedProduce(["a", "b", "c"], then="none")
    handler = build(report, finite_producer, {"produce": produce})
    if handler is None:
        return report
    async with serving(handler, "producer", produce) as (server, watch):
        # 1. Everything produce() returns, then a normal close when it returns None.
        before = asyncio.all_tasks()
        async with checker_client(server, watch) as client:
            received = await receive(client, GRACE * 3, most=5)
            closed = await in_time(GRACE * 2, client.wait_closed(timeout=None))
            by_server, code = closed_by_server(client), client.close_code
        report.add(
            received == ["a", "b", "c"],
            "The client received every message produce() returned, in order: ['a', 'b', 'c'].",
            f"The client received {quote(received)}; produce() returned 'a', 'b', 'c', "
            "then None, which means: nothing more to send.",
        )
        if received[:3] != ["a", "b", "c"]:
            # How it closed says little when what came before it went wrong.
            report.skip(
                "Whether the connection closed normally when produce() returned None",
                "the client did not receive 'a', 'b', 'c'",
            )
        elif closed and by_server and code == 1000:
            report.add(True, "When produce() returned None, the connection closed normally (1000).")
        elif closed and by_server:
            report.add(
                False,
                f"When produce() returned None, the server closed the connection with code "
                f"{code}" + (f": your handler raised {type(watch.error).__name__}: "
                             f"{watch.error}." if watch.error else "."),
            )  # fmt: skip
        else:
            report.add(
                False,
                f"The connection was still open {GRACE * 2:g} s after produce() returned None: "
                "stop when the message is None (`if message is None: break`).",
            )
        await watch.end()
        asked_all = produce.calls > len(produce.messages)  # it got the None
        await check_nothing_left(
            report,
            before,
            "after the connection closed",
            None if asked_all else "your handler never got the None that ends it",
        )

        # 2. The client leaves while there is more to send: the handler ends quietly.
        produce.reset([], then="count", delay=0.02)
        watch.error = None
        before = asyncio.all_tasks()
        async with checker_client(server, watch) as client:
            await receive(client, GRACE * 3, most=3)
            early = watch.ended.is_set()
        left_at = produce.calls
        ended = await watch.end()
        judge_end(report, watch, ended, "after the client left", early=early)
        extra = produce.calls - left_at
        asked_more = "Whether produce() was asked for more after the client left"
        if early:
            report.skip(asked_more, RETURNED_EARLY)
        elif not left_at:
            report.skip(asked_more, "your handler never called produce()")
        else:
            report.add(
                extra <= 2,
                "After the client left, produce() was not asked for more.",
                f"After the client left, your handler asked produce() for {extra} more "
                "messages: stop at the first ConnectionClosed.",
            )
        await check_nothing_left(report, before, "after the client left", not_over(early, ended))
    return report
