"""Lesson 02, producer: where a producer stalled, read from its flow."""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

from ..errors import InvalidArgumentError, NothingToShowError
from ..flow import Flow, Side


class Pause(NamedTuple):
    """The longest pause in the messages one end sent or received: what came before, how long."""

    before: int  # messages before the pause
    bytes_before: int  # their payload bytes
    seconds: float  # from the last message before the pause to the first one after it
    after: int  # messages after the pause


def longest_pause(flow: Flow, at: Side = "server", way: str = "sent") -> Pause:
    """Find the longest pause between two messages the ``at`` end recorded as ``way``.

    ``at`` is "server" or "client", ``way`` "sent" or "received"; messages of every
    connection in ``flow`` count. Raises ValueError if that end recorded fewer than two.
    """
    if at not in ("server", "client") or way not in ("sent", "received"):
        raise InvalidArgumentError(
            f'at must be "server" or "client" and way "sent" or "received"; got {at!r}, {way!r}.'
        )
    sending = way == "sent"
    messages = [
        event
        for event in flow.events
        if event.kind == "message" and event.at == at and (event.sender == at) == sending
    ]
    if len(messages) < 2:
        raise NothingToShowError(
            f"the {at} {way} {len(messages)} message(s) in this flow; a pause needs two."
        )
    gaps = [later.time - earlier.time for earlier, later in pairwise(messages)]
    longest = max(range(len(gaps)), key=gaps.__getitem__)
    before = messages[: longest + 1]
    return Pause(
        len(before),
        sum(event.size for event in before),
        gaps[longest] / 1e9,
        len(messages) - len(before),
    )
