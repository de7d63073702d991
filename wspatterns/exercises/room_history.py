"""The exercise of lesson 06b: a chat room that tells whoever joins what was said before."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from typing import Any

from ..runtime import Client, Server, connect
from .harness import (
    CLIENT_TIMEOUT,
    GRACE,
    build,
    check_nothing_left,
    next_message,
    quote,
    receive,
    send_all,
    serving,
    until,
)
from .report import Report

#: How many messages the room remembers: the ``maxlen`` of the ``history`` passed in.
KEPT = 5
# How long to listen for a message that should not come.
QUIET = GRACE / 5
#: While carol joins, alice speaks every PACE seconds, until carol has been a member for
#: CHATTER_AFTER of her messages (at most CHATTER_MOST in all).
PACE = 0.002
CHATTER_AFTER = 5
CHATTER_MOST = 500


def said(name: str, text: str) -> str:
    """A chat message as the room sends it (the protocol of lesson 06)."""
    return json.dumps({"from": name, "text": text})


async def _join(server: Server, name: str) -> Client:
    return await connect(f"{server.url}?name={name}", name=name, timeout=CLIENT_TIMEOUT)


async def check_room_history(chat_with_history: Callable[..., Any]) -> Report:
    """Check the exercise of lesson 06b: a chat room with a memory.

    ``chat_with_history(members, history)`` must return a handler that names its
    client from the URL's ``?name=``, sends every message a member says to every
    member, the sender too, as ``{"from": NAME, "text": TEXT}``, and appends it to
    ``history`` (a deque that keeps the last few); and that sends whoever joins the
    messages of ``history``, oldest first, before anything said after they joined.
    """
    report = Report("chat_with_history")
    members: set[Any] = set()
    history: collections.deque[Any] = collections.deque(maxlen=KEPT)
    handler = build(report, chat_with_history, {"members": members, "history": history})
    if handler is None:
        return report
    async with serving(handler, "chat room with history") as (server, _):
        before = asyncio.all_tasks()
        clients: list[Client] = []
        try:
            spoke = await _story(report, server, members, history, clients)
        finally:
            for client in clients:
                await client.close()
        if not await until(lambda: not members):
            report.add(False, f"Once everyone had left, `members` still held {len(members)}.")
        _judge_errors(report, server, spoke)
        await check_nothing_left(report, before, "after everyone left")
    return report


async def _story(
    report: Report, server: Server, members: set[Any], history: Any, clients: list[Client]
) -> bool:
    """alice talks alone, bob joins, then carol; a line for each; whether anything was said."""
    alice = await _join(server, "alice")
    clients.append(alice)
    first = await receive(alice, QUIET)
    texts = [f"m{number}" for number in range(1, KEPT + 3)]  # more than the room keeps
    echoes = []
    for text in texts:
        await send_all(alice, text)
        echoes.append(await next_message(alice))
    expected = [said("alice", text) for text in texts]
    if not report.add(
        echoes == expected,
        f"Each of alice's {len(texts)} messages came back to her as "
        '{"from": "alice", "text": ...}.',
        f"alice said {', '.join(texts)} and was sent back {quote(echoes)}, not "
        f"{quote(expected[:2])}, ... : send each message to every member, the sender too.",
    ):
        if not any(echoes):
            report.skip("Whether an empty room sends nothing", "nothing said reached anyone")
            report.skip("Whether `history` kept the last messages", "nothing said reached anyone")
            report.skip("Whether whoever joins gets the history", "nothing said reached anyone")
            return False
    report.add(
        not first,
        "alice, first in an empty room, was sent nothing on joining.",
        f"alice joined an empty room and was sent {quote(first)}: there was nothing to tell.",
    )
    kept = list(history)
    report.add(
        kept == expected[-KEPT:],
        f"`history` held the last {KEPT} messages, oldest first, as they were sent.",
        f"`history` held {quote(kept)}: append each message, as sent, to `history` "
        f"(it keeps the last {KEPT} by itself).",
    )

    bob = await _join(server, "bob")
    clients.append(bob)
    got = await receive(bob, QUIET * 2, most=len(kept) + 1)
    if not kept:
        report.skip("Whether bob was sent the history on joining", "`history` stayed empty")
        return True
    report.add(
        got == kept,
        f"bob, joining, was sent the {len(kept)} messages of `history`, oldest first.",
        f"bob, joining, was sent {quote(got)} instead of `history`'s {len(kept)} messages, "
        "oldest first: send them to him before he is in `members`.",
    )
    again = await receive(alice, QUIET)
    report.add(
        not again,
        "alice was not sent the history again when bob joined.",
        f"When bob joined, alice was sent {quote(again)}: the history is for the newcomer only.",
    )

    await send_all(bob, "hello")
    heard = [await next_message(alice), await next_message(bob)]
    hello = said("bob", "hello")
    report.add(
        heard == [hello, hello],
        "What bob said once he was in the room reached alice and him.",
        f"bob said 'hello'; alice and bob were sent {quote(heard)} instead of {hello}.",
    )
    # carol joins while alice keeps talking: the race the exercise warns about.
    talking = asyncio.create_task(_keep_talking(alice, members))
    carol = await _join(server, "carol")
    clients.append(carol)
    chatter = await talking
    everything = [*expected, hello, *[said("alice", text) for text in chatter]]
    carol_heard: list[Any] = []  # until the last thing said arrives (or nothing more does)
    last = everything[-1]
    while len(carol_heard) < len(everything) and (not carol_heard or carol_heard[-1] != last):
        if (message := await next_message(carol)) is None:
            break
        carol_heard.append(message)
    start = len(everything) - len(carol_heard)
    report.add(
        len(carol_heard) >= KEPT and carol_heard == everything[start:],
        f"carol, joining while alice kept talking, was sent the last {KEPT} messages and "
        "then everything said after them: none missing, none twice, none in the middle.",
        f"carol joined while alice said t1 to t{len(chatter)}; she was sent {quote(carol_heard)}. "
        "Nobody may speak between the moment the history is taken and the moment the "
        "newcomer is in `members`: no `await` in between.",
    )
    return True


async def _keep_talking(client: Client, members: set[Any]) -> list[str]:
    """Say t1, t2, ... a few milliseconds apart, until a newcomer has been in ``members`` for
    a few of them (or CHATTER_MOST were said): a conversation going on while someone joins."""
    present, said_since = len(members), 0
    texts: list[str] = []
    while said_since < CHATTER_AFTER and len(texts) < CHATTER_MOST:
        texts.append(f"t{len(texts) + 1}")
        await send_all(client, texts[-1])
        await asyncio.sleep(PACE)  # a stimulus: the talk goes on while someone joins
        if len(members) > present:
            said_since += 1
    return texts


def _judge_errors(report: Report, server: Server, spoke: bool) -> None:
    if not spoke and not server.errors:
        report.skip("Whether no handler raised", "nothing said reached anyone")
    elif server.errors:
        first = server.errors[0]
        name = type(first.exception).__name__ if first.exception else "an error"
        report.add(False, f"{first.connection}'s handler raised {name}: {first.exception}.")
    else:
        report.add(True, "No handler raised.")
