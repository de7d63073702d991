"""The exercise of lesson 06b: a chat room that tells whoever joins what was said before."""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import types
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator
from typing import Any, SupportsIndex
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection

from .. import internals
from ..runtime import Client, Server, connect
from ..settings import Handler
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
#: While a newcomer joins, alice speaks, one message after the other, until the newcomer has
#: been settled in the room for CHATTER_AFTER of her messages (for TALK_MOST seconds at most).
CHATTER_AFTER = 5
TALK_MOST = GRACE
#: Who joins while alice talks: carol, then, as long as a join proves nothing (her handler
#: paused where something said could be lost and nothing was said then), the next.
NEWCOMERS = ("carol", "dave", "erin", "frank", "grace", "heidi")


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

    The race: carol joins while alice talks, one message always on its way to the room.
    The checker runs carol's handler step by step and sees each pause (``await``) it makes
    after reading ``history`` or putting her in ``members`` and before she is in ``members``
    with her handler waiting for her messages. It passes her join only if something was said
    during every such pause (a right answer makes none) and she was sent all of it, once, in
    order. When some pause went by with nothing said (the machine too busy, the pause too
    short), her join proves nothing and the next newcomer joins (dave, erin, ...); if none
    proves anything, the check is not reached: never passed on luck.
    """
    report = Report("chat_with_history")
    members: set[Any] = set()
    history = _History(maxlen=KEPT)
    handler = build(report, chat_with_history, {"members": members, "history": history})
    if handler is None:
        return report
    room = _Room(members, history)
    async with serving(room.observe(handler), "chat room with history") as (server, _):
        before = asyncio.all_tasks()
        clients: list[Client] = []
        try:
            spoke = await _story(report, server, room, clients)
        finally:
            for client in clients:
                await client.close()
        if not await until(lambda: not members):
            report.add(False, f"Once everyone had left, `members` still held {len(members)}.")
        _judge_errors(report, server, spoke)
        await check_nothing_left(report, before, "after everyone left")
    return report


async def _story(report: Report, server: Server, room: _Room, clients: list[Client]) -> bool:
    """alice talks alone, bob joins, then carol; a line for each; whether anything was said."""
    history = room.history
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
    # Newcomers join while alice keeps talking: the race the exercise warns about.
    chatter: list[str] = []
    before = [*expected, hello]
    for name in NEWCOMERS:
        newcomer = room.expect(name)
        since = len(chatter) + 1
        talking = asyncio.create_task(_keep_talking(alice, newcomer, chatter))
        try:
            clients.append(await _join(server, name))
        except BaseException:
            talking.cancel()
            raise
        await talking
        everything = [*before, *[said("alice", text) for text in chatter]]
        heard = await _heard_until(clients[-1], everything)
        for listener in clients[1:-1]:  # bob and who joined before: read what they were sent,
            await _heard_until(listener, everything, QUIET)  # or their closing would stall
        start = len(everything) - len(heard)
        whole = len(heard) >= KEPT and heard == everything[start:]
        if whole and not (newcomer.settled or newcomer.ended):
            report.skip(
                f"Whether {name} is sent everything said while she joins",
                f"{TALK_MOST:g} s after she joined, her handler was still not waiting for her "
                "messages with her in `members`",
            )
            return True
        if whole and newcomer.unheard():
            continue  # she was sent everything, but some pause of her handler went untested
        report.add(
            whole,
            f"{name}, joining while alice kept talking, was sent the last {KEPT} messages and "
            "then everything said after them: none missing, none twice, none in the middle.",
            f"{name} joined while alice said t{since} to t{len(chatter)}; she was sent "
            f"{_abridged([_text(message) for message in heard])} (the texts)"
            f"{_faults(heard, everything)}. Nobody may speak between the moment the history is "
            "taken and the moment the newcomer is in `members`: no `await` in between.",
        )
        return True
    report.skip(
        "Whether a newcomer is sent everything said while she joins",
        f"the handler of each of {', '.join(NEWCOMERS)} paused (at an `await`) after taking "
        "the history or joining `members` and before waiting for her messages, and in some "
        "pause nothing was said, so what was said then is untested; with no `await` between "
        "the history and `members.add`, she joins in one step",
    )
    return True


def _abridged(messages: list[Any], first: int = 8, last: int = 2) -> str:
    """``messages`` quoted, but for those in the middle of a long list."""
    if len(messages) <= first + last + 1:
        return quote(messages)
    left = len(messages) - first - last
    return f"{quote(messages[:first])[:-1]}, ... ({left} more) ..., {quote(messages[-last:])[1:]}"


def _faults(heard: list[Any], everything: list[Any]) -> str:
    """What is wrong with what a newcomer was sent (``heard``), in short: what she was never
    sent from the first of it on, what she was sent twice, or else that it is out of order."""
    if not heard:
        return ""
    start = everything.index(heard[0]) if heard[0] in everything else 0
    got = collections.Counter(heard)
    missing = [_text(message) for message in everything[start:] if not got[message]]
    twice = [_text(message) for message, times in got.items() if times > 1]
    faults = []
    if missing:
        faults.append(f"never sent {len(missing)}: {_abridged(missing, 5, 2)}")
    if twice:
        faults.append(f"sent twice {_abridged(twice, 5, 2)}")
    if not faults and heard != everything[-len(heard) :]:
        faults.append("sent them out of order")
    return f", so she was {'; '.join(faults)}" if faults else ""


def _text(message: Any) -> str:
    """A message of the room's by its text alone (as alice said it)."""
    try:
        return str(json.loads(message)["text"])
    except (TypeError, ValueError, KeyError):
        return repr(message)


async def _heard_until(client: Client, everything: list[Any], seconds: float = GRACE) -> list[Any]:
    """What ``client`` is sent, until the last of ``everything`` comes (or nothing more does,
    within ``seconds``)."""
    heard: list[Any] = []
    while len(heard) < len(everything) and (not heard or heard[-1] != everything[-1]):
        if (message := await next_message(client, seconds)) is None:
            break
        heard.append(message)
    return heard


async def _keep_talking(alice: Client, newcomer: _Newcomer, chatter: list[str]) -> None:
    """alice says t1, t2, ... (appended to ``chatter``), each once the room has sent the one
    before back to her, from before ``newcomer`` joins until she has been settled in the room
    for CHATTER_AFTER of them (or TALK_MOST seconds have passed): one message always on its
    way, so that the room is hearing one whenever her handler pauses."""
    loop = asyncio.get_running_loop()
    after, end = 0, loop.time() + TALK_MOST
    while after < CHATTER_AFTER and loop.time() < end:
        chatter.append(f"t{len(chatter) + 1}")
        if not await _round_trip(alice, chatter[-1]):
            return
        if newcomer.settled or newcomer.ended:
            after += 1


async def _round_trip(alice: Client, text: str) -> bool:
    """alice says ``text``; whether it came back to her (what else she is sent is skipped)."""
    await send_all(alice, text)
    echo = said("alice", text)
    for _ in range(KEPT + 3):  # a room that tells her the history again sends her a few more
        message = await next_message(alice)
        if message is None or message == echo:
            return message is not None
    return False


class _History(collections.deque[Any]):
    """The ``history`` handed to your function: a deque that lets the checker see whether the
    newcomer's handler has read it (iterated, copied, indexed); nothing else is changed."""

    def __init__(self, iterable: Iterable[Any] = (), maxlen: int | None = None) -> None:
        super().__init__(iterable, maxlen)
        self.reading: Callable[[], None] = lambda: None

    def __iter__(self) -> Iterator[Any]:
        self.reading()
        return super().__iter__()

    def __reversed__(self) -> Iterator[Any]:
        self.reading()
        return super().__reversed__()

    def __getitem__(self, index: SupportsIndex, /) -> Any:  # type: ignore[override]  # as deque
        self.reading()
        return super().__getitem__(index)

    def contents(self) -> tuple[Any, ...]:
        """What it holds, without counting as a read."""
        return tuple(super().__iter__())


class _Newcomer:
    """What the checker sees of one newcomer's handler, from its start until she is
    *settled*: in ``members``, her handler waiting for her messages.

    A pause (an ``await`` that suspends) after the handler read ``history`` or put her in
    ``members``, and before she is settled, is one where something said may be missed or
    sent out of order; the checker needs something said during each of them, else her join
    proved nothing. Pauses before both are harmless: whatever is said then is in the
    history she is sent.
    """

    def __init__(self, name: str, members: set[Any], history: _History) -> None:
        self.name, self.members, self.history = name, members, history
        self.websocket: Any = None
        self.running = self.read = self.settled = self.ended = False
        self.unheard_pauses = 0  # pauses that matter that ended with nothing said in them
        self._before: tuple[Any, ...] | None = None  # the history as the current one began

    def _read(self) -> None:
        self.read = self.read or self.running

    def start(self, websocket: Any) -> None:
        self.websocket, self.running = websocket, True
        self.history.reading = self._read

    def pause(self) -> None:
        self.running = False
        if self.settled:
            return
        joined = self.websocket in self.members
        if joined and internals.receiving(self.websocket) is not False:
            self.settled = True  # (if websockets stops telling, in `members` is taken for it)
        elif joined or self.read:
            self._before = self.history.contents()

    def resume(self) -> None:
        self.running = True
        if self._before is not None:
            self.unheard_pauses += self.history.contents() == self._before
            self._before = None

    def end(self) -> None:
        self.running, self.ended = False, True
        if self.history.reading == self._read:
            self.history.reading = lambda: None

    def unheard(self) -> int:
        """How many pauses that matter passed (or still go on) with nothing said in them."""
        going_on = self._before is not None and self.history.contents() == self._before
        return self.unheard_pauses + going_on


class _Room:
    """Follows, among the connections to your handler, the newcomer the checker awaits."""

    def __init__(self, members: set[Any], history: _History) -> None:
        self.members, self.history = members, history
        self.newcomer: _Newcomer | None = None

    def expect(self, name: str) -> _Newcomer:
        self.newcomer = _Newcomer(name, self.members, self.history)
        return self.newcomer

    def observe(self, handler: Handler) -> Handler:
        """``handler``, run step by step for the newcomer the checker awaits."""

        @functools.wraps(handler)
        async def observed(websocket: ServerConnection) -> None:
            newcomer = self.newcomer
            query = parse_qs(urlsplit(websocket.request.path if websocket.request else "").query)
            if (
                newcomer is None
                or newcomer.websocket is not None
                or query.get("name") != [newcomer.name]
            ):
                await handler(websocket)
                return
            newcomer.start(websocket)
            try:
                await _stepwise(handler(websocket), newcomer)
            finally:
                newcomer.end()

        return observed


@types.coroutine
def _stepwise(awaitable: Awaitable[Any], newcomer: _Newcomer) -> Generator[Any, Any, Any]:
    """Run ``awaitable`` as ``await`` would, telling ``newcomer`` each time it suspends and
    resumes."""
    steps = awaitable.__await__()
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        newcomer.pause()
        try:
            value, error = (yield step), None
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:  # a cancellation, or what a future raised: passed in
            value, error = None, exc
        newcomer.resume()


def _judge_errors(report: Report, server: Server, spoke: bool) -> None:
    if not spoke and not server.errors:
        report.skip("Whether no handler raised", "nothing said reached anyone")
    elif server.errors:
        first = server.errors[0]
        name = type(first.exception).__name__ if first.exception else "an error"
        report.add(False, f"{first.connection}'s handler raised {name}: {first.exception}.")
    else:
        report.add(True, "No handler raised.")
