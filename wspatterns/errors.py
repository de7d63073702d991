"""The kit's exceptions: one tree, each also the builtin it refines.

Catch :class:`WSPatternsError` for anything the kit raises on its own account;
catch the builtin (``OSError``, ``ValueError``, ``TimeoutError``...) as you
would without the kit, and it still works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from websockets.exceptions import InvalidMessage, InvalidStatus

if TYPE_CHECKING:
    from websockets.http11 import Response


class WSPatternsError(Exception):
    """Base class of every exception the kit raises itself."""


class PortInUseError(WSPatternsError, OSError):
    """The port asked for is already taken."""


class ServerStoppedError(WSPatternsError, RuntimeError):
    """A server handle was used after the server stopped."""


class InvalidTargetError(WSPatternsError, ValueError):
    """``connect()`` was given something that is not a server or a WebSocket URL."""


class InvalidNameError(WSPatternsError, ValueError):
    """A client name the kit cannot use: empty, longer than 64 characters, or not printable."""


class NotWebSocketServerError(WSPatternsError, InvalidMessage, ConnectionError):
    """``connect()`` reached something that does not answer the opening handshake in HTTP/1.1,
    or closed without answering. Still websockets' ``InvalidMessage``, as without the kit."""


class HandshakeRejectedError(WSPatternsError, InvalidStatus, ConnectionError):
    """``connect()`` was answered with an HTTP status other than 101: a web server's page, or a
    refusal. Still websockets' ``InvalidStatus``, with its ``response``."""

    def __init__(self, message: str, response: Response) -> None:
        ConnectionError.__init__(self, message)
        self.response = response

    def __str__(self) -> str:
        return str(self.args[0])


class HandlerNotAwaitableError(WSPatternsError, TypeError):
    """A handler returned something websockets cannot await: ``def`` where ``async def`` was
    meant."""


class KitTimeoutError(WSPatternsError, TimeoutError):
    """A wait that the kit bounds (opening, stopping, ``run()``) ran out of time."""


class ProcessFailed(WSPatternsError, RuntimeError):
    """A child process of the kit died or stopped answering; the message says which and how."""


class HubUnavailable(WSPatternsError, ConnectionError):
    """A publish–subscribe hub cannot reach its backend (Redis) right now."""


class BadRequest(WSPatternsError, ValueError):
    """A client's request to a hub is malformed; the message says how to write it."""
