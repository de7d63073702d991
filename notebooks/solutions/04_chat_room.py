from websockets.asyncio.server import broadcast


def chat_room(connected):
    async def handler(websocket):
        name = await websocket.recv()
        broadcast(connected, f"{name} joined")  # before adding: everyone else
        connected.add(websocket)
        try:
            async for message in websocket:
                broadcast(connected - {websocket}, f"{name}: {message}")
        finally:
            connected.remove(websocket)  # first, so nobody sends to the departed
            broadcast(connected, f"{name} left")

    return handler
