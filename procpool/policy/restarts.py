"""When may a failed worker start be tried again? Backoff plus a breaker.

Like a circuit breaker in a house: one trip is a blip, many in a short time
mean something is wrong, so stop flipping the switch and tell someone.
Each ``on_create`` failure doubles the wait before the next attempt (from
``base_delay`` up to ``max_delay`` seconds); ``max_failures`` failures within
``window`` seconds trip the breaker, which tells the supervisor to fail the
waiting tasks instead of letting them wait on a worker that never comes.
Attempts go on at ``max_delay`` so the pool heals when the cause goes away.
"""

from __future__ import annotations

from collections import deque


class RestartBreaker:
    """Pure: takes ``now`` (seconds), returns decisions. Supervisor thread only."""

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 30.0,
        base_delay: float = 0.05,
        max_delay: float = 5.0,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        # Bounded: only the last max_failures failure times can matter.
        self._failures: deque[float] = deque(maxlen=max_failures)
        self._consecutive = 0
        self._last_failure = 0.0

    def failure(self, now: float) -> None:
        self._failures.append(now)
        self._consecutive += 1
        self._last_failure = now

    def success(self) -> None:
        self._consecutive = 0

    @property
    def failing(self) -> bool:
        """True after a failure and until the next success."""
        return self._consecutive > 0

    def next_attempt(self, now: float) -> float:
        """Earliest moment a new start may be tried."""
        if self._consecutive == 0:
            return now
        delay = min(self.max_delay, self.base_delay * 2.0 ** (self._consecutive - 1))
        return self._last_failure + delay

    def tripped(self, now: float) -> bool:
        """True when ``max_failures`` failures fell within the last ``window`` seconds."""
        return (
            self._consecutive >= self.max_failures
            and len(self._failures) == self.max_failures
            and now - self._failures[0] <= self.window
        )
