"""One worker process's own side: serve a hub, answer the notebook's commands on stdin.

Started by :func:`~wspatterns.pubsub.start_workers` as
``python -m wspatterns.pubsub.worker_process --name worker-1 --hub redis``; a
Redis hub's URL comes from ``$WSPATTERNS_HUB_REDIS_URL``, never the command
line (anyone on the machine can read a command line).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from ..errors import InvalidArgumentError
from ..flow import Flow
from ..runtime import serve
from ..runtime.processes import say, stdin_lines, until_signal
from .hub import HUBS, Hub, MemoryHub
from .protocol import MAX_MESSAGE_SIZE, hub_handler
from .redis_hub import RedisHub
from .redis_server import URL_VARIABLE


def make_hub(kind: str, url: str | None, name: str, flow: Flow) -> Hub:
    """The hub a worker serves: ``kind`` is one of :data:`HUBS`; Redis ones need ``url``."""
    if kind == "memory":
        return MemoryHub()
    if url is None:
        raise InvalidArgumentError(f"a {kind!r} hub needs a Redis URL")
    if kind == "redis":
        return RedisHub(url, name=name, flow=flow)
    from .streams import StreamHub  # a worker without Redis never needs it

    return StreamHub(url, name=name, flow=flow)


async def run_worker(name: str, kind: str, url: str | None, token: str | None) -> None:
    """Serve a hub until told to quit; answer the parent's commands on stdin.

    Prints ``{"url": ...}`` once listening. Commands: ``flow`` (prints
    ``{"flow": <Flow.export()>}``), ``clear`` (forgets the flow's events; prints
    ``{"cleared": name}``), ``quit`` or the end of stdin.
    """
    flow = Flow(token=token)  # the parent's clients' connections keep their numbers here
    async with make_hub(kind, url, name, flow) as hub:
        handler = hub_handler(hub)
        async with serve(handler, name=name, flow=flow, max_size=MAX_MESSAGE_SIZE) as server:
            say({"url": server.url})
            async for command in stdin_lines():
                if command == "flow":
                    say({"flow": flow.export()})
                elif command == "clear":
                    flow.clear()
                    say({"cleared": name})
                elif command == "quit":
                    break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wspatterns.pubsub.worker_process",
        description="One pub/sub worker: serve hub_handler on 127.0.0.1 and print the URL. "
        "Commands on stdin: flow, clear, quit.",
    )
    parser.add_argument("--name", default="worker-1", help="the server's name (worker-1)")
    parser.add_argument("--hub", choices=HUBS, default="memory", help="the hub (memory)")
    parser.add_argument(
        "--redis",
        default=os.environ.get(URL_VARIABLE),
        help=f"Redis URL, for the redis and streams hubs (${URL_VARIABLE}; keep a URL "
        "with a password there: every user can read a command line)",
    )
    parser.add_argument("--token", help="the parent's flow token (see Flow.token)")
    args = parser.parse_args(argv)
    if args.hub != "memory" and not args.redis:
        parser.error(f"--hub {args.hub} needs a Redis URL: set {URL_VARIABLE}")
    asyncio.run(until_signal(run_worker(args.name, args.hub, args.redis, args.token)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
