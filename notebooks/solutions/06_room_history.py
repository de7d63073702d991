import json
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import broadcast


def chat_with_history(members, history):
    async def chat(websocket):
        query = urlsplit(websocket.request.path).query
        name = parse_qs(query).get("name", ["anonymous"])[0]
        # No await between the history and joining: nobody can speak in between.
        for message in history:
            broadcast([websocket], message)  # to the newcomer alone, without waiting
        members.add(websocket)
        try:
            async for text in websocket:
                message = json.dumps({"from": name, "text": text})
                history.append(message)
                broadcast(members, message)
        finally:
            members.remove(websocket)

    return chat
