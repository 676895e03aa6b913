"""When to restart a crashed runtime: exponential backoff and a crash-loop breaker (pure code).

A runtime launched with `restart="on-failure"` comes back after each crash, a little later
each time; after `max_crashes` crashes within `window_s` seconds it stays `failed`, because a
browser that dies on every start only burns CPU and fills logs.
"""

from __future__ import annotations

from collections import deque

import attrs


@attrs.define
class RestartPolicy:
    max_crashes: int = 5
    window_s: float = 60.0
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    _crashes: deque[float] = attrs.field(factory=deque, alias="_crashes")

    def record_crash(self, now: float) -> float | None:
        """Note a crash at `now` (monotonic seconds): the delay before restarting, or None
        when the breaker trips."""
        self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - self.window_s:
            self._crashes.popleft()
        recent = len(self._crashes)
        if recent >= self.max_crashes:
            return None
        return min(self.base_delay_s * float(2 ** (recent - 1)), self.max_delay_s)

    @property
    def recent_crashes(self) -> int:
        return len(self._crashes)

    def reset(self) -> None:
        """A launch asked for by a client starts the count afresh."""
        self._crashes.clear()
