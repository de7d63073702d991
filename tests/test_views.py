import html
import math
import string
import xml.etree.ElementTree as ElementTree

import matplotlib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as raw_connect
from websockets.asyncio.server import broadcast

from wspatterns import Event, Flow, connect, serve
from wspatterns.flow import Broadcast, labels, tables
from wspatterns.patterns import registration
from wspatterns.waiting import wait_for_handlers

from .utils import crashed_server, echo, ended, eventually, execute

matplotlib.use("Agg")


async def echo_flow(*messages, name="echo") -> Flow:
    server = await serve(echo, name=name)
    async with connect(server) as websocket:
        for message in messages:
            await websocket.send(message)
            await websocket.recv()
    await ended(server.flow)
    return server.flow


def arrows(diagram) -> list[str]:
    return [line.strip() for line in diagram.mermaid.splitlines() if ">>" in line]


# Every view, on a flow with nothing in it


def test_every_view_copes_with_an_empty_flow():
    flow = Flow()
    assert flow.sequence().text == "[nothing recorded yet]"
    assert "sequenceDiagram" in flow.sequence().mermaid
    assert list(flow.table().columns) == tables.COLUMNS and len(flow.table()) == 0
    assert len(flow.stats()) == 0
    assert flow.timeline().axes[0].get_yticklabels()[0].get_text() == "nothing recorded yet"
    assert "0 events" in repr(flow.live())


# Sequence diagrams


async def test_one_arrow_per_message_though_both_ends_recorded():
    flow = await echo_flow("hello")
    assert arrows(flow.sequence()) == [
        "p0->>p1: “hello” · 5 B",
        "p1->>p0: “hello” · 5 B",
        "p0-->>p1: close 1000 (OK)",
        "p1-->>p0: close 1000 (OK)",
    ]
    assert "participant p1 as server" in flow.sequence().mermaid


async def test_the_same_order_draws_the_same_diagram():
    first = (await echo_flow("a", b"\x01", "c")).sequence()
    second = (await echo_flow("a", b"\x01", "c")).sequence()
    assert (first.mermaid, first.svg, first.text) == (second.mermaid, second.svg, second.text)


async def test_a_diagram_offers_svg_and_text_and_keeps_mermaid_out_of_the_notebook():
    diagram = (await echo_flow("hi")).sequence()
    bundle = diagram._repr_mimebundle_()
    # JupyterLab's Mermaid renderer writes its picture back: a notebook opened would be changed.
    assert set(bundle) == {"image/svg+xml", "text/plain"}
    assert diagram.mermaid.startswith("sequenceDiagram")
    ElementTree.fromstring(bundle["image/svg+xml"])  # well-formed


async def test_long_flows_are_summarised():
    flow = await echo_flow(*[f"m{number}" for number in range(200)])
    diagram = flow.sequence(limit=20)
    assert len(arrows(diagram)) + diagram.mermaid.count("Note over") <= 21
    assert "[… 383 more messages …]" in diagram.text  # 400 messages, 17 drawn
    assert "“m0”" in diagram.text and "“m199”" in diagram.text


async def test_many_clients_share_a_lane():
    server = await serve(echo)
    for number in range(9):
        async with connect(server) as websocket:
            await websocket.send(f"from {number}")
            await websocket.recv()
    diagram = server.flow.sequence(limit=1000, lanes=4)
    assert diagram.lanes == ["client-1", "client-2", "client-3", "other clients", "server"]
    assert "client-9 → server" not in diagram.text
    assert "other clients → server: client-9: “from 8”" in diagram.text


async def test_text_that_looks_like_syntax_is_escaped():
    flow = await echo_flow("a;b#c<d>e\nf")
    diagram = flow.sequence()
    assert arrows(diagram)[0] == "p0->>p1: “a#59;b#35;c#lt;d#gt;e⏎f” · 11 B"
    assert "“a;b#c<d>e⏎f” · 11 B" in diagram.text
    svg = ElementTree.fromstring(diagram.svg)
    texts = [element.text for element in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "“a;b#c<d>e⏎f” · 11 B" in texts


async def test_crashes_and_lost_connections_are_drawn(capsys):
    server = await crashed_server(KeyError("missing"))
    text = server.flow.sequence().text
    assert "[⚠ handler raised KeyError: 'missing']" in text
    assert "close 1011 (internal error)" in text
    capsys.readouterr()


async def test_a_connection_lost_without_closing_is_noted():
    server = await serve(echo)
    websocket = await raw_connect(server.url, proxy=None)
    websocket.transport.abort()
    await ended(server.flow)
    assert "[connection lost (1006, no closing handshake)]" in server.flow.sequence().text


def test_dropped_events_are_announced():
    flow = Flow(cap=3)
    client = flow.end(1, "server", "client-1", "client")
    for _ in range(5):
        client.message("client", "x")
    assert "… 2 earlier events dropped (this flow keeps 3) …" in flow.sequence().text


# Previews


def event(**fields) -> Event:
    defaults = dict(
        seq=0, time=0, kind="message", connection=1, server="s", client="c", at="server",
        sender="client", type="text", size=0, head=b"", index=0, code=None, detail="",
    )  # fmt: skip
    return Event(**{**defaults, **fields})


@pytest.mark.parametrize(
    "fields, shown",
    [
        (dict(head=b"hello", size=5), "“hello”"),
        (dict(head=b"", size=0), "“”"),
        (dict(head="é".encode() * 24, size=200), "“éééééééééééééééééééé…”"),
        (dict(head=b"ab" + "é".encode()[:1], size=3), "“ab�”"),  # broken UTF-8
        (dict(head="é".encode() * 23 + "é".encode()[:1], size=60), "“éééééééééééééééééééé…”"),
        (dict(type="binary", head=b"\x00\xff\x10", size=3), "binary 00 ff 10"),
        (dict(type="binary", head=bytes(range(48)), size=5000), "binary 00 01 02 03 04 05 …"),
        (dict(type="binary", head=b"", size=0), "binary"),
        (dict(head=b"tab\there", size=8), "“tab·here”"),
        (dict(kind="close", code=1001, detail=""), "close 1001 (going away)"),
        (dict(kind="close", code=4000, detail="bye"), "close 4000 “bye”"),
    ],
)
def test_previews_are_short_and_printable(fields, shown):
    assert labels.preview(event(**fields)) == shown


def test_sizes_read_like_sizes():
    assert [labels.size(n) for n in (0, 999, 1000, 1_500_000, 10**12)] == [
        "0 B", "999 B", "1.0 kB", "1.5 MB", "1000000.0 MB"
    ]  # fmt: skip


# Tables


async def test_table_has_a_row_per_event_with_from_and_to():
    flow = await echo_flow("hello")
    table = flow.table()
    assert len(table) == len(flow)
    messages = table[table.kind == "message"]
    assert list(messages["from"]) == ["client-1", "client-1", "echo", "echo"]
    assert list(messages["to"]) == ["echo", "echo", "client-1", "client-1"]
    assert list(messages["preview"].unique()) == ["“hello”"]
    assert table.time_ms.is_monotonic_increasing and table.time_ms.iloc[0] == 0


async def test_stats_count_each_way_and_measure_latency():
    flow = await echo_flow("a", "bb", "ccc")
    row = flow.stats().loc[1]
    assert (row["client→server"], row["bytes client→server"]) == (3, 6)
    assert (row["server→client"], row["bytes server→client"]) == (3, 6)
    assert row["latency pairs"] == 6
    assert 0 < row["latency p50 ms"] <= row["latency p95 ms"] <= row["latency p99 ms"]


async def test_stats_leave_latency_empty_when_only_one_end_recorded():
    server = await serve(echo)
    async with raw_connect(server.url, proxy=None) as websocket:
        await websocket.send("x")
        await websocket.recv()
    row = server.flow.stats().loc[1]
    assert row["client→server"] == row["server→client"] == 1
    assert math.isnan(row["latency p50 ms"]) and row["latency pairs"] == 0


def test_stats_counts_stay_exact_past_the_cap():
    flow = Flow(cap=2)
    client = flow.end(1, "server", "client-1", "client")
    for _ in range(5):
        client.message("client", "x")
    assert flow.stats().loc[1]["client→server"] == 5


# Timelines and live views


async def test_timeline_draws_a_lane_each_and_joins_pairs():
    flow = await echo_flow("a", "b")
    figure = flow.timeline()
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["client-1", "server"]
    assert len(axes.collections[0].get_segments()) == 4  # 2 messages each way, both ends


async def test_live_view_does_nothing_outside_a_notebook():
    view = Flow().live()  # with a running loop, where it could start redrawing
    assert not view.running and view.updates == 0
    view.stop()


def test_live_view_refuses_to_redraw_too_often():
    with pytest.raises(ValueError, match="between 0 and 10"):
        Flow().live(rate=30)


def test_live_view_redraws_in_a_notebook_at_most_rate_times_a_second(kernel):
    shown = execute(
        kernel,
        """
        import asyncio, time
        from wspatterns import connect, serve

        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        server = await serve(echo)
        start = time.monotonic()
        with server.flow.live(rate=5) as view:
            async with connect(server) as websocket:
                while time.monotonic() - start < 1:
                    await websocket.send("tick")
                    await websocket.recv()
        elapsed = time.monotonic() - start
        print(view.updates, round(elapsed * view.rate) + 1)
        """,
    )
    updates, allowed = map(int, shown["stdout"].split())
    assert 1 <= updates <= allowed  # messages flowed all along, redraws stayed throttled


async def test_svg_lanes_widen_so_an_error_note_and_a_close_reason_are_not_cut():
    async def picky(websocket):
        async for message in websocket:
            raise ValueError(f"cannot take {message!r}")

    server = await serve(picky, quiet=True)
    async with connect(server) as websocket:
        await websocket.send("x")
        await websocket.wait_closed()
    diagram = server.flow.sequence()
    for step in diagram.steps:  # every label of this short flow appears whole in the SVG
        assert html.escape(step.text, quote=True) in diagram.svg, step.text


async def test_a_wider_sequence_shows_more_of_each_message():
    server = await serve(echo)
    async with connect(server) as websocket:
        await websocket.send('{"channel": "news", "message": "hello"}')
        await websocket.recv()
    narrow, wide = repr(server.flow.sequence()), repr(server.flow.sequence(width=44))
    assert '"hello"' not in narrow and '{"channel": "news", "message": "hello"}' in wide
    with pytest.raises(ValueError, match="width must be at least 1"):
        server.flow.sequence(width=0)


async def test_order_puts_the_lanes_named_first():
    server = await serve(echo, name="echo")
    async with connect(server, name="alice") as alice, connect(server, name="bob") as bob:
        for client in (alice, bob):
            await client.send("hi")
            await client.recv()
    assert server.flow.sequence().lanes == ["alice", "bob", "server"]
    assert server.flow.sequence(order=["server", "bob"]).lanes == ["server", "bob", "alice"]
    with pytest.raises(ValueError, match="no lane 'carol'; the lanes are: alice, bob, server"):
        server.flow.sequence(order=["carol"])


async def test_clients_draws_only_their_connections():
    flow = await chat_with_broadcasts(("alice", "bob", "carol"))
    alone = flow.sequence(clients=["bob"])
    assert alone.lanes == ["bob", "server"]
    assert alone.text.splitlines()[:4] == [
        "[bob connects to /]",
        "server → bob: “hello, everyone” · 15 B",
        "server → bob: binary 01 02 · 2 B",
        "bob ⇢ server: close 1000 (OK)",
    ]  # alice's "just for you" is not bob's
    assert "alice" not in alone.text + alone.mermaid + alone.svg
    two = flow.sequence(clients=["alice", "carol"])
    assert two.lanes == ["alice", "carol", "server"]
    assert "server → alice, carol: “hello, everyone” · 15 B" in two.text
    assert flow.sequence(clients=[]).text == "[nothing recorded yet]"


async def test_an_error_note_is_whole_when_its_lane_comes_out_odd(capsys):
    server = await crashed_server(KeyError("Atlantis"))
    diagram = server.flow.sequence()
    middles = [float(line.get("x1")) for line in svg_elements(diagram, "line")[:2]]
    assert (middles[1] - middles[0]) % 2 == 1  # 37 characters: 7 × 37 + 36 = 295 px a lane
    assert [text for text, _ in drawn_notes(diagram)][-1] == "⚠ handler raised KeyError: 'Atlantis'"
    capsys.readouterr()


def svg_elements(diagram, tag: str) -> list:
    return list(ElementTree.fromstring(diagram.svg).iter(f"{{http://www.w3.org/2000/svg}}{tag}"))


def drawn_notes(diagram) -> list[tuple[str, float]]:
    """What each note of ``diagram``'s SVG says, and how wide its box is, top to bottom."""
    elements = list(ElementTree.fromstring(diagram.svg))
    return [
        (elements[number + 1].text, float(element.get("width")))
        for number, element in enumerate(elements)
        if element.get("fill") == "#fff8c4"
    ]


NAMED = st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=24)


@settings(max_examples=300, deadline=None, database=None)
@given(
    clients=st.lists(NAMED, min_size=1, max_size=2, unique=True),
    server=NAMED,
    path=st.text(alphabet=string.ascii_lowercase + "/", max_size=40),
    key=st.text(alphabet=string.ascii_letters + " ", max_size=70),
)
def test_a_note_is_cut_only_when_its_box_cannot_hold_it(clients, server, path, key):
    # The layout's measure: 7 px a character; a note's box spans its lanes less 8 px a side
    # and keeps 10 px a side for itself; lanes widen for a label up to 420 px each.
    flow = Flow()
    for connection, client in enumerate(clients, start=1):
        end = flow.end(connection, server, client, "server")
        end.add("open", detail="/" + path)
        end.message("client", "where is it?")
        end.add("error", detail=f"KeyError: {key!r}")
    diagram = flow.sequence()
    middles = [float(line.get("x1")) for line in svg_elements(diagram, "line")]
    lane_width = middles[1] - middles[0]
    notes = [step for step in diagram.steps if not step.arrow]
    drawn = drawn_notes(diagram)
    assert len(drawn) == len(notes)
    for step, (text, box) in zip(notes, drawn, strict=True):
        spots = [diagram.lanes.index(lane) for lane in step.lanes]
        span = max(spots) - min(spots) + 1
        if len(step.text) * 7 + 36 <= span * 420:  # the lanes widened for it: it is whole
            assert text == step.text
        assert box == span * lane_width - 16, step.text  # no pixel lost to rounding
        if text != step.text:  # cut only when it truly does not fit
            assert len(step.text) * 7 > box - 20, (step.text, text, box)
            assert text == step.text[: int(box - 20) // 7] + "…"


# Broadcasts


NAMES = ("alice", "bob", "carol", "dave", "erin", "frank")


async def chat_with_broadcasts(names=NAMES, *, order: list | None = None) -> Flow:
    """The seed's registration handler with a set; each client joins, two broadcasts and an
    ordinary message go out, and everyone leaves: a flow that mixes the two. ``order``
    gets the names in the order the set gave them."""
    room = set()
    server = await serve(registration(room), name="room")
    clients = [await connect(server, name=name) for name in names]
    await eventually(lambda: len(room) == len(clients), "everyone in the room")
    if order is not None:
        order += [peer.name for peer in room]
    broadcast(room, "hello, everyone")
    [first] = [peer for peer in room if peer.name == names[0]]
    await first.send("just for you")
    broadcast(room, b"\x01\x02")
    for client in clients:
        for _ in range(3 if client is clients[0] else 2):
            await client.recv()
    for client in clients:
        await client.close()
    await wait_for_handlers(server)
    return server.flow


async def test_a_set_based_registry_draws_the_same_diagram_on_every_run():
    diagrams = []
    for _ in range(3):
        order: list[str] = []
        flow = await chat_with_broadcasts(order=order)
        diagrams.append(flow.sequence())
        # The record keeps the order broadcast() wrote in, which is the set's...
        for entry in flow.entries:
            if isinstance(entry, Broadcast):
                assert [who.client for who in entry.recipients] == order
    first = diagrams[0]
    for other in diagrams[1:]:
        assert (other.text, other.mermaid, other.svg) == (first.text, first.mermaid, first.svg)
    lanes = "alice, bob, carol, dave, erin, frank"
    assert f"server → {lanes}: “hello, everyone” · 15 B" in first.text
    assert f"server → {lanes}: binary 01 02 · 2 B" in first.text  # ...the diagram, the lanes'


async def test_a_broadcast_is_one_step_in_each_form():
    flow = await chat_with_broadcasts(("alice", "bob"))
    diagram = flow.sequence()
    lines = diagram.text.splitlines()
    assert lines[2:5] == [
        "server → alice, bob: “hello, everyone” · 15 B",
        "server → alice: “just for you” · 12 B",
        "server → alice, bob: binary 01 02 · 2 B",
    ]
    mermaid = diagram.mermaid.splitlines()
    start = mermaid.index("    par broadcast")
    assert mermaid[start : start + 5] == [
        "    par broadcast",
        "        p2->>p0: “hello, everyone” · 15 B",
        "    and",
        "        p2->>p1: “hello, everyone” · 15 B",
        "    end",
    ]
    svg = ElementTree.fromstring(diagram.svg)
    heads = [element for element in svg.iter("{http://www.w3.org/2000/svg}polygon")]
    assert len(heads) == 2 + 1 + 2 + 4  # an arrowhead per recipient, and per close frame


async def test_a_broadcast_to_many_counts_the_others():
    names = [f"client-{number}" for number in range(1, 11)]
    flow = await chat_with_broadcasts(names)
    diagram = flow.sequence(lanes=4)
    assert diagram.lanes == ["client-1", "client-2", "client-3", "other clients", "server"]
    text = "server → client-1, client-2, client-3 and 7 others: “hello, everyone” · 15 B"
    assert text in diagram.text
    assert "p4->>p3: 7 others: “hello, everyone” · 15 B" in diagram.mermaid
    assert "(and 7 others)" in diagram.svg
    summary = flow.sequence(limit=4).text
    assert "[… 21 more messages, 26 other steps …]" in summary  # each delivery counted


async def test_every_view_copes_with_a_flow_that_mixes_broadcasts_and_messages():
    flow = await chat_with_broadcasts(("alice", "bob", "carol"))
    ElementTree.fromstring(flow.sequence().svg)
    per_delivery = flow.table()
    assert list(per_delivery.columns) == tables.COLUMNS
    sent = per_delivery[(per_delivery.kind == "message") & (per_delivery["at"] == "server")]
    assert list(sent["to"]) == ["alice", "bob", "carol", "alice", "alice", "bob", "carol"]
    assert len(per_delivery) == len(flow) == len(flow.events)
    per_broadcast = flow.table(per="broadcast")
    assert list(per_broadcast.columns) == tables.BROADCAST_COLUMNS
    rows = per_broadcast[per_broadcast.kind == "broadcast"]
    assert list(rows["to"]) == ["alice, bob, carol"] * 2
    assert list(rows["recipients"]) == [3, 3] and list(rows["skipped"]) == [0, 0]
    assert len(per_broadcast) == len(per_delivery) - 4  # two rows stand for six
    assert list(flow.stats()["server→client"]) == [3, 2, 2]
    figure = flow.timeline()
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == [
        "alice", "bob", "carol", "server"
    ]  # fmt: skip
    assert len(figure.axes[0].collections[0].get_segments()) == 7  # every receipt joined
    assert "on 3 connections" in repr(flow.live())
    with pytest.raises(ValueError, match='per must be "delivery" or "broadcast"'):
        flow.table(per="message")
