from websockets.exceptions import ConnectionClosed


def finite_producer(produce):
    async def handler(websocket):
        while True:
            message = await produce()
            if message is None:
                break  # nothing more to send: returning closes the connection normally
            try:
                await websocket.send(message)
            except ConnectionClosed:
                break  # the client left

    return handler
