"""The kit's exceptions: one tree, each also the builtin it refines.

Catch :class:`WSPatternsError` for anything the kit raises on its own account;
catch the builtin (``OSError``, ``ValueError``, ``TimeoutError``...) as you
would without the kit, and it still works.
"""

from __future__ import annotations


class WSPatternsError(Exception):
    """Base class of every exception the kit raises itself."""


class PortInUseError(WSPatternsError, OSError):
    """The port asked for is already taken."""


class ServerStoppedError(WSPatternsError, RuntimeError):
    """A server handle was used after the server stopped."""


class InvalidTargetError(WSPatternsError, ValueError):
    """``connect()`` was given something that is not a server or a WebSocket URL."""


class KitTimeoutError(WSPatternsError, TimeoutError):
    """A wait that the kit bounds (opening, stopping, ``run()``) ran out of time."""


class ProcessFailed(WSPatternsError, RuntimeError):
    """A child process of the kit died or stopped answering; the message says which and how."""


class HubUnavailable(WSPatternsError, ConnectionError):
    """A publish–subscribe hub cannot reach its backend (Redis) right now."""


class BadRequest(WSPatternsError, ValueError):
    """A client's request to a hub is malformed; the message says how to write it."""
