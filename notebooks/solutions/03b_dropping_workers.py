import asyncio


def dropping_workers(consume, count):
    async def handler(websocket):
        queue = asyncio.Queue()

        async def worker():
            while True:
                message = await queue.get()
                try:
                    await consume(message)
                finally:
                    queue.task_done()

        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(worker()) for _ in range(count)]
            try:
                async for message in websocket:
                    queue.put_nowait(message)
            finally:
                while not queue.empty():  # the client left: drop what nobody has started
                    queue.get_nowait()
                    queue.task_done()
                await queue.join()  # let each worker finish the message it holds
                for task in workers:
                    task.cancel()

    return handler
