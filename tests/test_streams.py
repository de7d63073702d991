"""The Redis Streams hub: ids, catching up with "since", and Redis going away."""

import asyncio
import json
from urllib.parse import urlsplit

import pytest
import redis.asyncio

from wspatterns import Flow, connect, serve
from wspatterns.pubsub import HubUnavailable, hub_handler
from wspatterns.pubsub.redis_server import start_redis, start_redis_blocking
from wspatterns.pubsub.streams import PREFIX, StreamHub, parse_id

# Two tests of test_pubsub run here too, on this module's server and hub: a StreamHub's.
from .test_pubsub import closed_with, receive, send
from .test_pubsub import (
    test_an_invalid_since_gets_a_clear_error as test_an_invalid_since_is_still_refused,  # noqa: F401
)
from .test_pubsub import (
    test_arbitrary_text_frames_get_answers_and_harm_nobody as test_arbitrary_frames_too,  # noqa: F401
)
from .utils import MS, eventually


@pytest.fixture
def redis_server():
    server = start_redis_blocking(name="test_streams")
    yield server
    server.stop()


@pytest.fixture
async def spy(redis_server):
    """A plain Redis client, on a Redis emptied for each test."""
    client = redis.asyncio.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def hub(redis_server, spy):
    async with StreamHub(redis_server.url) as hub:
        yield hub


@pytest.fixture
async def server(hub):
    async with serve(hub_handler(hub)) as server:
        yield server
    assert server.errors == []


async def deliveries(websocket, count):
    """The next ``count`` deliveries, skipping a subscribe's answer (it may come after some)."""
    got = []
    while len(got) < count:
        reply = await receive(websocket)
        assert "error" not in reply, reply
        if "subscribed" not in reply:
            got.append(reply)
    return got


async def subscribe(websocket, channel, **since):
    """Subscribe; the deliveries that came before the answer (a replay's) are returned."""
    await send(websocket, action="subscribe", channel=channel, **since)
    early = []
    while (reply := await receive(websocket)) != {"subscribed": channel}:
        assert "error" not in reply, reply
        early.append(reply)
    return early


def messages(replies):
    return [reply["message"] for reply in replies]


async def publish(hub, channel, *texts):
    for text in texts:
        await hub.publish(channel, text)


# Ids and catching up


async def test_each_delivery_carries_its_stream_id_in_increasing_order(server, hub, spy):
    async with connect(server) as reader:
        await subscribe(reader, "news")
        await publish(hub, "news", "one", "two", "three")
        got = await deliveries(reader, 3)
    assert messages(got) == ["one", "two", "three"]
    ids = [reply["id"] for reply in got]
    assert sorted(ids, key=parse_id) == ids and len(set(ids)) == 3
    assert [id for id, _ in await spy.xrange(PREFIX + "news")] == ids  # Redis's own ids


async def test_a_client_that_comes_back_with_since_gets_exactly_what_it_missed(server, hub):
    async with connect(server) as reader:
        await subscribe(reader, "news")
        await publish(hub, "news", "1", "2", "3")
        last = (await deliveries(reader, 3))[-1]["id"]
    await eventually(lambda: hub.subscribers("news") == 0)
    await publish(hub, "news", "4", "5", "6")  # while it is away

    async with connect(server) as back, connect(server) as forgetful:
        await subscribe(back, "news", since=last)
        await subscribe(forgetful, "news")  # without since, for comparison
        await publish(hub, "news", "7")
        assert messages(await deliveries(back, 4)) == ["4", "5", "6", "7"]
        assert messages(await deliveries(forgetful, 1)) == ["7"]
        await publish(hub, "news", "8")
        assert messages(await deliveries(back, 1)) == ["8"]  # nothing twice, nothing more


async def test_no_gap_and_no_duplicate_when_messages_arrive_during_the_replay(redis_server, spy):
    """A client leaves and comes back with since, again and again, while a writer never stops."""
    async with (
        StreamHub(redis_server.url) as serving,
        StreamHub(redis_server.url) as writing,  # another process, as far as Redis can tell
        serve(hub_handler(serving)) as server,
    ):
        published = 0
        stop = asyncio.Event()  # not cancel(): redis-py on Python 3.11 can swallow it

        async def writer():
            nonlocal published
            while not stop.is_set():
                await writing.publish("feed", str(published + 1))
                published += 1

        async def until_published(count):
            await eventually(lambda: published >= count)

        writing_task = asyncio.create_task(writer())
        try:
            received = []
            async with connect(server) as reader:
                await subscribe(reader, "feed")
                received += await deliveries(reader, 20)
            for _ in range(5):
                last = int(received[-1]["message"])
                await until_published(last + 200)  # away a while
                async with connect(server) as reader:
                    asked_at = published
                    received += await subscribe(reader, "feed", since=received[-1]["id"])
                    answered_at = published
                    while int(received[-1]["message"]) <= answered_at + 100:
                        received += await deliveries(reader, 1)
                # It got what was published before it asked (the replay), while the
                # subscribe ran (if the writer got a turn), and after: the windows
                # where a gap or a duplicate would be.
                assert last < asked_at <= answered_at < int(received[-1]["message"])
        finally:
            stop.set()
            await writing_task
    numbers = [int(text) for text in messages(received)]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # each once, in order


async def test_the_hub_itself_never_gaps_or_repeats_while_a_writer_runs(redis_server, spy):
    """The same, without websockets: subscribe with since many times, quickly, mid-stream."""
    async with StreamHub(redis_server.url) as hub, StreamHub(redis_server.url) as writing:
        stop = asyncio.Event()

        published = 0

        async def writer():
            nonlocal published
            while not stop.is_set():
                await writing.publish("feed", str(published + 1))
                published += 1
            return published

        writing_task = asyncio.create_task(writer())
        await eventually(lambda: published >= 10, "the writer under way")
        got = {}  # for each subscriber, the number it came after: what it received
        for pause in range(20):
            [(since, fields)] = await spy.xrevrange(PREFIX + "feed", count=1)
            into = got[int(fields["message"])] = []
            await hub.subscribe(
                "feed", lambda _, message, id, into=into: into.append(message), since
            )
            await asyncio.sleep(pause * MS)  # a stimulus: come in at another point of the stream
        stop.set()
        last = await writing_task
        await eventually(lambda: all(into and into[-1] == str(last) for into in got.values()))
    for after, into in got.items():
        assert [int(text) for text in into] == list(range(after + 1, last + 1))


async def test_servers_on_two_stream_hubs_share_history_as_separate_processes_would(
    redis_server, spy
):
    async with (
        StreamHub(redis_server.url) as hub_1,
        StreamHub(redis_server.url) as hub_2,
        serve(hub_handler(hub_1), name="one") as one,
        serve(hub_handler(hub_2), name="two") as two,
    ):
        async with connect(one) as reader, connect(two) as writer:
            await subscribe(reader, "across")
            for text in ("a", "b"):
                await send(writer, action="publish", channel="across", message=text)
            first, second = await deliveries(reader, 2)
            assert messages([first, second]) == ["a", "b"]
        async with connect(two) as back:  # the other server, and an id the first one sent
            await subscribe(back, "across", since=first["id"])
            assert await deliveries(back, 1) == [second]


async def test_a_since_older_than_the_stream_gets_what_the_stream_kept(redis_server, spy):
    async with StreamHub(redis_server.url, maxlen=10) as hub, serve(hub_handler(hub)) as server:
        await publish(hub, "news", *(str(number) for number in range(1, 301)))
        kept = await spy.xlen(PREFIX + "news")
        assert 10 <= kept < 300  # trimmed, in whole blocks of entries
        async with connect(server) as websocket:
            await subscribe(websocket, "news", since="0-1")
            got = messages(await deliveries(websocket, kept))
        assert got == [str(number) for number in range(301 - kept, 301)]


@pytest.mark.parametrize("short", [0, 1], ids=["at the limit", "one byte short"])
async def test_a_replay_may_fill_what_may_wait_for_a_client_and_not_one_byte_more(hub, spy, short):
    """The replay waits for the subscribe's answer, and counts in outbox_bytes as it comes."""
    await publish(hub, "news", *(f"{number:02} " + "x" * 1000 for number in range(20)))
    replayed = [
        {"channel": "news", "message": fields["message"], "id": id}
        for id, fields in await spy.xrange(PREFIX + "news")
    ]
    limit = sum(len(json.dumps(delivery)) for delivery in replayed) - short
    async with serve(hub_handler(hub, outbox_bytes=limit)) as server:
        async with connect(server) as websocket:
            await send(websocket, action="subscribe", channel="news", since="0-0")
            if short:
                assert await closed_with(websocket) == 1008
                assert f"over {limit} bytes" in websocket.close_reason
            else:
                assert await receive(websocket) == {"subscribed": "news"}
                assert await deliveries(websocket, 20) == replayed
        await eventually(lambda: hub.channels == set())
    assert server.errors == []


@pytest.mark.parametrize("since", ["99999999999999-0", "99999999999999999999-99999999999999999999"])
async def test_a_since_newer_than_the_stream_gets_the_new_messages_only(server, hub, since):
    await publish(hub, "news", "old")
    async with connect(server) as websocket:
        assert await subscribe(websocket, "news", since=since) == []
        await publish(hub, "news", "new")
        assert messages(await deliveries(websocket, 1)) == ["new"]


async def test_subscribing_again_replays_nothing(hub):
    got = []

    def deliver(channel, message, id):
        got.append(message)

    await publish(hub, "news", "1", "2")
    await hub.subscribe("news", deliver, since="0-1")
    await hub.subscribe("news", deliver, since="0-1")
    await publish(hub, "news", "3")
    await eventually(lambda: "3" in got)
    assert got == ["1", "2", "3"] and hub.subscribers("news") == 1


async def test_a_recording_stream_hub_shows_publish_replay_and_delivery_in_the_flow(
    redis_server, spy
):
    flow = Flow()
    async with StreamHub(redis_server.url, name="worker-1", flow=flow) as hub:
        await hub.publish("news", "old")
        await hub.subscribe("news", lambda channel, message, id: None, since="0-1")
        await hub.publish("news", "new")
        await eventually(lambda: len(flow.events) == 6)
    heads = [event.head.decode() for event in flow.events[1:]]
    assert [(event.client, event.server) for event in flow.events] == [("worker-1", "redis")] * 6
    assert [event.sender for event in flow.events[1:]] == [
        "client", "client", "server", "client", "server"
    ]  # fmt: skip
    assert heads[0] == "XADD news old" and heads[1].startswith("XRANGE news ")
    assert heads[2].startswith("news ") and heads[2].endswith(": old")
    assert heads[3] == "XADD news new" and heads[4].endswith(": new")


# Redis going away, and closing


async def test_a_stream_hub_fails_clearly_while_redis_is_away_and_delivers_once_it_is_back(
    capsys,
):
    own = await start_redis(name="killed")  # this test kills it
    secret = urlsplit(own.url).password
    try:
        async with StreamHub(own.url, retry=0.05, name="worker-1") as hub:
            got = []
            await hub.subscribe("news", lambda channel, message, id: got.append(message))
            own.kill()
            await eventually(lambda: not hub.connected)
            with pytest.raises(HubUnavailable, match="could not publish"):
                await hub.publish("news", "into the void")
            with pytest.raises(HubUnavailable, match="could not subscribe"):
                await hub.subscribe("sport", lambda channel, message, id: None, since="1-0")
            await own.restart()  # empty: the kit's Redis keeps nothing on disk
            await eventually(lambda: hub.connected)
            await hub.publish("news", "back")
            await eventually(lambda: got == ["back"])
            assert hub.channels == {"news"}  # the failed subscribe left nothing behind
        lost, back = hub.problems
        assert f"redis://:***@127.0.0.1:{own.port}/0" in lost and "reconnected" in back
        shown = capsys.readouterr().err
        assert lost in shown and back in shown  # the learner sees both
        assert secret not in shown
    finally:
        own.stop()


@pytest.mark.parametrize("password", ["", ":wrong@"], ids=["no password", "a wrong one"])
async def test_a_stream_hub_without_the_secret_says_which_url_carries_it(redis_server, password):
    async with StreamHub(f"redis://{password}127.0.0.1:{redis_server.port}/0") as hub:
        with pytest.raises(HubUnavailable, match="refused the password: use broker.url"):
            await hub.subscribe("news", lambda channel, message, id: None, since="1-0")
        with pytest.raises(HubUnavailable, match="refused the password: use broker.url"):
            await hub.publish("news", "hello")
        assert hub.channels == set()


async def test_closing_leaves_no_task_behind(redis_server, spy):
    before = asyncio.all_tasks()
    async with StreamHub(redis_server.url) as hub, serve(hub_handler(hub)) as server:
        async with connect(server) as websocket:
            await subscribe(websocket, "news")
            await publish(hub, "news", "hello")
            await deliveries(websocket, 1)
    assert asyncio.all_tasks() - before == set()  # at once: closing awaited every task
