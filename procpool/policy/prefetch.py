"""How many tasks a worker may hold at once: follow the tasks running now.

Like a waiter who carries several espressos on one tray but a roast one plate
at a time: tiny tasks travel in batches, so the pipe's round trip hides behind
useful work; anything that takes a millisecond or more goes one plate at a
time, with at most the next plate waiting on the side table while the first
is eaten (a task shorter than :data:`HOLD_NEXT_BELOW_SECONDS` may have one
more held behind it, so the worker never idles for a round trip between two
tasks). Priority stays exact to within that one task, and idle workers share
the load.

Durations are kept per kind of task (its function, or a ``map`` chunk of it),
estimated "fast up, slow down": one slow run makes that kind slow *at once*,
while a slow kind becomes tiny again only after several tiny runs. A kind
never seen is treated as slow until its first result. Pure: numbers in,
numbers out; the supervisor thread owns the one instance.
"""

from __future__ import annotations

from collections.abc import Hashable

#: How much already-sent work a worker may hold beyond the task it runs, in
#: seconds of the estimated task time. More hides the pipe's round trip behind
#: useful work (throughput for tiny tasks); less keeps priority strict and lets
#: new workers share the load sooner. A priority task waits behind at most
#: about this much normal work per worker.
PREFETCH_SECONDS = 0.001

#: Hard cap on tasks sent to one worker and not yet reported. Bounds what a
#: priority task may wait behind and what a crash may force to run again.
PREFETCH_LIMIT = 64

#: Tasks shorter than this (and not tiny) may have one more task held behind
#: them on their worker, as ProcessPoolExecutor always does: it saves the
#: round trip between two tasks (~0.3 ms, a few % of a 10 ms task), at the cost
#: of a priority task waiting behind one more task per worker, and of that held
#: task not moving to a worker that frees up first. Longer tasks gain nothing
#: worth that: they go strictly one at a time.
HOLD_NEXT_BELOW_SECONDS = 0.1

#: Weight of the older estimate when a kind runs faster than estimated. Closer
#: to 1 keeps a kind "slow" longer after one slow run (safer for priority);
#: closer to 0 batches it again sooner (throughput).
DECAY = 0.75

#: Kinds remembered before the table starts afresh: bounds memory when every
#: task is a new closure or lambda.
MAX_KINDS = 1024


class TaskDurations:
    """Recent duration per kind of task, in seconds, and the depth it allows."""

    def __init__(self) -> None:
        self._seconds: dict[Hashable, float] = {}

    def record(self, kind: Hashable, seconds: float) -> None:
        """A task of ``kind`` ran ``seconds`` (wall time in its worker)."""
        old = self._seconds.get(kind)
        if old is not None and seconds < old:  # slow down: faster runs only erode it
            seconds = DECAY * old + (1 - DECAY) * seconds
        # (fast up: a slower run is believed at once)
        if old is None and len(self._seconds) >= MAX_KINDS:
            self._seconds.clear()
        self._seconds[kind] = seconds

    def estimate(self, kind: Hashable) -> float | None:
        return self._seconds.get(kind)

    def is_tiny(self, kind: Hashable) -> bool:
        """True when tasks of ``kind`` are known to take less than PREFETCH_SECONDS."""
        seconds = self._seconds.get(kind)
        return seconds is not None and seconds < PREFETCH_SECONDS

    def depth(self, kind: Hashable) -> int:
        """Tasks of ``kind`` a worker may hold at once, the running one included.

        For a tiny kind, enough to cover about PREFETCH_SECONDS of work, never
        more than PREFETCH_LIMIT; 2 (the running one and the next) for a kind
        shorter than HOLD_NEXT_BELOW_SECONDS; 1 for a longer one or one not
        seen yet.
        """
        seconds = self._seconds.get(kind)
        if seconds is None or seconds >= HOLD_NEXT_BELOW_SECONDS:
            return 1
        if seconds >= PREFETCH_SECONDS:
            return 2
        if seconds <= 0:
            return PREFETCH_LIMIT
        return 1 + min(PREFETCH_LIMIT - 1, int(PREFETCH_SECONDS / seconds))

    def refill_below(self, kind: Hashable) -> int:
        """A worker whose last task is of ``kind`` takes more once it holds fewer than this.

        Half the depth for tiny kinds (a stream of submissions then travels in
        batches, and the half still held covers the round trip); the whole
        depth otherwise.
        """
        depth = self.depth(kind)
        return max(1, depth // 2) if self.is_tiny(kind) else depth
