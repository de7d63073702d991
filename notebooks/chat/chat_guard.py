import asyncio
import os
import secrets
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from chat_server import answer_http, main

TOKEN = os.environ["CHAT_TOKEN"].encode()  # from the environment: a command line is public


def from_this_site(request):
    """No Origin (not a browser), or a page served by the host this request was sent to."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("Host")


def guarded(connection, request):
    """chat_server's answer first; then a WebSocket handshake needs this site and the token."""
    answer = answer_http(connection, request)
    if answer is not None:  # the health check, or the page
        return answer
    if not from_this_site(request):
        return connection.respond(HTTPStatus.FORBIDDEN, "pages from other sites may not connect\n")
    token = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
    if not secrets.compare_digest(token.encode(), TOKEN):
        return connection.respond(HTTPStatus.FORBIDDEN, "a valid token is needed\n")
    return None


if __name__ == "__main__":
    asyncio.run(main(process_request=guarded))  # chat_server.py's program, with the guard
