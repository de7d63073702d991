import asyncio
import base64
import hashlib

import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.asyncio.server import broadcast
from websockets.frames import Frame, Opcode

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
    assert sorted(record.connections) == sorted(peer.recorder.who[0] for peer in room)
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
    assert [who[2] for who in record.recipients] == ["alice", "bob"]
    assert [(who[2], why) for who, why in record.skipped] == [("carol", "closed")]
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
    assert [who[2] for who in first.recipients] == ["alice"]
    assert sorted((who[2], why) for who, why in first.skipped) == [
        ("bob", "sending a fragmented message"),
        ("carol", "closing"),
    ]
    assert sorted(who[2] for who in later.recipients) == ["alice", "bob"]
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
    assert sorted((who[1], who[2]) for who in record.recipients) == [
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
    assert sorted(who[2] for who in record.recipients) == ["alice", "bob", "client-1"]
    assert merged.stats()["latency pairs"].sum() == 2  # alice's and bob's receipts, paired
    text = merged.sequence().text
    assert text.count("“from far”") == 1  # one fan-out, both ends' records of it
