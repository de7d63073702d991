"""The kit's few settings, on the lowest floor: every module may import them.

``TIMEOUT`` bounds what the kit adds (opening a client, ``stop()``,
``wait_closed()``, ``run()``, its own checkers); set ``WSPATTERNS_TIMEOUT`` to
change it. It never bounds ``recv()``: that waits as long as websockets' own does.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from websockets.asyncio.server import ServerConnection

#: Seconds a wait of the kit may take before it gives up, unless told otherwise.
TIMEOUT: float = float(os.environ.get("WSPATTERNS_TIMEOUT", "10"))

#: Seconds a handler gets to return after its connection is closed by ``stop()``.
STOP_GRACE: float = 2.0

#: What websockets calls for each connection: ``async def handler(websocket)``.
Handler: TypeAlias = Callable[[ServerConnection], Awaitable[None]]
