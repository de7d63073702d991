import asyncio
import os
import signal
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import serve

from chat_room import deliver, make_chat
from wspatterns.apps import recorded  # lets the kit draw this program's flow; {} otherwise

PORT = int(os.environ.get("PORT", "8000"))
PAGE = Path(__file__).with_name("chat.html").read_text()


def answer_http(connection, request):
    """Plain HTTP: a health check, or the page. None lets a WebSocket handshake through."""
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "OK\n")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        response = connection.respond(HTTPStatus.OK, PAGE)
        del response.headers["Content-Type"]  # respond() says text/plain
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response
    return None


async def main(process_request=answer_http):
    async with serve(
        make_chat(deliver), "127.0.0.1", PORT, process_request=process_request, **recorded()
    ) as server:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, server.close)  # close with 1001, then return
        print(f"serving on port {PORT}")
        await server.serve_forever()
    print("stopped: every handler has returned")


if __name__ == "__main__":
    asyncio.run(main())
