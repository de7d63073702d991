import asyncio
import base64
import contextlib
import gc
import hashlib
import os
import tracemalloc
import weakref

import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.asyncio.server import broadcast
from websockets.asyncio.server import serve as raw_serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import Close, Frame, Opcode

import wspatterns.flow
from wspatterns import Flow, connect, serve, serve_in_thread
from wspatterns.flow import FANOUT, Broadcast, merge
from wspatterns.patterns import registration

from .utils import MS, crashed_server, echo, ended, eventually, every_view


def kinds(flow: Flow, at: str | None = None) -> list[tuple]:
    """(kind, sender, at) for each event, optionally from one end only."""
    return [(e.kind, e.sender, e.at) for e in flow.events if at is None or e.at == at]


async def test_each_end_records_open_messages_close_and_end():
    server = await serve(echo)
    async with connect(server) as websocket:
        await websocket.send("hello")
        assert await websocket.recv() == "hello"
    await ended(server.flow)
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
    await eventually(lambda: len(room) == 3, "three clients in the room")
    broadcast(room, "news")  # writes frames without calling send()
    assert [await client.recv() for client in clients] == ["news"] * 3
    sent = {e.client for e in server.flow.events if e.kind == "message" and e.at == "server"}
    received = {e.client for e in server.flow.events if e.kind == "message" and e.at == "client"}
    assert sent == received == {"client-1", "client-2", "client-3"}
    for client in clients:
        await client.close()


async def test_a_client_the_kit_did_not_make_is_recorded_by_the_server():
    server = await serve(echo)
    async with raw_connect(server.url, proxy=None) as websocket:
        await websocket.send("plain")
        assert await websocket.recv() == "plain"
    await ended(server.flow)
    assert {e.at for e in server.flow.events} == {"server"}
    assert [e.kind for e in server.flow.events] == [
        "open", "message", "message", "close", "close", "end"
    ]  # fmt: skip
    assert {e.client for e in server.flow.events} == {"client-1"}


# A text frame that is not UTF-8


async def quiet_echo(websocket):
    """The echo handler, ending quietly however its connection ends."""
    try:
        async for message in websocket:
            await websocket.send(message)
    except ConnectionClosed:
        pass


def received_by(flow: Flow, at: str) -> list[bytes]:
    """The head of each message the ``at`` end recorded receiving."""
    return [e.head for e in flow.events if e.kind == "message" and e.at == at != e.sender]


async def test_invalid_utf8_is_recorded_as_a_close_with_1007_not_as_a_message():
    server = await serve(quiet_echo)
    async with connect(server) as websocket:
        await websocket.send("good")
        assert await websocket.recv() == "good"
        await websocket.send(b"\xff\xfe not UTF-8", text=True)  # websockets sends it unchecked
        await websocket.send("after")  # here before the server reads the invalid one
        with pytest.raises(ConnectionClosedError) as closed:
            await websocket.recv()
    assert closed.value.rcvd.code == 1007
    await ended(server.flow)
    flow = server.flow
    assert received_by(flow, "server") == [b"good"]  # websockets delivers nothing past it
    assert flow.server_end(1).received == 1
    [close] = [e for e in flow.events if e.kind == "close" and e.at == e.sender == "server"]
    assert (close.code, close.detail) == (1007, "invalid start byte at position 0")
    sent = [e.head for e in flow.events if e.kind == "message" and e.at == e.sender == "client"]
    assert sent == [b"good", b"\xff\xfe not UTF-8", b"after"]  # what the client did send
    stats = flow.stats().loc[1]
    assert stats["latency pairs"] == 2  # "good", each way: nothing else was received
    assert stats["client→server"] == 3  # as the client counted what it sent
    assert flow.dropped == 0 and len(flow) == flow.recorded
    every_view(flow)


async def test_invalid_utf8_from_a_plain_client_is_no_message_either():
    server = await serve(quiet_echo)
    async with raw_connect(server.url, proxy=None) as websocket:
        await websocket.send(b"caf\xe9", text=True)  # latin-1, not UTF-8
        with pytest.raises(ConnectionClosedError):
            await websocket.recv()
    await ended(server.flow)
    assert received_by(server.flow, "server") == []
    assert [(e.kind, e.sender, e.code) for e in server.flow.events if e.kind == "close"][0] == (
        "close", "server", 1007
    )  # fmt: skip


async def test_invalid_utf8_a_kit_client_receives_is_no_message():
    async def sends_latin1(websocket):
        await websocket.send(b"caf\xe9", text=True)
        await websocket.wait_closed()

    async with raw_serve(sends_latin1, "127.0.0.1", 0) as plain:
        port = plain.sockets[0].getsockname()[1]
        flow = Flow()
        async with connect(f"ws://127.0.0.1:{port}/", flow=flow) as websocket:
            with pytest.raises(ConnectionClosedError):
                await websocket.recv()
        await ended(flow)
    assert received_by(flow, "client") == []
    [close] = [e for e in flow.events if e.kind == "close" and e.sender == "client"]
    assert close.code == 1007


async def test_a_handler_closing_with_1007_itself_keeps_the_message_it_read():
    async def wants_json(websocket):
        await websocket.recv()
        await websocket.close(1007, "not JSON")

    server = await serve(wants_json)
    async with connect(server) as websocket:
        await websocket.send("{oops")
        await websocket.wait_closed()
    await ended(server.flow)
    assert received_by(server.flow, "server") == [b"{oops"]
    assert server.flow.stats().loc[1]["latency pairs"] == 1


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


# Connections that come and go: the cap bounds them too


def flow_bytes() -> int:
    """Bytes traced now that the flow's own modules allocated and still hold."""
    where = os.path.join(os.path.dirname(wspatterns.flow.__file__), "*")
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, where)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


@contextlib.contextmanager
def tracing():
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def short_connection(flow: Flow, number: int) -> list:
    """Record one short connection at both ends through the recorder API, as a kit
    server and a kit client sharing ``flow`` would: open, "hi" each way, the closing
    handshake, the end. Six events at each end; returns the two ends."""
    ends = [flow.end(number, "server", f"client-{number}", at) for at in ("client", "server")]
    client, server = ends
    close = Close(1000, "").serialize()
    for end in ends:
        end.add("open", detail="/")
    client.decode(server.encode(Frame(Opcode.TEXT, b"hi")))
    server.decode(client.encode(Frame(Opcode.TEXT, b"hi")))
    server.decode(client.encode(Frame(Opcode.CLOSE, close)))
    client.decode(server.encode(Frame(Opcode.CLOSE, close)))
    for end in ends:
        end.add("end", "client", code=1000)
    return ends


def test_connections_that_come_and_go_do_not_grow_a_flow_past_its_cap():
    # 20,000 connections through a flow of 1,000 events: once they are all dropped, an
    # ended connection's ends leave the flow, their exact counts added up in `folded`.
    flow = Flow(cap=1_000)
    for number in range(1, 2_001):  # well past the cap
        short_connection(flow, number)
    with tracing():
        before = flow_bytes()
        for number in range(2_001, 20_001):
            short_connection(flow, number)
        grown = flow_bytes() - before
    assert grown < 200_000, f"the flow grew by {grown:,} B over 18,000 connections"
    kept = {end.who.connection for end in flow.totals}
    assert len(kept) < 300  # those its 1,000 events still name, and a few not looked at yet
    assert flow.folded.connections + len(kept) == 20_000
    assert flow.folded.ends + len(flow.totals) == 40_000
    assert flow.recorded == 12 * 20_000 and flow.dropped == flow.recorded - 1_000
    assert flow.folded.sent + sum(end.sent for end in flow.totals) == 2 * 20_000
    assert flow.folded.received + sum(end.received for end in flow.totals) == 2 * 20_000
    # What the flow still holds reads as before: every event kept names a kept end.
    assert {event.connection for event in flow.events} <= kept
    stats = flow.stats()
    assert set(stats.index) == kept
    assert (stats["client→server"] == 1).all()
    assert (stats["latency pairs"].iloc[1:] == 2).all()  # the oldest kept lost some events
    every_view(flow)
    assert "connections (" in repr(flow) and "more folded)" in repr(flow)


def test_a_connection_is_not_folded_while_an_event_kept_names_it():
    flow = Flow(cap=100)
    first = short_connection(flow, 1)
    for number in range(2, 200):
        short_connection(flow, number)
        if number < 9:  # 12 events each: the first's are kept until the ninth
            assert all(end in flow.totals for end in first)
    assert all(end not in flow.totals for end in first)
    assert flow.folded.connections > 0


def test_a_folded_end_that_records_again_is_back_with_its_counts():
    # A handler's error after its connection ended, or broadcast() skipping a connection
    # a set still holds: the end is in the flow again, its totals exact.
    flow = Flow(cap=100)
    ends = [short_connection(flow, number) for number in range(1, 200)]
    client, server = ends[0]
    assert server not in flow.totals
    folded = (flow.folded.connections, flow.folded.sent, flow.recorded)
    server.add("error", "server", detail="ValueError: too late")
    server.skipped("closed", b"news", True)
    assert server in flow.totals and flow.server_end(1) is server
    assert (server.sent, server.received, server.others) == (1, 1, 6)
    assert flow.recorded == folded[2] + 2 and flow.dropped == flow.recorded - len(flow)
    assert flow.folded.sent == folded[1] - 1
    assert flow.folded.connections == folded[0] - 1  # its client end stays folded
    [error] = [event for event in flow.events if event.kind == "error"]
    assert (error.connection, error.client) == (1, "client-1")
    every_view(flow)


def test_clear_and_merge_carry_what_was_folded():
    flow = Flow(cap=100)
    for number in range(1, 200):
        short_connection(flow, number)
    merged = merge(flow.export())
    assert merged.recorded == flow.recorded and merged.dropped == merged.recorded - len(merged)
    assert merged.folded.connections == flow.folded.connections > 0
    flow.clear()
    assert flow.recorded == flow.folded.connections == flow.folded.events == 0


async def test_plain_clients_coming_and_going_do_not_grow_a_server_s_flow():
    # A loop of connections from anyone on the machine: the server's flow keeps ~1 KB
    # per connection no more once its events are dropped past the cap.
    flow = Flow(cap=100)
    server = await serve(echo, flow=flow)

    async def one() -> None:
        async with raw_connect(server.url, proxy=None) as websocket:
            await websocket.send("hi")
            assert await websocket.recv() == "hi"

    for _ in range(200):  # past the cap
        await one()
    await eventually(lambda: flow.recorded == 6 * 200, "every connection to end")
    gc.collect()
    with tracing():
        before = flow_bytes()
        for _ in range(1_500):
            await one()
        await eventually(lambda: flow.recorded == 6 * 1_700, "every connection to end")
        gc.collect()
        grown = flow_bytes() - before
    assert grown < 150_000, f"the flow grew by {grown:,} B over 1,500 connections"
    kept = {end.who.connection for end in flow.totals}
    assert flow.folded.connections + len(kept) == 1_700
    assert flow.folded.received + sum(end.received for end in flow.totals) == 1_700
    assert set(flow.stats().index) == kept
    await server.stop()


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
        await asyncio.sleep(MS)  # a stimulus: each piece reaches the server on its own
    assert (await reader.readline()).startswith(b"HTTP/1.1 101")
    writer.close()
    await ended(server.flow)  # nothing more can be recorded on it
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


# Broadcasts, recorded once


async def room_of(count, *, names=(), flow=None, name="room", **options):
    """A kit server running the seed's registration handler with a set, and ``count``
    clients in it: the kit's if ``names`` are given, plain websockets ones otherwise."""
    room = set()
    server = await serve(registration(room), name=name, flow=flow, **options)
    if names:
        clients = [await connect(server, name=each, **options) for each in names]
    else:
        clients = []
        for start in range(0, count, 100):  # in batches, within the listening backlog
            batch = range(start, min(start + 100, count))
            opening = (raw_connect(server.url, proxy=None, **options) for _ in batch)
            clients += await asyncio.gather(*opening)
    await eventually(lambda: len(room) == len(clients), "every client in the room")
    return server, room, clients


def broadcasts(flow: Flow) -> list[Broadcast]:
    return [entry for entry in flow.entries if isinstance(entry, Broadcast)]


async def close_all(clients) -> None:
    await asyncio.gather(*(client.close() for client in clients))


async def test_a_broadcast_to_1000_connections_is_stored_as_one_record():
    server, room, clients = await room_of(1000, compression=None)
    events_before = len(server.flow)
    broadcast(room, "to everyone")
    [record] = broadcasts(server.flow)
    assert sorted(record.connections) == sorted(peer.recorder.who.connection for peer in room)
    assert (record.type, record.size, record.head) == ("text", 11, b"to everyone")
    assert len(server.flow.entries) == events_before + 1  # one entry…
    assert len(server.flow) == server.flow.recorded == events_before + 1000  # …for 1000 events
    await close_all(clients)


async def test_each_delivery_counts_and_pairs_with_its_receipt():
    server, room, clients = await room_of(3, names=["alice", "bob", "carol"])
    broadcast(room, "one")
    broadcast(room, b"\x00two")
    [alice_on_server] = [peer for peer in room if peer.name == "alice"]
    await alice_on_server.send("three")  # an ordinary message between broadcasts
    broadcast(room, "four!")
    for client in clients:
        assert [await client.recv() for _ in range(3 if client.name != "alice" else 4)]
    await close_all(clients)
    stats = server.flow.stats()
    assert list(stats["server→client"]) == [4, 3, 3]
    assert list(stats["bytes server→client"]) == [3 + 4 + 5 + 5, 3 + 4 + 5, 3 + 4 + 5]
    assert list(stats["latency pairs"]) == [4, 3, 3]  # each receipt paired with its delivery
    assert len(broadcasts(server.flow)) == 3
    sent = [e for e in server.flow.events if e.at == "server" and e.kind == "message"]
    assert [(e.client, e.index) for e in sent if e.broadcast is None] == [("alice", 2)]
    assert [e.index for e in sent if e.client == "bob"] == [0, 1, 2]


async def test_sends_of_one_bytes_object_in_a_loop_are_messages_not_a_broadcast():
    server, room, clients = await room_of(3, names=["alice", "bob", "carol"])
    payload = b"the same object"
    for peer in sorted(room, key=lambda peer: peer.name):
        await peer.send(payload)  # nothing recorded in between, but no broadcast() either
    for client in clients:
        assert await client.recv() == payload
    await close_all(clients)
    assert broadcasts(server.flow) == []
    sent = [e for e in server.flow.events if e.at == "server" and e.kind == "message"]
    assert [e.client for e in sent] == ["alice", "bob", "carol"]


async def test_two_broadcasts_of_one_bytes_object_in_a_row_are_two():
    server, room, clients = await room_of(3, names=["alice", "bob", "carol"])
    chunk = bytes(100)
    broadcast(room, chunk)
    broadcast(room, chunk)
    await close_all(clients)
    assert [len(record.connections) for record in broadcasts(server.flow)] == [3, 3]


async def test_a_connection_that_closed_is_recorded_as_skipped():
    server, room, clients = await room_of(3, names=["alice", "bob", "carol"])
    peers = sorted(room, key=lambda peer: peer.name)  # a list: carol stays in it
    await clients[2].close()
    await eventually(lambda: peers[2].state.name == "CLOSED", "carol's connection closed")
    broadcast(peers, "who is left?")
    [record] = broadcasts(server.flow)
    assert [who.client for who in record.recipients] == ["alice", "bob"]
    assert [(who.client, why) for who, why in record.skipped] == [("carol", "closed")]
    [skip] = [e for e in server.flow.events if e.kind == "skipped"]
    assert (skip.client, skip.detail, skip.broadcast) == ("carol", "closed", record.seq)
    assert "broadcast() skipped carol (closed)" in every_view(server.flow).text
    await close_all(clients[:2])


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (2, 1, 0)])  # alice, who is sent to:
async def test_a_connection_closing_or_sending_fragments_is_recorded_as_skipped(order):
    server, room, clients = await room_of(3, names=["alice", "bob", "carol"])
    peers = sorted(room, key=lambda peer: peer.name)
    alice, bob, carol = peers  # alice first, in the middle, last:
    in_order = [peers[number] for number in order]
    clients[2].transport.pause_reading()  # carol will not answer the close frame for now
    closing = asyncio.create_task(carol.close())
    await eventually(lambda: carol.state.name == "CLOSING", "carol's connection closing")
    second_part = asyncio.Event()

    async def two_parts():
        yield "first part, "
        await second_part.wait()
        yield "second part"

    sending = asyncio.create_task(bob.send(two_parts()))
    await eventually(lambda: "server" in bob.recorder.partial, "bob's first fragment out")
    with pytest.raises(ExceptionGroup):  # websockets says so for bob, not for carol
        broadcast(in_order, "news", raise_exceptions=True)
    second_part.set()
    await sending
    clients[2].transport.resume_reading()
    await closing
    broadcast(room, "later")  # everyone open again (carol is gone from the room)
    first, later = broadcasts(server.flow)
    assert [who.client for who in first.recipients] == ["alice"]
    assert sorted((who.client, why) for who, why in first.skipped) == [
        ("bob", "sending a fragmented message"),
        ("carol", "closing"),
    ]
    assert sorted(who.client for who in later.recipients) == ["alice", "bob"]
    assert later.skipped == []
    assert type(bob) is type(alice)  # back to its own class, like a connection never skipped
    every_view(server.flow)
    await close_all(clients[:2])


async def test_a_broadcast_that_skips_everyone_is_recorded_once():
    server, room, clients = await room_of(2, names=["alice", "bob"])
    peers = list(room)
    await close_all(clients)
    await eventually(lambda: {peer.state.name for peer in peers} == {"CLOSED"}, "both closed")
    before = server.flow.recorded
    broadcast(peers, "anyone?")
    broadcast(set(), "nobody")  # an empty set: nothing happens, nothing is recorded
    assert server.flow.recorded == before + 2
    [record] = broadcasts(server.flow)
    assert record.recipients == [] and len(record.skipped) == 2
    text = every_view(server.flow).text
    assert "broadcast() skipped alice, bob (closed): “anyone?” · 7 B" in text


async def test_one_broadcast_to_the_connections_of_two_servers_sharing_a_flow():
    flow = Flow()
    first, first_room, first_clients = await room_of(2, names=["a1", "a2"], flow=flow, name="one")
    second, second_room, second_clients = await room_of(
        2, names=["b1", "b2"], flow=flow, name="two"
    )
    broadcast(first_room | second_room, "to both")
    await close_all(first_clients + second_clients)
    [record] = broadcasts(flow)
    assert record.servers == ["one", "two"]
    assert sorted((who.server, who.client) for who in record.recipients) == [
        ("one", "a1"), ("one", "a2"), ("two", "b1"), ("two", "b2")
    ]  # fmt: skip
    text = every_view(flow).text
    assert "one → a1, a2: “to both” · 7 B" in text and "two → b1, b2: “to both” · 7 B" in text


async def test_empty_and_binary_broadcasts_are_recorded_as_such():
    server, room, clients = await room_of(2, names=["alice", "bob"])
    broadcast(room, "")
    broadcast(room, b"\x00\xff" * 100)
    await close_all(clients)
    empty, binary = broadcasts(server.flow)
    assert (empty.type, empty.size, empty.head) == ("text", 0, b"")
    assert (binary.type, binary.size, binary.head) == ("binary", 200, b"\x00\xff" * 24)
    text = every_view(server.flow).text
    assert "server → alice, bob: “” · 0 B" in text
    assert "server → alice, bob: binary 00 ff 00 ff 00 ff … · 200 B" in text


async def test_broadcasts_weigh_against_the_cap_a_little():
    flow = Flow(cap=40)
    server, room, clients = await room_of(100, flow=flow, compression=None)
    assert flow.dropped > 0  # the 200 opening events alone overflow it
    for number in range(20):
        broadcast(room, f"tick {number}")
    kept = broadcasts(flow)
    weight = 1 + 100 // FANOUT  # each weighs one record, and one more per FANOUT deliveries
    assert len(kept) == flow.cap // weight
    assert [record.head for record in kept][-1] == b"tick 19"
    assert len(flow) + flow.dropped == flow.recorded
    assert f"{flow.dropped:,} earlier events dropped" in every_view(flow).text
    await close_all(clients)


async def test_merge_carries_broadcasts_across_processes():
    here = Flow()
    there = Flow(token=here.token)  # as a worker process started from here would have
    server, room, clients = await room_of(0, flow=there)
    clients = [await connect(server.url, name=name, flow=here) for name in ("alice", "bob")]
    raw = await raw_connect(server.url, proxy=None)  # a connection only the server records
    await eventually(lambda: len(room) == 3, "three in the room")
    broadcast(room, "from far")
    for client in (*clients, raw):
        assert await client.recv() == "from far"
    await close_all([*clients, raw])
    merged = merge(here, there.export())
    [record] = broadcasts(merged)
    assert sorted(who.client for who in record.recipients) == ["alice", "bob", "client-1"]
    assert merged.stats()["latency pairs"].sum() == 2  # alice's and bob's receipts, paired
    text = merged.sequence().text
    assert text.count("“from far”") == 1  # one fan-out, both ends' records of it

    # Nothing in a merged flow points back at it: let go, it is freed at once, with no
    # help from the cyclic garbage collector (a live flow and its recorders are a cycle).
    exported = there.export()
    gc.collect()
    gc.disable()
    try:
        merged = merge(here, exported)
        assert broadcasts(merged) and len(merged.totals) == 5  # three server ends, two clients
        freed = weakref.ref(merged)
        del merged, record
        assert freed() is None, "a merged flow is kept alive by a reference cycle"
    finally:
        gc.enable()
