"""The exercise of lesson 03: consume and produce at once, and leave nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .harness import (
    GRACE,
    build,
    check_nothing_left,
    checker_client,
    in_time,
    judge_end,
    not_awaited,
    not_over,
    quote,
    receive,
    send_all,
    serving,
    until,
)
from .report import Report
from .scripted import ScriptedConsume, ScriptedProduce


async def check_consumer_and_producer(consumer_and_producer: Callable[..., Any]) -> Report:
    """Check the exercise of lesson 03: consume and produce at once, and leave nothing behind.

    ``consumer_and_producer(consume, produce)`` must return a handler that runs
    a consumer and a producer at the same time; ends when the client leaves
    (even while produce() waits for news), when produce() returns None, or when
    consume() raises; lets that error reach the server; and leaves no task running.
    """
    report = Report("consumer_and_producer")
    consume = ScriptedConsume(fail_on=["boom"])
    produce = ScriptedProduce(["news 1", "news 2"], then="wait")
    handler = build(report, consumer_and_producer, {"consume": consume, "produce": produce})
    if handler is None:
        return report
    async with serving(handler, "consumer and producer", consume, produce) as (server, watch):
        # 1. Both at once: news arrives while the handler consumes.
        before = asyncio.all_tasks()
        async with checker_client(server, watch) as client:
            await send_all(client, "hi")
            received = await receive(client, GRACE * 2, most=2)
            await until(lambda: consume.done == ["hi"] or watch.ended.is_set())
            early = watch.ended.is_set()
        if received == ["news 1", "news 2"] and consume.done == ["hi"]:
            report.add(True, "It consumed and produced at the same time.")
        elif consume.done == ["hi"]:
            report.add(
                False,
                f"While the client was there it received {quote(received)} instead of "
                "['news 1', 'news 2']: run the consumer and the producer as two tasks, "
                "side by side.",
            )
        else:
            report.add(
                False,
                f"consume() got {quote(consume.done)} instead of ['hi'] while the client "
                "was there." + not_awaited(consume),
            )
        # 2. The client left while produce() waits for news.
        ended = await watch.end()
        waiting = "after the client left (produce() was waiting)"
        judge_end(report, watch, ended, waiting, early=early)
        await check_nothing_left(report, before, "after the client left", not_over(early, ended))

        # 3. produce() has nothing more: the connection closes.
        consume.reset(fail_on=["boom"])
        produce.reset(["last news"], then="none")
        watch.error = None
        before = asyncio.all_tasks()
        async with checker_client(server, watch) as client:
            await receive(client, GRACE * 3, most=1)
            closed = await in_time(GRACE * 2, client.wait_closed(timeout=None))
        got_none = produce.calls >= 2  # it returned "last news", then None
        if got_none:
            report.add(
                closed and watch.ended.is_set(),
                "When produce() returned None, the handler ended and the connection closed.",
                f"The connection was still open {GRACE * 2:g} s after produce() returned "
                "None: when one task finishes, cancel the other.",
            )
        else:
            report.skip(
                "Whether the handler ended when produce() returned None",
                "your handler never asked produce() past its last message",
            )
        await watch.end()
        await check_nothing_left(
            report,
            before,
            "after produce() returned None",
            None if got_none else "produce() never returned None",
        )

        # 4. consume() raises: the error reaches the server.
        consume.reset(fail_on=["boom"])
        produce.reset([], then="wait")
        watch.error = None
        before = asyncio.all_tasks()
        async with checker_client(server, watch) as client:
            await send_all(client, "boom")
            await in_time(GRACE * 2, client.wait_closed(timeout=None))
        ended = await watch.end()
        error = watch.error
        grouped = isinstance(error, BaseExceptionGroup) and error.subgroup(ValueError) is not None
        if not consume.got:
            report.skip("Whether an error in consume() reached the server", "consume() never ran")
        elif isinstance(error, ValueError) or grouped:
            inside = ", inside an ExceptionGroup" if grouped else ""
            report.add(
                True, f"An error in consume() reached the server (it raised ValueError{inside})."
            )
        elif not ended:
            report.add(False, f"consume() raised, but your handler still ran {GRACE:g} s later.")
        else:
            report.add(
                False,
                "consume() raised ValueError, but your handler returned without it: the "
                "error was lost. Call `.result()` on the task that finished, to raise it.",
            )
        await check_nothing_left(
            report,
            before,
            "after consume() raised",
            None if consume.got else "consume() never ran, so it never raised",
        )
    return report
