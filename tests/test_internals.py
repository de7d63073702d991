"""The gate for websockets internals: what the kit does without them, and when.

The kit decides at import whether to use the internals that tell ``broadcast()``
apart (``wspatterns.internals.BROADCAST_INTERNALS``), so the gate closed is tried
in a fresh interpreter, as a learner's script would run.
"""

from __future__ import annotations

import json

import pytest

from tests.utils import run_python
from wspatterns import internals
from wspatterns.errors import InvalidArgumentError

# A chat room on a kit server, told by WSPATTERNS_INTERNALS (argv 1) what to do, on a
# websockets that says it is argv 2 (empty: the one installed); prints what it saw as JSON.
CHAT = """
import asyncio, json, os, sys

switch, pretend = sys.argv[1:3]
os.environ["WSPATTERNS_INTERNALS"] = switch
if pretend:
    import websockets.version

    websockets.version.version = pretend

from websockets.asyncio.server import broadcast
from websockets.protocol import State

from wspatterns import connect, internals, serve
from wspatterns.waiting import wait_until


async def chat(websocket):
    async for message in websocket:
        if message == "boom":
            raise ValueError("boom")
        await websocket.send(message)


async def main():
    server = await serve(chat)
    alice = await connect(server, name="alice")
    bob = await connect(server, name="bob")
    await alice.send("hello")
    heard = [await alice.recv()]
    room = set(server.connections)
    broadcast(room, "to all")
    heard += [await alice.recv(), await bob.recv()]
    await bob.close()
    await wait_until(lambda: len(server.connections) == 1)
    broadcast(room, "anyone?")  # skips bob's closed connection
    heard.append(await alice.recv())
    await alice.send("boom")
    await alice.wait_closed()
    flow = server.flow
    await wait_until(lambda: sum(e.kind == "end" for e in flow.events) == len(flow.totals))
    await server.stop()
    print(json.dumps({
        "on": internals.BROADCAST_INTERNALS,
        "heard": heard,
        "events": [
            [e.kind, e.client, e.at, e.sender, e.head.decode(), e.code, e.broadcast is not None]
            for e in flow.events
        ],
        "errors": [report.summary for report in server.errors],
        "sequence": str(flow.sequence()),
    }))


asyncio.run(main())
"""


def chat(switch: str, pretend: str = "") -> tuple[dict, list[str]]:
    """What the chat room saw, and the lines it wrote to stderr."""
    done = run_python(CHAT, switch, pretend)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr.splitlines()


def messages(seen: dict, at: str = "server") -> list[tuple[str, str, str]]:
    """(client, sender, text) of each message recorded at ``at``, in order."""
    return [
        (client, sender, head)
        for kind, client, where, sender, head, _, _ in seen["events"]
        if kind == "message" and where == at
    ]


def without_handler_error(lines: list[str]) -> list[str]:
    """``lines`` but the report of the handler's ValueError (printed on stderr)."""
    start = next(i for i, line in enumerate(lines) if "raised ValueError" in line)
    end = next(i for i, line in enumerate(lines) if line == "ValueError: boom")
    return lines[:start] + lines[end + 1 :]


def test_with_the_gate_closed_everything_but_broadcast_is_recorded_and_that_is_said_once():
    seen, stderr = chat("off")
    assert seen["on"] is False
    # What is off is said once, on one line, with the version.
    [warning] = without_handler_error(stderr)
    assert "UncheckedWebsocketsWarning: WSPATTERNS_INTERNALS=off (websockets 17.4): " in warning
    assert warning.endswith(
        "broadcast() is recorded as one message on each connection it writes to, "
        "and the connections it skips are not recorded."
    )
    # Server and clients talk, and the flow has every opening, message, close and end.
    assert seen["heard"] == ["hello", "to all", "to all", "anyone?"]
    kinds = [kind for kind, *_ in seen["events"]]
    assert kinds.count("open") == 4  # each end of two connections
    assert kinds.count("close") == 8 and kinds.count("end") == 4
    sent = messages(seen)
    assert sent[:2] == [("alice", "client", "hello"), ("alice", "server", "hello")]
    # broadcast(): one message on each connection written to (in the set's order), none a
    # broadcast, and no skip: those take the internals.
    assert sorted(sent[2:4]) == [("alice", "server", "to all"), ("bob", "server", "to all")]
    assert sent[4:] == [("alice", "server", "anyone?"), ("alice", "client", "boom")]
    assert not any(is_broadcast for *_, is_broadcast in seen["events"])
    assert "skipped" not in kinds
    # The handler's error is shown once, recorded, and the connection closed with 1011.
    assert seen["errors"] == [
        "handler 'chat' of server 'chat' raised ValueError for alice; "
        "websockets closed that connection with code 1011."
    ]
    assert stderr.count("ValueError: boom") == 1
    assert ["error", "alice", "server", "server", "", None, False] in seen["events"]
    assert "[⚠ handler raised ValueError: boom]" in seen["sequence"]
    assert "server ⇢ alice: close 1011 (internal error)" in seen["sequence"]


def test_with_the_gate_open_the_same_room_records_broadcasts_and_skips():
    seen, stderr = chat("")
    assert seen["on"] is True
    assert "UncheckedWebsocketsWarning" not in "\n".join(stderr)
    assert seen["heard"] == ["hello", "to all", "to all", "anyone?"]
    assert "server → alice, bob: “to all” · 6 B" in seen["sequence"]
    assert "[broadcast() skipped bob (closed)]" in seen["sequence"]


def test_an_unknown_websockets_closes_the_gate_and_says_which():
    seen, stderr = chat("", "18.0")
    assert seen["on"] is False
    [warning] = without_handler_error(stderr)
    assert (
        "UncheckedWebsocketsWarning: websockets 18.0 is not a version the kit was checked "
        "with (17.4): broadcast() is recorded as one message on each connection"
    ) in warning
    assert "broadcast() skipped" not in seen["sequence"]
    assert seen["heard"] == ["hello", "to all", "to all", "anyone?"]


def test_the_switch_decides_against_the_version():
    assert internals.why_off("17.4", "") is None
    assert internals.why_off("17.4.1", "") is None  # a bug-fix release of a checked one
    assert internals.why_off("18.0", "on") is None  # trying a new websockets on purpose
    assert internals.why_off("17.4", "off") == "WSPATTERNS_INTERNALS=off (websockets 17.4)"
    assert internals.why_off("17.5", "").startswith("websockets 17.5 is not a version")
    assert internals.why_off("18.0rc1", "").startswith("websockets 18.0rc1 is not")
    with pytest.raises(InvalidArgumentError, match="WSPATTERNS_INTERNALS='no': it must be on"):
        internals.why_off("17.4", "no")


def test_the_installed_websockets_is_one_the_internals_were_checked_with():
    # Upgrading websockets makes this fail: check internals.py against it, then add it.
    assert internals.why_off(internals.INSTALLED, "") is None
    assert internals.BROADCAST_INTERNALS
