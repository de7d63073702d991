"""The one registry of everything the kit starts, and how it all stops.

Servers, clients, child processes, redis-servers and worker groups register
here under a kind and a key (a name, mostly). Starting something under a key
in use retires the old one first, so a cell run again replaces instead of
leaking. :func:`stop_all` stops everything; one hook does the same, quietly,
when the interpreter ends (a kernel restart, the end of a script).
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Hashable
from typing import Protocol

from ..errors import InvalidArgumentError

#: The order things stop in: clients before their servers, servers before the
#: processes and the Redis they may lean on.
KINDS = ("client", "server", "workers", "process", "redis")


class Owned(Protocol):
    """What the registry asks of everything it holds."""

    async def retire(self, why: str) -> None:
        """Stop (bounded in time), telling whoever uses the handle later ``why``."""

    def retire_now(self, why: str) -> None:
        """Stop from plain code, without awaiting: quick, quiet, best effort."""


_owned: dict[tuple[str, Hashable], Owned] = {}
_lock = threading.RLock()
_hooked = False
_exiting = False


def exiting() -> bool:
    """Whether the interpreter is ending: what stops then stops quietly, in a second or so."""
    return _exiting


def add(kind: str, key: Hashable, thing: Owned) -> None:
    """Hold ``thing`` under ``(kind, key)``; :func:`retire` what held that key before, first."""
    global _hooked
    if kind not in KINDS:
        raise InvalidArgumentError(f"unknown kind {kind!r}; one of {KINDS}")
    with _lock:
        _owned[kind, key] = thing
        if not _hooked:
            atexit.register(_stop_all_at_exit)
            _hooked = True


def get(kind: str, key: Hashable) -> Owned | None:
    """What is held under ``(kind, key)``, if anything."""
    with _lock:
        return _owned.get((kind, key))


def of_kind(kind: str) -> list[Owned]:
    """Everything held of ``kind``, oldest first."""
    with _lock:
        return [thing for (each, _), thing in _owned.items() if each == kind]


def forget(kind: str, key: Hashable, thing: Owned) -> bool:
    """Stop holding ``thing`` (it stopped on its own); False if another holds the key now."""
    with _lock:
        if _owned.get((kind, key)) is thing:
            del _owned[kind, key]
            return True
        return False


def take(kind: str, key: Hashable) -> Owned | None:
    """Stop holding whatever is under ``(kind, key)`` and return it, for the caller to stop."""
    with _lock:
        return _owned.pop((kind, key), None)


async def retire(kind: str, key: Hashable, why: str) -> None:
    """Stop what holds ``(kind, key)``, if anything: how a name in use is replaced."""
    old = take(kind, key)
    if old is not None:
        await old.retire(why)


def retire_now(kind: str, key: Hashable, why: str) -> None:
    """:func:`retire`, from plain (not async) code."""
    old = take(kind, key)
    if old is not None:
        old.retire_now(why)


async def stop_all() -> None:
    """Stop every server, client, worker, child process and redis-server the kit started."""
    for kind in KINDS:
        for thing in of_kind(kind):
            with _lock:
                keys = [key for key, each in _owned.items() if each is thing]
                for key in keys:
                    del _owned[key]
            await thing.retire("stop_all() stopped it")


def _stop_all_at_exit() -> None:
    """Stop what is left when the interpreter ends: quietly, within a few seconds."""
    global _exiting
    _exiting = True
    for kind in KINDS:
        for thing in of_kind(kind):
            with contextlib.suppress(Exception):
                thing.retire_now("the interpreter exited")
    with _lock:
        _owned.clear()
