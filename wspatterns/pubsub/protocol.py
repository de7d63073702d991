"""The pub/sub protocol: JSON requests in text frames, and the handler that serves them.

A :class:`Hub` has one interface and two backends. :class:`MemoryHub` lives in
one process; :class:`RedisHub` passes messages through Redis pub/sub, so
servers in many processes share its channels. The handler cannot tell them
apart::

    hub = MemoryHub()  # or RedisHub(broker.url), with broker = await start_redis()
    server = await serve(hub_handler(hub), max_size=MAX_MESSAGE_SIZE)

The protocol: a client sends text frames holding one JSON object each.

* ``{"action": "subscribe", "channel": "news"}`` is answered ``{"subscribed": "news"}``;
* ``{"action": "unsubscribe", "channel": "news"}`` is answered ``{"unsubscribed": "news"}``;
* ``{"action": "publish", "channel": "news", "message": "hello"}`` is not answered:
  every subscriber of ``news``, the sender too if it is one, gets
  ``{"channel": "news", "message": "hello"}``.

A hub that keeps history (:attr:`Hub.history`, a Redis Streams hub) also
numbers what it delivers, ``{"channel": "news", "message": "hello", "id": "1700000000000-0"}``,
and accepts ``"since": ID`` in a subscribe: the messages published after that
id are delivered first, then the new ones, none twice.

The answer to a subscribe comes before any message of that channel, the
replayed ones included. Once ``{"subscribed": ...}`` arrives, the
subscription is in place: whatever is published after it, from any client of
any server on the hub, is delivered. Subscribing or unsubscribing twice is
harmless. A channel name is 1 to 64 characters of ASCII letters, digits and
``-_.:``; a message is a string.

What goes wrong, and what the server does; everybody else is served as before:

* malformed JSON (arrays or objects nested deeper than Python's parser
  recurses, numbers of more than 4300 digits among it), something other than
  an object, an unknown action, a missing or invalid channel, a message that
  is not a string: the server answers ``{"error": "what was wrong and how to
  fix it"}`` and keeps serving;
* a subscribe that would give one connection more than ``max_subscriptions``
  channels (:data:`MAX_SUBSCRIPTIONS`, 100): ``{"error": ...}``, and the
  subscriptions it has stay; unsubscribe from one first. Subscribing again to
  a channel it has is not one more;
* ``max_errors`` such mistakes on one connection: closed with 1008 (policy violation);
* a binary frame: closed with 1003 (unsupported data);
* a message larger than the server's ``max_size``: websockets itself closes
  with 1009 (message too big); pass ``max_size=`` to ``serve`` (websockets'
  default is 1 MiB, :data:`MAX_MESSAGE_SIZE` suits this protocol);
* a publish or subscribe while the hub cannot reach Redis: ``{"error": ...}``
  saying so (it is not counted as the client's mistake); the hub reconnects
  by itself and subscribes again to every channel it had;
* a hub whose URL lacks the Redis's password, or has a wrong one: each publish
  and subscribe gets ``{"error": ...}`` saying that Redis refused the password
  and which URL carries it;
* a client that does not read what it is sent: up to ``outbox_size``
  messages (1000) may wait for it, ``outbox_bytes`` bytes of them at most
  (:data:`MAX_QUEUED_BYTES`, 1 MiB; a message that finds nothing waiting is
  taken however big). The message that would make one more, or one byte more,
  unsubscribes it from everything at once, then it is closed with 1008, so it
  cannot hold up the hub or fill the server's memory. A replay counts as it
  comes, before the answer to its subscribe.

When a client leaves, however it leaves, its subscriptions are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from typing import Any, NamedTuple

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from ..errors import BadRequest, HubUnavailable
from ..settings import Handler
from .hub import Hub

#: A ``max_size`` for servers of :func:`hub_handler`: 64 KiB per message.
MAX_MESSAGE_SIZE = 64 * 1024

#: How many channels one connection may be subscribed to at once: far more than a lesson
#: needs, and some 150 kB of the server's memory at most (10,000 took 14 MB).
MAX_SUBSCRIPTIONS = 100

#: How many bytes of messages may wait for one client that does not read them (the
#: default ``outbox_bytes``): 16 of MAX_MESSAGE_SIZE; 1000 of those would be 64 MB.
MAX_QUEUED_BYTES = 1024 * 1024

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# A Redis stream entry id, like 1700000000000-0.
MESSAGE_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
ACTIONS = ("subscribe", "unsubscribe", "publish")


class Request(NamedTuple):
    """One client request: ``message`` only for publish, ``since`` only for subscribe."""

    action: str
    channel: str
    message: str | None = None
    since: str | None = None


def parse_request(text: str) -> Request:
    """The request in one text frame; raises BadRequest saying what is wrong."""
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON ({exc}); send an object like {_EXAMPLE}") from None
    except RecursionError:
        raise BadRequest(f"JSON nested too deep to read; send an object like {_EXAMPLE}") from None
    except ValueError:  # what int() raises for a number longer than it converts
        raise BadRequest(
            f"a number too long to read (more than {sys.get_int_max_str_digits()} digits); "
            f"send an object like {_EXAMPLE}"
        ) from None
    if not isinstance(request, dict):
        raise BadRequest(f"expected a JSON object like {_EXAMPLE}, got {type(request).__name__}")
    action = request.get("action")
    if action not in ACTIONS:
        raise BadRequest(f"unknown action {_shown(action)}: use one of {', '.join(ACTIONS)}")
    channel = request.get("channel")
    if channel is None:
        raise BadRequest(f"{action} needs a channel, like {_EXAMPLE}")
    if not isinstance(channel, str) or not CHANNEL_NAME.fullmatch(channel):
        raise BadRequest(
            f"invalid channel {_shown(channel)}: 1 to 64 letters, digits and -_.: (like 'news')"
        )
    if action == "subscribe":
        since = request.get("since")
        if since is not None and not (isinstance(since, str) and MESSAGE_ID.fullmatch(since)):
            raise BadRequest(
                f'invalid "since" {_shown(since)}: the "id" of a message you received, '
                'like "1700000000000-0"'
            )
        return Request(action, channel, since=since)
    if action == "unsubscribe":
        return Request(action, channel)
    message = request.get("message")
    if not isinstance(message, str):
        raise BadRequest(f'publish needs a "message" that is a string, got {_shown(message)}')
    if not _is_unicode(message):  # JSON can spell half of a surrogate pair: "\\ud800"
        raise BadRequest("the message is not valid Unicode (a lone surrogate?)")
    return Request(action, channel, message)


_EXAMPLE = '{"action": "subscribe", "channel": "news"}'


def _shown(value: object) -> str:
    """``value`` as an error may show it: short, and an array or object by its kind alone
    (its repr could be as long as the frame, or nested too deep to write)."""
    if isinstance(value, list | dict):
        return "an array" if isinstance(value, list) else "an object"
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def hub_handler(
    hub: Hub,
    *,
    max_errors: int = 10,
    outbox_size: int = 1000,
    outbox_bytes: int = MAX_QUEUED_BYTES,
    max_subscriptions: int = MAX_SUBSCRIPTIONS,
) -> Handler:
    """A handler that lets its clients subscribe and publish on ``hub`` (protocol: module docs).

    A connection is closed with 1008 after ``max_errors`` bad messages, or when more than
    ``outbox_size`` messages or ``outbox_bytes`` bytes would wait for it to read them. It
    may be subscribed to ``max_subscriptions`` channels at once.
    """

    async def pubsub_handler(websocket: ServerConnection) -> None:
        outbox: asyncio.Queue[str] = asyncio.Queue()
        subscribed: set[str] = set()
        dropping: asyncio.Task[None] | None = None
        held: list[str] | None = None  # while a subscribe is under way: what arrives meanwhile
        waiting = 0  # bytes in the outbox and held: what waits for the client to read it

        def deliver(channel: str, message: str, id: str | None) -> None:
            delivery = {"channel": channel, "message": message}
            if id is not None:
                delivery["id"] = id
            text = json.dumps(delivery)  # ASCII: as many bytes as characters
            if not admitted(text):
                return
            if held is not None:
                held.append(text)
            else:
                outbox.put_nowait(text)

        def admitted(text: str) -> bool:
            """Whether ``text`` may wait for the client; if not, the client is dropped."""
            nonlocal dropping, waiting
            if dropping is not None:
                return False  # on its way out: nothing more for it
            count = outbox.qsize() + len(held or ())
            if count >= outbox_size:
                reason = f"too slow: {outbox_size} messages were waiting"
            elif count and waiting + len(text) > outbox_bytes:
                reason = f"too slow: over {outbox_bytes} bytes would be waiting"
            else:
                waiting += len(text)
                return True
            dropping = asyncio.create_task(drop_slow_client(reason))
            return False

        async def drop_slow_client(reason: str) -> None:
            await leave()  # first, so that nothing more piles up for it
            await websocket.close(CloseCode.POLICY_VIOLATION, reason)

        async def leave() -> None:
            while subscribed:
                await hub.unsubscribe(subscribed.pop(), deliver)

        async def send_outbox() -> None:
            nonlocal waiting
            while True:
                text = await outbox.get()
                waiting -= len(text)
                await websocket.send(text)

        async def answer(reply: dict[str, Any]) -> None:
            await websocket.send(json.dumps(reply))

        async def act(request: Request) -> None:
            nonlocal held
            channel = request.channel
            if request.action == "subscribe":
                subscribed.add(channel)  # before awaiting: leave() must know of it
                # The answer goes first, then what arrived meanwhile (a replay among it).
                meanwhile: list[str] = []
                held = meanwhile
                try:
                    try:
                        await hub.subscribe(channel, deliver, request.since)
                    except BaseException:
                        subscribed.discard(channel)
                        raise
                    await answer({"subscribed": channel})
                finally:
                    held = None
                    for text in meanwhile:  # admitted already, counted in waiting
                        outbox.put_nowait(text)
            elif request.action == "unsubscribe":
                subscribed.discard(channel)
                await hub.unsubscribe(channel, deliver)
                await answer({"unsubscribed": channel})
            else:
                assert request.message is not None  # parse_request() gives each publish one
                await hub.publish(channel, request.message)

        sending = asyncio.create_task(send_outbox())
        errors = 0
        try:
            async for frame in websocket:
                if isinstance(frame, bytes):
                    reason = "send text frames holding JSON objects"
                    await websocket.close(CloseCode.UNSUPPORTED_DATA, reason)
                    return
                try:
                    request = parse_request(frame)
                    if request.since is not None and not hub.history:
                        raise BadRequest(
                            f"this server keeps no history ({type(hub).__name__}): "
                            'subscribe without "since"'
                        )
                    if (
                        request.action == "subscribe"
                        and request.channel not in subscribed
                        and len(subscribed) >= max_subscriptions
                    ):
                        raise BadRequest(
                            f"{max_subscriptions} subscriptions already, as many as a "
                            "connection may have: unsubscribe from one first"
                        )
                except BadRequest as exc:
                    errors += 1
                    await answer({"error": str(exc)})
                    if errors >= max_errors:
                        reason = f"{errors} bad messages; see the errors sent before"
                        await websocket.close(CloseCode.POLICY_VIOLATION, reason)
                        return
                    continue
                try:
                    await act(request)
                except HubUnavailable as exc:  # not the client's mistake: not counted
                    await answer({"error": str(exc)})
        except ConnectionClosed:
            pass  # the client left, or websockets closed it (1009 for a message too big)
        finally:
            await leave()
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            if dropping is not None:
                with contextlib.suppress(Exception):
                    await dropping

    return pubsub_handler
