import asyncio
import signal

from websockets.asyncio.server import serve

from chat_guard import guarded
from chat_relay import listen, publish, subscribed
from chat_room import make_chat
from chat_server import PORT
from wspatterns.apps import recorded


async def main():
    pubsub = await subscribed()
    listener = asyncio.create_task(listen(pubsub))
    async with serve(
        make_chat(publish), "127.0.0.1", PORT, reuse_port=True,  # one port, several processes
        process_request=guarded, **recorded(),
    ) as server:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.close)
        await server.serve_forever()
    listener.cancel()


if __name__ == "__main__":
    asyncio.run(main())
