"""The pub/sub hub, on both backends, and the JSON protocol its handler speaks."""

import asyncio
import json
import operator
import socket
from socket import SO_RCVBUF, SO_SNDBUF, SOL_SOCKET
from urllib.parse import urlsplit

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from wspatterns import Flow, connect, serve
from wspatterns.pubsub import (
    ACTIONS,
    MAX_MESSAGE_SIZE,
    MAX_QUEUED_BYTES,
    MAX_SUBSCRIPTIONS,
    BadRequest,
    HubUnavailable,
    MemoryHub,
    RedisHub,
    hub_handler,
    parse_request,
)
from wspatterns.pubsub.redis_server import redacted, start_redis, start_redis_blocking

from .utils import BOUND, eventually

MAX_SIZE = 1024  # the servers' max_size here: small, so oversize messages are cheap


@pytest.fixture
def redis_server():
    server = start_redis_blocking(name="test_pubsub")
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def hub(request):
    if request.param == "memory":
        hub = MemoryHub()
    else:
        hub = RedisHub(request.getfixturevalue("redis_server").url)
    async with hub:
        yield hub


@pytest.fixture
async def server(hub):
    async with serve(hub_handler(hub, max_errors=5), max_size=MAX_SIZE) as server:
        yield server
    assert server.errors == []


async def send(websocket, **request):
    await websocket.send(json.dumps(request))


async def receive(websocket):
    async with asyncio.timeout(BOUND):
        return json.loads(await websocket.recv())


async def subscribe(websocket, channel):
    await send(websocket, action="subscribe", channel=channel)
    assert await receive(websocket) == {"subscribed": channel}


async def closed_with(websocket) -> int:
    """The close code the server sent, once the connection is closed."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(BOUND):
            while True:
                await websocket.recv()
    return websocket.close_code


async def still_served(server):
    """A new client can subscribe and hear itself publish: the server serves as before."""
    async with connect(server) as websocket:
        await subscribe(websocket, "still-here")
        await send(websocket, action="publish", channel="still-here", message="yes")
        assert await receive(websocket) == {"channel": "still-here", "message": "yes"}


# Subscribe, publish, unsubscribe


async def test_a_subscriber_gets_what_another_client_publishes(server):
    async with connect(server) as reader, connect(server) as writer:
        await subscribe(reader, "news")
        await send(writer, action="publish", channel="news", message="hello")
        assert await receive(reader) == {"channel": "news", "message": "hello"}


async def test_a_message_reaches_only_its_channel(server):
    async with connect(server) as news, connect(server) as sport, connect(server) as writer:
        await subscribe(news, "news")
        await subscribe(sport, "sport")
        await send(writer, action="publish", channel="news", message="elections")
        await send(writer, action="publish", channel="sport", message="football")
        assert await receive(sport) == {"channel": "sport", "message": "football"}
        assert await receive(news) == {"channel": "news", "message": "elections"}


async def test_after_unsubscribing_nothing_more_arrives(server, hub):
    async with connect(server) as reader, connect(server) as writer:
        await subscribe(reader, "news")
        await subscribe(reader, "later")
        await send(reader, action="unsubscribe", channel="news")
        assert await receive(reader) == {"unsubscribed": "news"}
        assert hub.subscribers("news") == 0
        await send(writer, action="publish", channel="news", message="missed")
        await send(writer, action="publish", channel="later", message="heard")
        assert await receive(reader) == {"channel": "later", "message": "heard"}


async def test_subscribing_and_unsubscribing_twice_is_harmless(server, hub):
    async with connect(server) as websocket:
        await subscribe(websocket, "news")
        await subscribe(websocket, "news")
        assert hub.subscribers("news") == 1
        await send(websocket, action="publish", channel="news", message="once")
        assert await receive(websocket) == {"channel": "news", "message": "once"}
        for _ in range(2):
            await send(websocket, action="unsubscribe", channel="news")
            assert await receive(websocket) == {"unsubscribed": "news"}
        assert hub.channels == set()


async def test_every_subscriber_gets_the_messages_in_the_order_published(server):
    async with connect(server) as one, connect(server) as two, connect(server) as writer:
        await subscribe(one, "news")
        await subscribe(two, "news")
        for number in range(5):
            await send(writer, action="publish", channel="news", message=str(number))
        for reader in (one, two):
            received = [(await receive(reader))["message"] for _ in range(5)]
            assert received == ["0", "1", "2", "3", "4"]


async def test_subscriptions_are_removed_when_the_client_leaves(server, hub):
    async with connect(server) as staying:
        await subscribe(staying, "news")
        async with connect(server) as leaving:
            await subscribe(leaving, "news")
            await subscribe(leaving, "sport")
            assert hub.subscribers("news") == 2 and hub.channels == {"news", "sport"}
        await eventually(lambda: hub.channels == {"news"})
        assert hub.subscribers("news") == 1
    await eventually(lambda: hub.channels == set())


async def test_a_redis_hub_unsubscribes_in_redis_when_the_last_client_leaves(redis_server):
    async with RedisHub(redis_server.url) as hub, serve(hub_handler(hub)) as server:
        spy = redis.asyncio.from_url(redis_server.url, decode_responses=True)
        async with connect(server) as websocket:
            await subscribe(websocket, "numsub")
            assert await spy.pubsub_numsub("numsub") == [("numsub", 1)]
        await eventually(lambda: hub.channels == set())
        assert await spy.pubsub_numsub("numsub") == [("numsub", 0)]
        await spy.aclose()


async def test_servers_on_two_redis_hubs_share_channels_as_separate_processes_would(redis_server):
    async with RedisHub(redis_server.url) as hub_1, RedisHub(redis_server.url) as hub_2:
        async with (
            serve(hub_handler(hub_1), name="one") as one,
            serve(hub_handler(hub_2), name="two") as two,
        ):
            async with connect(one) as reader, connect(two) as writer:
                await subscribe(reader, "across")
                await send(writer, action="publish", channel="across", message="hi")
                assert await receive(reader) == {"channel": "across", "message": "hi"}


async def test_the_hub_interface_works_without_websockets(hub):
    received = []
    await hub.subscribe("news", lambda channel, message, id: received.append((channel, message)))
    await hub.publish("news", "direct")
    await hub.publish("sport", "elsewhere")
    await eventually(lambda: received)
    assert received == [("news", "direct")]


# Bad input


@pytest.mark.parametrize(
    "frame, error",
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('"subscribe"', "expected a JSON object"),
        ('{"action": "shout", "channel": "news"}', "unknown action 'shout'"),
        ('{"channel": "news"}', "unknown action None"),
        ('{"action": "subscribe"}', "subscribe needs a channel"),
        ('{"action": "subscribe", "channel": ""}', "invalid channel ''"),
        ('{"action": "subscribe", "channel": "bad name!"}', "invalid channel 'bad name!'"),
        ('{"action": "subscribe", "channel": "%s"}' % ("x" * 65), "invalid channel"),
        ('{"action": "unsubscribe", "channel": 7}', "invalid channel 7"),
        ('{"action": "publish", "channel": "news"}', 'publish needs a "message"'),
        ('{"action": "publish", "channel": "news", "message": 1}', 'needs a "message"'),
        ('{"action": "publish", "channel": "news", "message": "\\ud800"}', "Unicode"),
    ],
)
async def test_a_bad_request_gets_a_clear_error_and_the_connection_goes_on(server, frame, error):
    async with connect(server) as websocket:
        await websocket.send(frame)
        reply = await receive(websocket)
        assert set(reply) == {"error"} and error in reply["error"]
        await subscribe(websocket, "news")  # the same connection still works
    await still_served(server)


def raw(**values: str) -> str:
    """A JSON object written by hand: each value as given, ``raw(action='"publish"')``."""
    return "{" + ", ".join(f'"{key}": {value}' for key, value in values.items()) + "}"


# What json.loads cannot take: nested deeper than Python recurses, or a number with more
# digits than int() converts (4300). Each fits in MAX_MESSAGE_SIZE.
DEEP = "[" * 50_000
HUGE = "9" * 5_000
UNPARSABLE = {
    "nested arrays": DEEP,
    "nested objects": '{"a": ' * 10_000,
    "a nested message": raw(action='"publish"', channel='"news"', message=DEEP),
    "a huge number": HUGE,
    "a huge message": raw(action='"publish"', channel='"news"', message=HUGE),
    "a huge channel": raw(action='"subscribe"', channel="-" + HUGE),
}
# What json.loads takes, but is no request: a value nested almost as deep as it parses.
NESTED = "[" * 800 + "]" * 800
PARSABLE = {
    "a nested action": raw(action=NESTED, channel='"news"'),
    "a nested channel": raw(action='"subscribe"', channel=NESTED),
    "a nested since": raw(action='"subscribe"', channel='"news"', since=NESTED),
    "a nested message, closed": raw(action='"publish"', channel='"news"', message=NESTED),
    "a long action": raw(action=json.dumps("x" * 60_000), channel='"news"'),
}


@pytest.mark.parametrize(
    "frame", [*UNPARSABLE.values(), *PARSABLE.values()], ids=[*UNPARSABLE, *PARSABLE]
)
async def test_a_frame_too_deep_or_too_long_for_the_parser_gets_an_error_too(hub, frame):
    async with serve(hub_handler(hub), max_size=MAX_MESSAGE_SIZE) as server:
        assert len(frame.encode()) <= MAX_MESSAGE_SIZE
        async with connect(server) as websocket:
            await websocket.send(frame)
            reply = await receive(websocket)
            assert set(reply) == {"error"}
            assert len(reply["error"]) < 400  # says what was wrong, without echoing it back
            await subscribe(websocket, "news")  # the same connection still works
        await still_served(server)
    assert server.errors == []  # no handler error reported under the teacher's cell


def test_json_that_cannot_be_parsed_is_named_for_what_it_is():
    with pytest.raises(BadRequest, match="nested too deep"):
        parse_request(DEEP)
    with pytest.raises(BadRequest, match="number too long"):
        parse_request(HUGE)


# Limits: subscriptions per client, and what may wait for a client that does not read


async def test_a_client_may_hold_max_subscriptions_and_not_one_more(server, hub):
    channels = [f"channel-{number}" for number in range(MAX_SUBSCRIPTIONS)]
    async with connect(server) as websocket:
        for channel in channels:
            await send(websocket, action="subscribe", channel=channel)
        for channel in channels:  # exactly at the limit: all of them taken
            assert await receive(websocket) == {"subscribed": channel}
        await send(websocket, action="subscribe", channel="one-more")
        reply = await receive(websocket)
        assert set(reply) == {"error"}
        assert f"{MAX_SUBSCRIPTIONS} subscriptions" in reply["error"]
        assert "one-more" not in hub.channels and len(hub.channels) == MAX_SUBSCRIPTIONS
        await subscribe(websocket, channels[0])  # again to one it holds: harmless, as ever
        await send(websocket, action="unsubscribe", channel=channels[0])
        assert await receive(websocket) == {"unsubscribed": channels[0]}
        await subscribe(websocket, "one-more")  # room for one again
        await send(websocket, action="publish", channel="one-more", message="in")
        assert await receive(websocket) == {"channel": "one-more", "message": "in"}
    await eventually(lambda: hub.channels == set())
    await still_served(server)


def delivery_of(size: int, channel: str) -> str:
    """A message whose delivery on ``channel`` is ``size`` bytes of JSON."""
    message = "x" * (size - len(json.dumps({"channel": channel, "message": ""})))
    assert len(json.dumps({"channel": channel, "message": message}).encode()) == size
    return message


async def stalled_subscriber(server, hub, channel, spy):
    """A client of ``server`` subscribed to ``channel`` that then reads nothing, and its
    handler stuck sending it a first message too big for the buffers between them: whatever
    is published next waits in the handler's outbox. ``spy`` (subscribed too) sees each
    delivery as the handler does."""
    sock = socket.socket()
    sock.setsockopt(SOL_SOCKET, SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    slow = await connect(server, sock=sock, max_size=None)
    await subscribe(slow, channel)
    await hub.subscribe(channel, spy)
    slow.transport.pause_reading()  # from now on it reads nothing
    [connection] = server.connections
    connection.transport.get_extra_info("socket").setsockopt(SOL_SOCKET, SO_SNDBUF, 4096)
    await hub.publish(channel, PLUG)
    await eventually(lambda: connection.transport.get_write_buffer_size() > 0, "a stuck send")
    return slow


PLUG = "plug" * 100_000  # 400 kB: more than the buffers between client and server hold


@pytest.mark.parametrize(
    "limit, sizes, dropped",
    [
        ("bytes", [60_000] * 17 + [MAX_QUEUED_BYTES - 17 * 60_000], False),
        ("bytes", [60_000] * 17 + [MAX_QUEUED_BYTES - 17 * 60_000 + 1], True),
        ("messages", [100] * 4, False),
        ("messages", [100] * 5, True),
    ],
    ids=["bytes at the limit", "one byte over", "messages at the limit", "one message over"],
)
async def test_what_may_wait_for_a_client_that_does_not_read(hub, limit, sizes, dropped):
    """MAX_QUEUED_BYTES bytes (or outbox_size messages) may wait for a client that does not
    read; one byte (or message) more unsubscribes it from everything and closes it with 1008."""
    outbox_size = 4 if limit == "messages" else 1000
    messages = [delivery_of(size, "firehose") for size in sizes]
    if limit == "bytes":
        assert sum(sizes) == MAX_QUEUED_BYTES + dropped
    handed = []

    def spy(channel, message, id):
        handed.append(message)

    # Without compression, which would shrink the plug (and the rest) to nothing.
    async with serve(hub_handler(hub, outbox_size=outbox_size), compression=None) as server:
        slow = await stalled_subscriber(server, hub, "firehose", spy)
        try:
            for message in messages:
                await hub.publish("firehose", message)
            # Handed to the handler, which decided on each as it came: nothing to wait for.
            await eventually(lambda: len(handed) == 1 + len(messages), "every delivery")
            if dropped:
                await eventually(lambda: hub.subscribers("firehose") == 1, "the spy alone")
            slow.transport.resume_reading()
            assert await receive(slow) == {"channel": "firehose", "message": PLUG}
            if dropped:
                assert await closed_with(slow) == 1008
                assert slow.close_reason.startswith("too slow:") and limit in slow.close_reason
            else:
                for message in messages:  # every one, in order: none was lost
                    assert await receive(slow) == {"channel": "firehose", "message": message}
                await hub.publish("firehose", "and after")
                assert await receive(slow) == {"channel": "firehose", "message": "and after"}
                assert hub.subscribers("firehose") == 2
        finally:
            await slow.close()
            await hub.unsubscribe("firehose", spy)
        await still_served(server)
    assert server.errors == []


async def test_a_message_bigger_than_the_byte_limit_reaches_a_client_that_reads(hub):
    async with serve(hub_handler(hub, outbox_bytes=1000)) as server:
        async with connect(server) as websocket:
            await subscribe(websocket, "big")
            await hub.publish("big", "x" * 5000)  # alone in the outbox: taken
            assert await receive(websocket) == {"channel": "big", "message": "x" * 5000}
            await hub.publish("big", "small")
            assert await receive(websocket) == {"channel": "big", "message": "small"}
    assert server.errors == []


async def test_a_binary_frame_closes_with_1003(server, hub):
    async with connect(server) as websocket:
        await subscribe(websocket, "news")
        await websocket.send(b'{"action": "publish", "channel": "news", "message": "x"}')
        assert await closed_with(websocket) == 1003
    await eventually(lambda: hub.channels == set())
    await still_served(server)


async def test_a_message_over_max_size_closes_with_1009(server, hub):
    async with connect(server) as websocket:
        await subscribe(websocket, "news")
        await send(websocket, action="publish", channel="news", message="x" * MAX_SIZE)
        assert await closed_with(websocket) == 1009
    await eventually(lambda: hub.channels == set())
    await still_served(server)


async def test_repeated_bad_requests_close_with_1008(server):
    async with connect(server) as websocket:
        for _ in range(5):  # the server fixture's max_errors
            await websocket.send("{not json")
        assert await closed_with(websocket) == 1008
        assert "5 bad messages" in websocket.close_reason
    await still_served(server)


async def test_a_client_that_does_not_read_is_dropped_with_1008(hub):
    handler = hub_handler(hub, outbox_size=4)

    async def with_a_small_send_buffer(websocket):
        websocket.transport.get_extra_info("socket").setsockopt(SOL_SOCKET, SO_SNDBUF, 4096)
        await handler(websocket)

    async with serve(with_a_small_send_buffer) as server:
        # Loopback buffers can hold many megabytes: make them small, so that the
        # server's send() soon waits and the outbox fills.
        sock = socket.socket()
        sock.setsockopt(SOL_SOCKET, SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        async with connect(server, sock=sock, max_queue=1) as slow:
            await subscribe(slow, "firehose")
            for _ in range(2000):
                await hub.publish("firehose", "x" * 60_000)
                await asyncio.sleep(0)  # a turn for the handler; bounded by the count, not time
                if hub.subscribers("firehose") == 0:
                    break
            assert hub.channels == set()
            assert await closed_with(slow) == 1008
            assert "too slow" in slow.close_reason
        await still_served(server)
        assert server.errors == []


# Anything at all


def json_values():
    """Any JSON at all: numbers, strings, arrays, objects, nested."""
    text = st.text(max_size=20)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
    nested = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    )
    return nested.map(json.dumps)


def requests():
    """JSON objects that look more or less like requests, so the fuzzing gets past json.loads."""
    value = st.one_of(
        st.sampled_from(ACTIONS),
        st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
        st.from_regex(r"[0-9]{1,20}-[0-9]{1,20}", fullmatch=True),  # a since, maybe
        st.text(max_size=80),
        st.integers(),
        st.none(),
        st.lists(st.integers(), max_size=2),
    )
    keys = st.sampled_from(["action", "channel", "message", "since", "extra"])
    return st.dictionaries(keys, value, max_size=4).map(json.dumps)


def unparsable():
    """What json.loads cannot take, alone or as a request's value: arrays opened deeper than
    it recurses (about 1000 levels; hypothesis lets tests recurse some 1000 more), numbers
    with more digits than int() converts (4300)."""
    start = st.sampled_from(
        ["", '{"action": ', '{"action": "publish", "channel": "c", "message": ']
    )
    deep = st.integers(990, 60_000).map(lambda depth: "[" * depth)
    huge = st.integers(4_301, 60_000).map(lambda digits: "9" * digits)
    return st.builds(operator.add, start, deep | huge)


@settings(
    max_examples=50,
    deadline=None,
    database=None,  # no .hypothesis/ folder left in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    frames=st.lists(
        # Under max_size: what is bigger gets 1009, as test_a_message_over_max_size... shows.
        st.one_of(st.text(max_size=200), json_values(), requests(), unparsable()).filter(
            lambda frame: len(frame.encode()) < MAX_MESSAGE_SIZE
        ),
        max_size=4,
    )
)
async def test_arbitrary_text_frames_get_answers_and_harm_nobody(hub, frames):
    # A server of its own, roomier than the fixture's: what json.loads cannot take is longer.
    async with asyncio.timeout(2 * BOUND):  # no hang
        async with serve(hub_handler(hub), name="fuzzed", max_size=MAX_MESSAGE_SIZE) as server:
            async with connect(server) as bystander, connect(server) as fuzzer:
                await subscribe(bystander, "bystander")
                for frame in frames:
                    await fuzzer.send(frame)
                # Fewer frames than max_errors: the connection stays open, and answers
                # everything up to a last request of ours, in order.
                await send(fuzzer, action="subscribe", channel="the-end")
                delivery = {"channel", "message", "id"} if hub.history else {"channel", "message"}
                while (reply := await receive(fuzzer)) != {"subscribed": "the-end"}:
                    answers = ({"error"}, {"subscribed"}, {"unsubscribed"}, delivery)
                    assert set(reply) in answers, reply
                await send(fuzzer, action="publish", channel="bystander", message="still there?")
                reply = await receive(bystander)
                assert set(reply) == delivery
                assert (reply["channel"], reply["message"]) == ("bystander", "still there?")
            await eventually(lambda: hub.channels == set())
    assert server.errors == []


# History, and Redis going away


async def test_since_on_a_hub_without_history_is_refused_clearly(server):
    async with connect(server) as websocket:
        await send(websocket, action="subscribe", channel="news", since="1-0")
        reply = await receive(websocket)
        assert set(reply) == {"error"} and "keeps no history" in reply["error"]
        await subscribe(websocket, "news")


@pytest.mark.parametrize("since", ["yesterday", 5, "", "1-0-0"])
async def test_an_invalid_since_gets_a_clear_error(server, since):
    async with connect(server) as websocket:
        await send(websocket, action="subscribe", channel="news", since=since)
        reply = await receive(websocket)
        assert set(reply) == {"error"} and 'invalid "since"' in reply["error"]


async def test_a_redis_hub_says_redis_is_gone_and_recovers_when_it_is_back(capsys):
    own = await start_redis(name="killed")  # this test kills it
    secret = urlsplit(own.url).password
    try:
        async with (
            RedisHub(own.url, retry=0.05, name="worker-1") as hub,
            serve(hub_handler(hub)) as server,
            connect(server) as reader,
            connect(server) as writer,
        ):
            await subscribe(reader, "news")
            own.kill()
            await eventually(lambda: not hub.connected)
            assert "lost its connection to Redis" in hub.problems[0]
            for request in (
                {"action": "publish", "channel": "news", "message": "into the void"},
                {"action": "subscribe", "channel": "sport"},
            ):
                await send(writer, **request)
                reply = await receive(writer)
                assert set(reply) == {"error"} and "is unreachable" in reply["error"]
                assert "redis://:***@127.0.0.1:" in reply["error"] and secret not in reply["error"]
            await own.restart()
            await eventually(lambda: hub.connected)
            assert "reconnected" in hub.problems[1] and "1 channel(s)" in hub.problems[1]
            await send(writer, action="publish", channel="news", message="back")
            assert await receive(reader) == {"channel": "news", "message": "back"}
            assert hub.channels == {"news"}  # the failed subscribe left nothing behind
        assert server.errors == []
        shown = capsys.readouterr().err
        assert "lost its connection" in shown and "reconnected" in shown  # the learner sees both
        assert "redis://:***@127.0.0.1:" in shown and secret not in shown
        assert not any(secret in problem for problem in hub.problems)
    finally:
        own.stop()


async def test_a_client_leaving_while_redis_is_away_leaves_cleanly():
    own = await start_redis(name="killed")
    try:
        async with RedisHub(own.url, retry=0.05) as hub, serve(hub_handler(hub)) as server:
            async with connect(server) as websocket:
                await subscribe(websocket, "news")
                await subscribe(websocket, "staying")
                own.kill()
                await eventually(lambda: not hub.connected)
            await eventually(lambda: hub.channels == set())
            await own.restart()
            await eventually(lambda: hub.connected)
            spy = redis.asyncio.from_url(own.url, decode_responses=True)
            # Nobody here follows news or staying any more: Redis is not told otherwise.
            assert await spy.pubsub_numsub("news", "staying") == [("news", 0), ("staying", 0)]
            await spy.aclose()
        assert server.errors == []
    finally:
        own.stop()


async def test_a_recording_redis_hub_shows_its_traffic_with_redis_in_the_flow(redis_server):
    flow = Flow()
    async with RedisHub(redis_server.url, name="worker-1", flow=flow) as hub:
        await hub.subscribe("news", lambda channel, message, id: None)
        await hub.publish("news", "hello")
        await eventually(lambda: any(event.sender == "server" for event in flow.events[1:]))
    kinds = [(event.kind, event.client, event.server, event.sender) for event in flow.events]
    assert kinds == [
        ("open", "worker-1", "redis", None),
        ("message", "worker-1", "redis", "client"),
        ("message", "worker-1", "redis", "server"),
    ]
    assert [event.head for event in flow.events[1:]] == [b"PUBLISH news hello", b"news: hello"]
    assert flow.events[0].detail == redacted(redis_server.url)  # where it went, no secret


@pytest.mark.parametrize("password", ["", ":wrong@"], ids=["no password", "a wrong one"])
async def test_a_redis_hub_without_the_secret_says_which_url_carries_it(redis_server, password):
    url = f"redis://{password}127.0.0.1:{redis_server.port}/0"
    async with RedisHub(url) as hub, serve(hub_handler(hub)) as server:
        with pytest.raises(HubUnavailable) as subscribing:
            await hub.subscribe("news", lambda channel, message, id: None)
        with pytest.raises(HubUnavailable) as publishing:
            await hub.publish("news", "hello")
        for refused in (subscribing, publishing):
            assert str(refused.value).endswith(
                f"Redis at redis://{password and ':***@'}127.0.0.1:{redis_server.port}/0 "
                "refused the password: use broker.url (it carries the secret; "
                "broker = await start_redis())"
            )
        async with connect(server) as websocket:  # a client of its server is told the same
            await send(websocket, action="publish", channel="news", message="hello")
            assert "refused the password" in (await receive(websocket))["error"]
        assert hub.connected  # nothing went away: it was the URL
