"""What the operating system buffers between a server and a client, made small and alike.

Lessons 03b and 04 need buffers to fill after about the same amount on any
machine, so that "the sender had to wait" happens at a size the lesson can name.
"""

from __future__ import annotations

import socket
from typing import Any

from ..errors import InvalidArgumentError
from ..runtime import Server


def limit_os_buffers(
    client: Any, server: Server, size: int = 64 * 1024, *, toward: str = "client"
) -> None:
    """Cap what the operating system buffers between ``server`` and kit ``client`` at ``size``.

    ``toward="client"`` caps the way to the client (the server's send buffer and the
    client's receive buffer), so that messages the client does not read pile up in the
    server's own buffer after about the same amount on any machine; ``toward="server"``
    caps the other way, for a server that does not read. Linux keeps twice ``size``;
    other systems round it. Call it right after connecting. Raises ValueError if
    ``server`` has no connection from that client, or ``toward`` is neither.
    """
    if toward not in ("client", "server"):
        raise InvalidArgumentError(f'toward is "client" or "server"; got {toward!r}')
    server.check_running()
    ends = server.connections_of(client.name)
    if not ends:
        raise InvalidArgumentError(
            f"server {server.name!r} has no connection from {client.name!r}."
        )
    sending, receiving = socket.SO_SNDBUF, socket.SO_RCVBUF
    if toward == "server":
        sending, receiving = receiving, sending
    for end in ends:
        end.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, sending, size)
    client.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, receiving, size)
