import itertools
import json

import websockets
from websockets.exceptions import ConnectionClosed


async def follow(url, channel, received):
    since = None  # the id of the last message received: where to resume
    reconnecting = websockets.connect(
        url,
        proxy=None,  # no system proxy between us and 127.0.0.1 (the kit's connect does this too)
        reconnect_delays=lambda: itertools.repeat(0.1),  # refused? try again every 0.1 s
    )
    async for websocket in reconnecting:  # a new connection each turn, once the last one ended
        request = {"action": "subscribe", "channel": channel}
        if since is not None:
            request["since"] = since
        try:
            await websocket.send(json.dumps(request))
            async for frame in websocket:
                delivery = json.loads(frame)
                if "message" in delivery:  # not {"subscribed": ...} nor {"error": ...}
                    received.append(delivery["message"])
                    since = delivery["id"]
        except ConnectionClosed:
            continue  # the connection dropped: the next turn connects again
