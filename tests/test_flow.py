import asyncio
import base64
import hashlib

import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.asyncio.server import broadcast
from websockets.frames import Frame, Opcode

from wspatterns import Flow, connect, serve, serve_in_thread
from wspatterns.flow import merge
from wspatterns.patterns import registration

from .utils import MS, crashed_server, echo


def kinds(flow: Flow, at: str | None = None) -> list[tuple]:
    """(kind, sender, at) for each event, optionally from one end only."""
    return [(e.kind, e.sender, e.at) for e in flow.events if at is None or e.at == at]


async def test_each_end_records_open_messages_close_and_end():
    server = await serve(echo)
    async with connect(server) as websocket:
        await websocket.send("hello")
        assert await websocket.recv() == "hello"
    await asyncio.sleep(10 * MS)
    assert kinds(server.flow, "client") == [
        ("open", None, "client"),
        ("message", "client", "client"),
        ("message", "server", "client"),
        ("close", "client", "client"),
        ("close", "server", "client"),
        ("end", "client", "client"),  # for "end", sender says who closed first
    ]
    assert [kind for kind, _, _ in kinds(server.flow, "server")] == [
        "open", "message", "message", "close", "close", "end"
    ]  # fmt: skip
    [open_event] = [e for e in server.flow.events if e.kind == "open" and e.at == "server"]
    assert (open_event.client, open_event.server, open_event.detail) == ("client-1", "echo", "/")


async def test_messages_carry_type_size_preview_and_order():
    server = await serve(echo)
    async with connect(server) as websocket:
        for message in ["text", b"\x00\xffbinary", "", "x" * 1000]:
            await websocket.send(message)
            await websocket.recv()
    sent = [e for e in server.flow.events if e.kind == "message" and e.at == e.sender == "client"]
    assert [(e.type, e.size, e.index) for e in sent] == [
        ("text", 4, 0), ("binary", 8, 1), ("text", 0, 2), ("text", 1000, 3)
    ]  # fmt: skip
    assert sent[0].head == b"text"
    assert len(sent[3].head) == 48  # a preview, not the whole message
    seqs = [e.seq for e in server.flow.events]
    assert seqs == sorted(seqs) == list(range(len(seqs)))
    times = [e.time for e in server.flow.events]
    assert times == sorted(times)


async def test_fragmented_messages_are_recorded_once_whole():
    server = await serve(echo)
    async with connect(server) as websocket:
        await websocket.send(["frag", "ment"])
        assert await websocket.recv() == "fragment"
    sizes = [e.size for e in server.flow.events if e.kind == "message"]
    assert sizes == [8, 8, 8, 8]


async def test_messages_are_recorded_uncompressed_at_both_ends():
    server = await serve(echo)  # websockets compresses by default (permessage-deflate)
    async with connect(server) as websocket:
        await websocket.send("x" * 1000)  # compresses to a few bytes
        await websocket.recv()
        [recorder, deflate] = websocket.protocol.extensions
        assert recorder is websocket.recorder and type(deflate).__name__ == "PerMessageDeflate"
    sizes = [(e.at, e.sender, e.size) for e in server.flow.events if e.kind == "message"]
    assert sorted(sizes) == [
        ("client", "client", 1000), ("client", "server", 1000),
        ("server", "client", 1000), ("server", "server", 1000),
    ]  # fmt: skip


async def test_recording_replaces_no_method_of_websockets():
    # Methods replaced on a protocol object slowed every frame websockets handled;
    # the handshake hooks must remove themselves once the connection is open.
    server = await serve(echo)
    async with connect(server) as websocket:
        await websocket.send("hello")
        await websocket.recv()
        [connection] = server.connections
        for protocol in (websocket.protocol, connection.protocol):
            cls = type(protocol)
            assert [name for name in vars(protocol) if callable(getattr(cls, name, 0))] == []


async def test_frames_in_the_same_packet_as_the_handshake_response_are_recorded():
    # A hand-written server answers the handshake and sends a message in one write,
    # so the client parses both from a single read.
    async def answer(reader, writer):
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            b"\x81\x05early"  # a text frame, "early", right behind the response
        )
        await writer.drain()
        await reader.read()  # until the client leaves
        writer.close()

    tcp = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        flow = Flow()
        url = f"ws://127.0.0.1:{tcp.sockets[0].getsockname()[1]}/"
        async with connect(url, flow=flow, compression=None) as websocket:
            assert await websocket.recv() == "early"
        received = [(e.kind, e.sender, e.head) for e in flow.events if e.kind != "close"]
        assert received[:2] == [("open", None, b""), ("message", "server", b"early")]
    finally:
        tcp.close()


GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's fixed key suffix


async def test_broadcast_frames_are_recorded():
    room = set()
    server = await serve(registration(room))
    clients = [await connect(server) for _ in range(3)]
    while len(room) < 3:
        await asyncio.sleep(MS)
    broadcast(room, "news")  # writes frames without calling send()
    assert [await client.recv() for client in clients] == ["news"] * 3
    sent = {e.client for e in server.flow.events if e.kind == "message" and e.at == "server"}
    received = {e.client for e in server.flow.events if e.kind == "message" and e.at == "client"}
    assert sent == received == {"client-1", "client-2", "client-3"}


async def test_a_client_the_kit_did_not_make_is_recorded_by_the_server():
    server = await serve(echo)
    async with raw_connect(server.url, proxy=None) as websocket:
        await websocket.send("plain")
        assert await websocket.recv() == "plain"
    await asyncio.sleep(10 * MS)
    assert {e.at for e in server.flow.events} == {"server"}
    assert [e.kind for e in server.flow.events] == [
        "open", "message", "message", "close", "close", "end"
    ]  # fmt: skip
    assert {e.client for e in server.flow.events} == {"client-1"}


async def test_handler_errors_and_lost_connections_are_recorded(capsys):
    server = await crashed_server(ValueError("bad input"))
    [error] = [e for e in server.flow.events if e.kind == "error"]
    assert error.detail == "ValueError: bad input"
    codes = {e.code for e in server.flow.events if e.kind == "end"}
    assert codes == {1011}
    capsys.readouterr()


async def test_names_connections_for_people():
    server = await serve(echo)
    async with connect(server), connect(server, name="alice"):
        pass
    assert [e.client for e in server.flow.events if e.kind == "open" and e.at == "server"] == [
        "client-1", "alice"
    ]  # fmt: skip


async def test_one_flow_shared_by_several_servers_and_clients():
    flow = Flow()
    first = await serve(echo, name="first", flow=flow)
    second = await serve(echo, name="second", flow=flow)
    for server in (first, second):
        async with connect(server) as websocket:
            await websocket.send(server.name)
            await websocket.recv()
    assert first.flow is second.flow is flow
    assert {e.server for e in flow.events} == {"first", "second"}
    assert len({e.connection for e in flow.events}) == 2


async def test_a_client_can_record_into_its_own_flow():
    server = await serve(echo)
    mine = Flow()
    async with connect(server, flow=mine) as websocket:
        await websocket.send("x")
        await websocket.recv()
    assert {e.at for e in mine.events} == {"client"}
    assert {e.at for e in server.flow.events} == {"server"}


def test_a_thread_server_records_too():
    from websockets.sync.client import connect as sync_connect

    server = serve_in_thread(echo)
    with sync_connect(server.url, proxy=None) as websocket:
        websocket.send("from a thread")
        websocket.recv(timeout=1)
    server.stop_blocking()
    assert [e.kind for e in server.flow.events][:3] == ["open", "message", "message"]


# The cap


def test_cap_bounds_memory_and_counts_what_it_drops():
    flow = Flow(cap=10)
    end = _Fake(flow)
    for number in range(25):
        end.send(f"m{number}")
    assert len(flow) == 10
    assert flow.recorded == 25
    assert flow.dropped == 15
    events = flow.events
    assert [e.seq for e in events] == list(range(15, 25))
    assert events[0].head == b"m15"
    assert events[0].index == 15  # indexes count from the start, drops or not
    [totals] = flow.totals
    assert totals.sent == 25  # totals stay exact


@pytest.mark.parametrize("cap", [0, -1, 1.5, True, "10"])
def test_a_cap_must_be_a_positive_whole_number(cap):
    with pytest.raises(ValueError, match="cap must be a positive number"):
        Flow(cap=cap)


def test_clear_forgets_events():
    flow = Flow()
    end = _Fake(flow)
    end.send("x")
    flow.clear()
    assert len(flow) == flow.recorded == flow.dropped == 0


class _Fake:
    """One recording end without a network: for counting, not for behaviour."""

    def __init__(self, flow: Flow) -> None:
        self.recorder = flow.end(flow.new_connection(), "server", "client-1", "client")

    def send(self, text: str) -> None:
        self.recorder.encode(Frame(Opcode.TEXT, text.encode()))


async def test_a_handshake_request_split_over_packets_is_still_recorded():
    server = await serve(echo)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = (
        b"GET /split HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    for start in range(0, len(request), 20):  # twenty bytes at a time
        writer.write(request[start : start + 20])
        await writer.drain()
        await asyncio.sleep(MS)
    assert (await reader.readline()).startswith(b"HTTP/1.1 101")
    writer.close()
    await asyncio.sleep(20 * MS)
    opens = [e for e in server.flow.events if e.kind == "open"]
    assert [(e.client, e.detail) for e in opens] == [("client-1", "/split")]


# Flows from several processes, merged


async def test_merge_joins_the_two_ends_of_a_connection_recorded_in_two_flows():
    here = Flow()
    there = Flow(token=here.token)  # as a worker process started from here would have
    async with serve(echo, name="far", flow=there) as server:
        async with connect(server.url, name="alice", flow=here) as alice:
            await alice.send("ping")
            await alice.recv()
        async with raw_connect(server.url) as stranger:
            await stranger.send("who?")
            await stranger.recv()
    # There, the stranger's connection was numbered apart from alice's (1): counting down.
    assert {event.connection for event in there.events if event.client != "alice"} == {-1}
    merged = merge(here, there.export())
    assert len(merged) == len(here) + len(there)
    times = [event.time for event in merged.events]
    assert times == sorted(times)
    alice_events = [event for event in merged.events if event.client == "alice"]
    assert {event.connection for event in alice_events} == {1}
    assert {event.server for event in alice_events} == {"far"}  # the server end knows its name
    assert {event.at for event in alice_events} == {"client", "server"}
    stranger_events = [event for event in merged.events if event.client != "alice"]
    assert {event.connection for event in stranger_events} == {2}  # numbered after alice's
    assert sum(end.sent for end in merged.totals) == 3  # alice: ping; far: two echoes
    assert repr(merged.sequence()).count("alice → server: “ping”") == 1  # one arrow, two records


def test_merge_numbers_separate_flows_apart():
    first, second = Flow(), Flow()
    for flow, name in ((first, "a"), (second, "b")):
        end = flow.end(flow.new_connection(), "server", name, "client")
        end.add("open", detail="/")
    merged = merge(first, second)
    assert sorted((event.client, event.connection) for event in merged.events) == [
        ("a", 1),
        ("b", 2),
    ]
    assert merged.new_connection() == 3
