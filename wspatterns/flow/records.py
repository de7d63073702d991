"""What a flow stores, record by record: the types the recorder appends, named.

The recorder appends one record per event, as cheaply as it can (see
:mod:`~wspatterns.flow.recorder`); the views turn them into
:class:`~wspatterns.flow.events.Event` s when asked. Four kinds:

* :class:`MessageRecord`, a whole message sent or received: its time, its
  :class:`Meta`, its size and its first :data:`HEAD` bytes;
* :class:`LifeRecord`, anything else in the life of a connection (its
  opening, a close frame, its end, an error of its handler): time, meta,
  close code and detail;
* :class:`BroadcastRecord`, one message written to several connections in
  one ``broadcast()`` pass: the recorders of the server ends it was written
  to, in order, and those it passed over, with why;
* :data:`WEIGHT`, a marker that makes a broadcast weigh on the flow's cap
  (one for every :data:`~wspatterns.flow.recorder.FANOUT` deliveries); the
  views skip it.

A message's :class:`Meta` (kind, which end, sender, type) is the same for
every message one way on one end, so its records share one: a record is four
slots. No message index is stored: the views count it back from each end's
exact totals (:func:`~wspatterns.flow.events.count_back`).

Records are slotted classes rather than tuples: as cheap to keep (104 bytes
against 112), a few tens of nanoseconds more to make, and read by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, TypeAlias

from websockets.frames import Opcode

#: Bytes of each message a view shows at most; longer messages keep only these.
HEAD = 48

#: What an event is: a message, the opening handshake, a close frame, the end of
#: the TCP connection, an exception raised by the handler, or a connection that
#: ``broadcast()`` passed over.
Kind: TypeAlias = Literal["open", "message", "close", "end", "error", "skipped"]

#: One end of a connection: where an event was recorded, or who sent it.
Side: TypeAlias = Literal["server", "client"]


class Who(NamedTuple):
    """Which end of which connection: the connection's number in its flow, its server's
    and client's names, and the end (``at``)."""

    connection: int
    server: str
    client: str
    at: Side


class Meta(NamedTuple):
    """What a record says but its numbers; shared by the records of one way of one end."""

    kind: Kind
    who: Who
    sender: Side | None  # which end sent it (for an "end": which closed first, if either)
    type: str | None  # "text" or "binary" for a message


class End(Protocol):
    """One end of a connection as the records know it: its recorder, or its counts alone."""

    who: Who
    number: int
    sent: int
    received: int


@dataclass(slots=True, eq=False)
class MessageRecord:
    """A whole message, sent or received by the end its meta names."""

    time: int  # time.monotonic_ns()
    meta: Meta
    size: int  # bytes of the payload
    head: bytes  # its first HEAD bytes


@dataclass(slots=True, eq=False)
class LifeRecord:
    """Anything but a message: open, close (a close frame), end, error."""

    time: int
    meta: Meta
    code: int | None  # the close code, for close and end
    detail: str  # path (open), reason (close, end), the exception (error)


@dataclass(slots=True, eq=False)
class BroadcastRecord:
    """One ``broadcast()`` pass: a message, the ends it was written to, those it skipped."""

    time: int
    type: str
    size: int
    head: bytes
    recipients: list[End] = field(default_factory=list)  # in the order it wrote them
    skipped: list[tuple[End, str]] = field(default_factory=list)  # (end, why)

    @property
    def weight(self) -> int:
        """How many events it stands for: deliveries and skips."""
        return len(self.recipients) + len(self.skipped)


class CapWeight:
    """The type of :data:`WEIGHT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WEIGHT"


#: Put in the records for every FANOUT deliveries of a broadcast, so that the cap weighs them.
WEIGHT = CapWeight()

#: A record, as a flow stores it.
Record: TypeAlias = MessageRecord | LifeRecord | BroadcastRecord | CapWeight


def weight(record: Record) -> int:
    """How many events ``record`` stands for."""
    if isinstance(record, MessageRecord | LifeRecord):
        return 1
    return record.weight if isinstance(record, BroadcastRecord) else 0


def broadcast_record(
    time_ns: int,
    type_: str,
    size: int,
    head: bytes,
    recipients: list[End],
    skipped: list[tuple[End, str]],
) -> BroadcastRecord:
    """A broadcast's record, its message's head cut to :data:`HEAD` bytes."""
    return BroadcastRecord(time_ns, type_, size, head[:HEAD], recipients, skipped)


def by_opcode(text: Meta, binary: Meta) -> tuple[Meta | None, ...]:
    """``text`` and ``binary`` at the index of their opcode, None at every other opcode's.

    A frame's opcode indexes it directly: fewer steps per frame than comparing it."""
    table: list[Meta | None] = [None] * (max(Opcode) + 1)
    table[Opcode.TEXT], table[Opcode.BINARY] = text, binary
    return tuple(table)
