import asyncio


def dropping_workers(consume, count):
    async def handler(websocket):
        queue = asyncio.Queue(count)

        async with asyncio.TaskGroup() as group:
            gone = group.create_task(websocket.wait_closed())  # done once the client is gone

            async def worker():
                while True:
                    message = await queue.get()
                    try:
                        if not gone.done():  # else nobody is there to hear it: drop it
                            await consume(message)
                    finally:
                        queue.task_done()

            team = [group.create_task(worker()) for _ in range(count)]
            try:
                async for message in websocket:
                    await queue.put(message)
            finally:
                # Closed or dropped: let each worker finish the message it holds (the
                # rest goes by quickly, dropped). Unless this task is being cancelled.
                if not asyncio.current_task().cancelling():
                    await queue.join()
                for task in team:
                    task.cancel()

    return handler
