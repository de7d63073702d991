def bye_consumer(consume):
    async def handler(websocket):
        async for message in websocket:
            if message == "bye":
                break  # returning from the handler closes the connection with code 1000
            await consume(message)

    return handler
