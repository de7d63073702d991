"""Servers, clients and processes that live inside a running kernel, and how they all stop.

* :mod:`~wspatterns.runtime.server` — ``serve()`` and :class:`Server`;
* :mod:`~wspatterns.runtime.threads` — ``serve_in_thread()``, for clients that block;
* :mod:`~wspatterns.runtime.client` — ``connect()`` and :class:`Client`;
* :mod:`~wspatterns.runtime.running` — ``run()``, async code from plain code;
* :mod:`~wspatterns.runtime.processes` — the kit's child processes;
* :mod:`~wspatterns.runtime.lifecycle` — the one registry of all the above: names
  replaced on re-run, ``stop_all()``, and the end of the interpreter.
"""

from __future__ import annotations

from .client import Client, connect
from .lifecycle import stop_all
from .running import run
from .server import Server, serve, servers
from .threads import ThreadServer, serve_in_thread

__all__ = [
    "Client",
    "Server",
    "ThreadServer",
    "connect",
    "run",
    "serve",
    "serve_in_thread",
    "servers",
    "stop_all",
]
