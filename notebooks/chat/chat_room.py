import asyncio
import json
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed

rooms = {}  # room name -> {connection: the queue of messages waiting for it}


def where_and_who(websocket):
    """The room (the URL's path) and the name (its ?name=) a client asks for."""
    url = urlsplit(websocket.request.path)
    room = url.path.strip("/") or "lobby"
    name = parse_qs(url.query).get("name", ["anonymous"])[0]
    return room, name


async def deliver(room, message):
    """Put a message in the queue of every member of the room, in this process."""
    for queue in rooms.get(room, {}).values():
        queue.put_nowait(message)


def make_chat(publish):
    """The chat handler; `publish(room, message)` takes each message to the room."""

    async def consume(websocket, room, name):
        try:
            async for text in websocket:
                await publish(room, json.dumps({"from": name, "text": text}))
        except ConnectionClosed:
            pass  # dropped without a goodbye: an end like any other

    async def produce(websocket, queue):
        try:
            while True:
                await websocket.send(await queue.get())
        except ConnectionClosed:
            pass  # the client left: consume() ends too

    async def chat(websocket):
        room, name = where_and_who(websocket)
        members = rooms.setdefault(room, {})
        members[websocket] = asyncio.Queue()
        tasks = []
        try:  # from here on, whatever happens, finally unregisters (lesson 04)
            await publish(room, json.dumps({"joined": name}))
            tasks = [
                asyncio.create_task(consume(websocket, room, name)),
                asyncio.create_task(produce(websocket, members[websocket])),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise what went wrong, if anything did
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # let them end (lesson 03)
            del members[websocket]
            await publish(room, json.dumps({"left": name}))

    return chat
