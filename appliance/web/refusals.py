"""Anonymous refused requests, audited by aggregate.

Each refusal used to be a durable audit row: anonymous clients hammering ``/login``
without a CSRF token wrote one per request and slowed every other writer. Now the first
anonymous refusal of a kind (address and reason) in a window is a row, the rest of that
window are counted, and the count rides on the next row of that kind (``"held_back"``).
A signed-in principal's refusals stay one row each: they name who.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Length of a window (seconds).
WINDOW_S = 60.0
#: Kinds remembered at once; past that, those whose window has closed are forgotten.
MAX_KINDS = 10_000


class RefusalTally:
    """Which refusals to write, per web process (thread-safe)."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}  # kind -> (window start, held back)

    def admit(self, address: str, why: str) -> int | None:
        """``None`` when this refusal is only counted; else write a row now, carrying the
        number held back since the last row of its kind."""
        now, kind = self.clock(), (address, why)
        with self._lock:
            started, held_back = self._kinds.get(kind, (None, 0))
            if started is not None and now - started < self.window_s:
                self._kinds[kind] = (started, held_back + 1)
                return None
            if len(self._kinds) >= MAX_KINDS:
                self._kinds = {k: v for k, v in self._kinds.items() if now - v[0] < self.window_s}
            self._kinds[kind] = (now, 0)
            return held_back
