import os

import redis.asyncio

from chat_room import deliver

redis_client = redis.asyncio.from_url(os.environ["REDIS_URL"], decode_responses=True)


async def publish(room, message):
    """Instead of delivering here: through Redis, to every process."""
    await redis_client.publish(f"room:{room}", message)


async def subscribed():
    """A Redis connection listening to every room, once Redis has confirmed it."""
    pubsub = redis_client.pubsub()
    await pubsub.psubscribe("room:*")
    while await pubsub.get_message(timeout=1.0) is None:  # the confirmation
        pass
    return pubsub


async def listen(pubsub):
    """The one listening task of the process: what Redis brings goes to its own members."""
    async for event in pubsub.listen():
        if event["type"] == "pmessage":
            await deliver(event["channel"].removeprefix("room:"), event["data"])
