"""The exercise of lesson 01: a consumer that stops when the client says ``"bye"``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .harness import (
    GRACE,
    build,
    check_nothing_left,
    checker_client,
    closed_by_server,
    in_time,
    judge_end,
    not_awaited,
    not_over,
    quote,
    send_all,
    serving,
    until,
)
from .report import Report
from .scripted import ScriptedConsume


async def check_consumer(bye_consumer: Callable[..., Any]) -> Report:
    """Check the exercise of lesson 01: a consumer that stops when the client says ``"bye"``.

    ``bye_consumer(consume)`` must return a handler that awaits
    ``consume(message)`` for each message, in order and one at a time, and ends
    when the client leaves or sends ``"bye"`` (which it does not consume); then
    the connection closes normally (code 1000).
    """
    report = Report("bye_consumer")
    consume = ScriptedConsume()
    handler = build(report, bye_consumer, {"consume": consume})
    if handler is None:
        return report
    async with serving(handler, "consumer", consume) as (server, watch):
        # 1. Every message, in order; 2. the end of the loop when the client leaves.
        before = asyncio.all_tasks()
        sent = ["one", "two", "three"]
        async with checker_client(server, watch) as client:
            await send_all(client, *sent)
            await until(lambda: len(consume.done) >= len(sent) or watch.ended.is_set())
            early = watch.ended.is_set()
        report.add(
            consume.done == sent,
            f"consume() got every message, in order: {quote(sent)}.",
            f"consume() got {quote(consume.done)}; the client sent {quote(sent)}."
            + not_awaited(consume),
        )
        ended = await watch.end()
        judge_end(report, watch, ended, "after the client left", early=early)
        await check_nothing_left(report, before, "after the client left", not_over(early, ended))

        # 3. One message at a time: a slow consume() is waited for before the next.
        consume.reset(delay=0.1)
        async with checker_client(server, watch) as client:
            await send_all(client, "a", "b", "c")
            await until(
                lambda: (
                    len(consume.done) >= 3
                    or consume.calls > len(consume.got)
                    or watch.ended.is_set()
                )
            )
        if consume.most > 1:
            report.add(
                False,
                f"{consume.most} consume() calls ran at the same time: await each one "
                "before reading the next message (a task per message loses the order, and "
                "the backpressure that keeps a fast client from flooding the server).",
            )
        elif consume.done == ["a", "b", "c"]:
            report.add(
                True, "A slow consume() ran one message at a time, each awaited before the next."
            )
        elif not consume.got:
            report.skip("Whether a slow consume() ran one message at a time", "consume() never ran")
        else:
            report.add(
                False, f"With a slow consume(), it got {quote(consume.done)} of 'a', 'b', 'c'."
            )
        await watch.end()

        # 4. "bye": not consumed; the handler returns and the connection closes normally.
        consume.reset()
        async with checker_client(server, watch) as client:
            await send_all(client, "hello", "bye", "after")
            closed = await in_time(GRACE * 2, client.wait_closed(timeout=None))
            by_server, code = closed_by_server(client), client.close_code
        await until(lambda: len(consume.done) >= 1)
        report.add(
            consume.done == ["hello"],
            "consume() got what came before 'bye', and neither 'bye' nor what came after.",
            f"After the client sent 'hello', 'bye', 'after', consume() got "
            f"{quote(consume.done)}; it should get ['hello'] only.",
        )
        if consume.done != ["hello"]:
            # How it closed says little when what came before it went wrong.
            report.skip(
                "Whether the connection closed normally after 'bye'",
                "consume() did not get 'hello'",
            )
        elif not closed or not by_server:
            report.add(
                False,
                f"The connection was still open {GRACE * 2:g} s after the client said 'bye': "
                "return from the handler (or `await websocket.close()`) when the message is "
                "'bye'.",
            )
        else:
            report.add(
                code == 1000,
                "After 'bye' the server closed the connection normally (code 1000).",
                f"After 'bye' the server closed the connection with code {code}"
                + (": your handler raised an error." if code == 1011 else ", not 1000."),
            )
    return report
