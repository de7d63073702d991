"""The exercise of lesson 04b: a chat room that announces who comes and goes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from ..runtime import Client, Server
from .harness import (
    GRACE,
    build,
    check_nothing_left,
    next_message,
    open_client,
    quote,
    receive,
    send_all,
    serving,
    until,
)
from .report import Report

# How long to listen for a message that should not come.
QUIET = GRACE / 5


class _Room:
    """The ``connected`` set your handler keeps, and the most connections it was seen to hold."""

    def __init__(self) -> None:
        self.connected: set[Any] = set()
        self.most = 0

    def holds(self) -> int:
        """How many connections ``connected`` holds now (remembered, for :attr:`most`)."""
        self.most = max(self.most, len(self.connected))
        return len(self.connected)

    async def comes_to(self, count: int) -> bool:
        """Wait up to GRACE for ``connected`` to hold ``count`` connections; whether it did."""
        return await until(lambda: self.holds() == count)


class _Abandoned(Exception):
    """The rest of a check cannot run: the handler already ended every connection."""


async def check_chat_room(chat_room: Callable[..., Any]) -> Report:
    """Check the exercise of lesson 04b: a chat room that announces who comes and goes.

    ``chat_room(connected)`` must return a handler that reads the client's name
    (its first message), tells everyone else ``"NAME joined"``, relays each
    later message as ``"NAME: message"`` to everyone else, and when the client
    leaves, however it leaves, removes it from ``connected`` and tells the others
    ``"NAME left"``, without sending anything to connections that are gone.
    """
    report = Report("chat_room")
    room = _Room()
    handler = build(report, chat_room, {"connected": room.connected})
    if handler is None:
        return report
    async with serving(handler, "chat room") as (server, _):
        before = asyncio.all_tasks()
        alice = await open_client(server, "alice")
        bob = await open_client(server, "bob")
        abandoned = False
        try:
            await _story(report, room, server, alice, bob)
        except _Abandoned:
            abandoned = True
        finally:
            for client in (alice, bob):
                await client.close()
        await until(lambda: not room.holds())
        _judge_errors(report, room, server, abandoned)
        if room.connected:
            report.add(
                False,
                f"Once everyone had left, `connected` still held {len(room.connected)} "
                "connection(s).",
            )
        elif room.most:
            report.add(True, "Once everyone had left, `connected` was empty.")
        else:
            report.skip(
                "Whether `connected` was empty once everyone had left",
                "nothing was ever added to `connected`",
            )
        await check_nothing_left(
            report,
            before,
            "after everyone left",
            "your handler had already closed the connections" if abandoned else None,
        )
    return report


async def _story(report: Report, room: _Room, server: Server, alice: Client, bob: Client) -> None:
    """alice and bob join and talk, carol's connection drops, bob leaves; a line for each."""
    await send_all(alice, "alice")
    await until(lambda: room.holds() >= 1)
    await send_all(bob, "bob")
    told = await next_message(alice)
    if alice.close_code is not None or bob.close_code is not None:
        report.add(
            False,
            "Your handler closed the connections as soon as the clients said their "
            "names: it should serve each client until it leaves.",
        )
        raise _Abandoned
    report.add(
        told == "bob joined",
        "When bob joined, alice was told 'bob joined'.",
        f"When bob joined, alice was told {told!r} instead of 'bob joined'.",
    )
    echoed = await receive(bob, QUIET)
    if echoed:
        report.add(False, f"bob received {quote(echoed)}: tell everyone *else* who joined.")
    elif told is None:
        report.skip("Whether bob was told about himself", "nobody was told that bob joined")
    else:
        report.add(True, "bob was not told about himself.")
    report.add(
        await room.comes_to(2),
        "Both connections were in `connected` while they were there.",
        f"With alice and bob connected, `connected` held {room.holds()} "
        "connection(s) instead of 2.",
    )

    await send_all(bob, "hi")
    relayed = await next_message(alice)
    heard_back = await receive(bob, QUIET)
    report.add(
        relayed == "bob: hi" and not heard_back,
        "bob's message reached alice as 'bob: hi', and not bob himself.",
        f"bob sent 'hi'; alice received {relayed!r}"
        + (" instead of 'bob: hi'" if relayed != "bob: hi" else "")
        + (f", and bob heard {quote(heard_back)} back." if heard_back else "."),
    )

    # carol's connection drops without a closing handshake.
    carol = await open_client(server, "carol")
    await send_all(carol, "carol")
    await next_message(alice), await next_message(bob)  # "carol joined"
    await room.comes_to(3)
    carol.transport.abort()
    gone = await room.comes_to(2)
    heard = [await next_message(alice), await next_message(bob)]
    if gone and heard == ["carol left", "carol left"]:
        report.add(True, "When carol's connection dropped, she was unregistered and "
                         "alice and bob were told 'carol left'.")  # fmt: skip
    else:
        report.add(
            False,
            f"After carol's connection dropped, `connected` held {room.holds()} "
            f"connection(s) and alice and bob heard {quote(heard)}: unregister and "
            "announce in a `finally:` block, so it happens however the client leaves.",
        )

    await bob.close()
    told = await next_message(alice)
    await room.comes_to(1)
    report.add(
        told == "bob left" and room.holds() == 1,
        "When bob left, alice was told 'bob left' and bob was unregistered.",
        f"When bob left, alice was told {told!r} and `connected` held "
        f"{room.holds()} connection(s).",
    )
    await send_all(alice, "anyone?")
    await receive(alice, QUIET)


def _judge_errors(report: Report, room: _Room, server: Server, abandoned: bool) -> None:
    """Add a line on what the handlers raised while people came and went."""
    # A dropped connection ends its own handler with ConnectionClosedError: that one is
    # expected. Anything else went wrong while sending or announcing.
    problems = [
        error
        for error in server.errors
        if error.exception is not None
        and not (error.connection == "carol" and isinstance(error.exception, ConnectionClosed))
    ]
    if problems:
        first = problems[0]
        hint = (
            " It sent to a connection that had already left: remove the connection "
            "from `connected` before telling the others (or use broadcast(), which "
            "skips connections that are not open)."
            if isinstance(first.exception, ConnectionClosed)
            else ""
        )
        report.add(
            False,
            f"{first.connection}'s handler raised {type(first.exception).__name__}: "
            f"{first.exception}.{hint}",
        )
    elif abandoned or not room.most:
        report.skip(
            "Whether nothing was sent to a connection that had left",
            "your handler had already closed the connections"
            if abandoned
            else "nothing was ever added to `connected`",
        )
    elif any(error.connection == "carol" for error in server.errors):
        report.add(
            True,
            "No handler raised but carol's, ended by her dropped connection (as it should "
            "be): nothing was sent to a connection that had left.",
        )
    else:
        report.add(True, "No handler raised: nothing was sent to a connection that had left.")
