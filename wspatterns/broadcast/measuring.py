"""What the broadcast experiment measures, and how: stamped messages, latencies, memory.

A message carries the time it was made (:func:`stamped_message`); whoever receives
it knows how late it is (:func:`latency_ns`). A :class:`LatencyLog` keeps those
latencies while a measuring window is open and sums them up as percentiles
(:func:`percentile`, by nearest rank, as upstream's experiment does).
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

from websockets.typing import Data


def stamped_message(size: int, *, text: bool = False) -> bytes:
    """``size`` bytes starting with ``time.time_ns()`` in digits and a space, then random bytes.

    Random bytes, because compression would shrink anything else to nothing. With ``text``,
    random hex digits instead, so that the message is also UTF-8 text, as a Redis hub
    carries. A message is never shorter than its stamp (19 digits).
    """
    stamp = str(time.time_ns()).encode()
    if size <= len(stamp) + 1:
        return stamp
    rest = size - len(stamp) - 1
    filler = os.urandom((rest + 1) // 2).hex()[:rest].encode() if text else os.urandom(rest)
    return stamp + b" " + filler


def latency_ns(message: Data, received: int) -> int:
    """Nanoseconds from the stamp of ``message`` to ``received`` (a ``time.time_ns()``).

    Raises ValueError if ``message`` does not start with a stamp.
    """
    if isinstance(message, str):
        message = message.encode()
    return received - int(message.partition(b" ")[0])


def percentile(ordered: list[int], share: float) -> int:
    """The value below which ``share`` (0 to 1) of the sorted ``ordered`` values fall."""
    index = max(0, math.ceil(share * len(ordered)) - 1)  # nearest rank
    return ordered[index]


def resident_bytes() -> int:
    """Memory this process occupies right now (resident set), in bytes; where the system
    does not say, the most it has occupied so far."""
    try:
        with open("/proc/self/statm") as statm:  # Linux
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # Elsewhere only the peak is known (and on Linux it would include the parent's,
        # inherited through fork).
        import resource  # not on Windows, where the experiment's processes do not run anyway

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class LatencyLog:
    """Latencies of the messages ``count`` clients receive, while a window is open.

    :meth:`start` opens a window, :meth:`pause` closes it, :meth:`summary` says what
    arrived since it opened.
    """

    def __init__(self, count: int) -> None:
        self.received = [0] * count
        self.latencies: list[int] = []
        self.open = False
        self._since = self._cpu = 0.0

    def start(self) -> None:
        """Forget what was measured, and measure from now."""
        self.received = [0] * len(self.received)
        self.latencies = []
        self.open, self._since, self._cpu = True, time.perf_counter(), time.process_time()

    def pause(self) -> None:
        """Stop measuring; what was measured stays for :meth:`summary`."""
        self.open = False

    def record(self, client: int, message: Data) -> None:
        """Note that client number ``client`` received ``message`` now, if the window is open.

        Raises ValueError if ``message`` carries no stamp.
        """
        if self.open:
            self.latencies.append(latency_ns(message, time.time_ns()))
            self.received[client] += 1

    def summary(self) -> dict[str, Any]:
        """Messages received and latency percentiles (ms) since :meth:`start`; None without any."""
        ordered = sorted(self.latencies)
        wall = time.perf_counter() - self._since
        result: dict[str, Any] = {
            "event": "summary",
            "seconds": round(wall, 4),
            "cpu": round((time.process_time() - self._cpu) / wall, 4),  # of this whole process
            "messages": len(ordered),
            "fewest": min(self.received, default=0),  # by the client that received the fewest
        }
        for name, share in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
            value = percentile(ordered, share) / 1e6 if ordered else None
            result[f"{name}_ms"] = None if value is None else round(value, 3)
        return result
