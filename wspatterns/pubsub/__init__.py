"""Publish–subscribe: channels shared by clients of one server, or of many processes.

* :mod:`~wspatterns.pubsub.hub` — the :class:`Hub` interface and :class:`MemoryHub`;
* :mod:`~wspatterns.pubsub.redis_hub` — :class:`RedisHub`, channels in Redis pub/sub;
* :mod:`~wspatterns.pubsub.streams` — :class:`StreamHub`, channels kept as Redis streams;
* :mod:`~wspatterns.pubsub.protocol` — the JSON protocol and :func:`hub_handler`;
* :mod:`~wspatterns.pubsub.redis_server` — :func:`start_redis`, a private, locked Redis;
* :mod:`~wspatterns.pubsub.workers` — :func:`start_workers`, servers in processes of their own.

::

    broker = await start_redis()
    server = await serve(hub_handler(RedisHub(broker.url)), max_size=MAX_MESSAGE_SIZE)
"""

from __future__ import annotations

from ..errors import BadRequest, HubUnavailable
from .hub import Deliver, Hub, MemoryHub
from .protocol import (
    ACTIONS,
    MAX_MESSAGE_SIZE,
    MAX_QUEUED_BYTES,
    MAX_SUBSCRIPTIONS,
    Request,
    hub_handler,
    parse_request,
)
from .redis_hub import REDIS_DOWN, RedisHub
from .redis_server import (
    URL_VARIABLE,
    RedisServer,
    find_redis_server,
    redacted,
    start_redis,
    start_redis_blocking,
)
from .streams import StreamHub
from .workers import Workers, start_workers

__all__ = [
    "ACTIONS",
    "MAX_MESSAGE_SIZE",
    "MAX_QUEUED_BYTES",
    "MAX_SUBSCRIPTIONS",
    "REDIS_DOWN",
    "URL_VARIABLE",
    "BadRequest",
    "Deliver",
    "Hub",
    "HubUnavailable",
    "MemoryHub",
    "RedisHub",
    "RedisServer",
    "Request",
    "StreamHub",
    "Workers",
    "find_redis_server",
    "hub_handler",
    "parse_request",
    "redacted",
    "start_redis",
    "start_redis_blocking",
    "start_workers",
]
