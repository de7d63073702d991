import asyncio
import json

from websockets.exceptions import ConnectionClosed

from wspatterns import connect


async def follow(url, channel, received):
    since = None  # the id of the last message received: where to resume
    while True:
        try:
            async with connect(url) as websocket:
                request = {"action": "subscribe", "channel": channel}
                if since is not None:
                    request["since"] = since
                await websocket.send(json.dumps(request))
                async for frame in websocket:
                    delivery = json.loads(frame)
                    if "message" in delivery:  # not {"subscribed": ...} nor {"error": ...}
                        received.append(delivery["message"])
                        since = delivery["id"]
        except (ConnectionClosed, OSError):
            # The connection dropped, or was refused while the server restarts
            # (ConnectionRefusedError is an OSError): try again in a moment.
            await asyncio.sleep(0.1)
