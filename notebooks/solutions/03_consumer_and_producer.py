import asyncio

from websockets.exceptions import ConnectionClosed


def consumer_and_producer(consume, produce):
    async def consumer_handler(websocket):
        async for message in websocket:
            await consume(message)

    async def producer_handler(websocket):
        while (message := await produce()) is not None:
            try:
                await websocket.send(message)
            except ConnectionClosed:
                break

    async def handler(websocket):
        consumer_task = asyncio.create_task(consumer_handler(websocket))
        producer_task = asyncio.create_task(producer_handler(websocket))
        done, pending = await asyncio.wait(
            [consumer_task, producer_task], return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # until they have stopped
        for task in done:
            task.result()  # raises what the task raised, so the error is not lost

    return handler
