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


class InvalidArgumentError(WSPatternsError, ValueError):
    """A call was given a value it cannot use; the message says what it takes."""


class InvalidTargetError(InvalidArgumentError):
    """``connect()`` was given something that is not a server or a WebSocket URL."""


class InvalidNameError(InvalidArgumentError):
    """A client name the kit cannot use: empty, longer than 64 characters, or not printable."""


class WrongTypeError(WSPatternsError, TypeError):
    """A call was given a value of a kind it cannot use: a coroutine function where a
    coroutine was meant (``run(main)``), a dict where a message was."""


class InvalidHandlerError(WrongTypeError):
    """``serve()`` was given something websockets cannot call as a handler: not callable, a
    generator, or not taking exactly one argument, the connection."""


class NothingToShowError(WSPatternsError, ValueError):
    """A plot or a measure was asked of a flow or results that hold too little for it."""


class MissingFileError(WSPatternsError, FileNotFoundError):
    """A file the kit was asked for, or needs, is not there: a program, a solution,
    redis-server."""


class NothingListeningError(WSPatternsError, ConnectionRefusedError):
    """``connect()`` found nothing listening at its address: is the server running?"""


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


class HandlerNotAwaitableError(InvalidHandlerError):
    """A handler returned something websockets cannot await: ``def`` where ``async def`` was
    meant."""


class KitTimeoutError(WSPatternsError, TimeoutError):
    """A wait that the kit bounds (opening, stopping, ``run()``) ran out of time."""


class ProcessFailed(WSPatternsError, RuntimeError):
    """A child process of the kit (a program, a worker, redis-server) died, did not start, or
    stopped answering; the message says which and how."""


class NotStartedByKitError(WSPatternsError, RuntimeError):
    """The kit was asked to restart something it did not start (a Redis of your own)."""


class NoSuchWorkerError(WSPatternsError, IndexError):
    """A worker was asked for by a number that none of the workers has."""


class HubUnavailable(WSPatternsError, ConnectionError):
    """A publish–subscribe hub cannot reach its backend (Redis) right now."""


class BadRequest(WSPatternsError, ValueError):
    """A client's request to a hub is malformed; the message says how to write it."""
