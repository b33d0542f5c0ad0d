"""How long to watch a pipe before sleeping on it: learnt from the last waits.

Like a waiter who lingers at a table where the next order always comes
within a minute, and walks off at once from one where it never does. A thread
that sleeps in ``poll`` and is woken by a write pays the wake-up of a sleeping
CPU (tens of microseconds on a virtual machine), once on each side of a round
trip: more than a tiny task costs. Worse, Linux tends to run the woken reader
of a pipe on its writer's CPU, so a worker woken for the next chunk of a
``map`` can take the CPU of the caller that is slicing the chunk after it.
Polling the pipe for a short window first avoids both when the message comes
soon, and costs up to that window of CPU when it does not. So the window
follows the waits seen: a wait that ends a little after the window widens it
to cover such a wait; a wait longer than the window's ceiling (a pool between
bursts, a caller busy elsewhere) halves it, and a few of those close it. A
closed window only reopens on a wait short enough to be worth covering. Pure:
seconds in, seconds out.
"""

from __future__ import annotations

#: The widest window, in seconds: a little over a round trip of a tiny task
#: with the caller's own turn between two (60-150 us here). Waits longer than
#: this are slept through: the wake-up is then a small part of them. A worker
#: sent a task every 0.2 ms or more often keeps polling between them, on a
#: CPU it would otherwise leave idle.
MOST_SECONDS = 0.0002

#: The widest window of a worker between two chunks of a ``map``: the caller
#: sends the next chunk once it has taken the last one's values and sliced the
#: next. For chunks of thousands of tiny items a ceiling of 0.5 ms caught too
#: few of those waits to matter, 2 ms most (scripts/bench_peers.py loops, A/B).
#: Only while a ``map`` runs: a stream of separate tasks never opens a window
#: this wide.
MOST_BETWEEN_CHUNKS_SECONDS = 0.002

#: A window narrower than this closes: too short to catch anything.
LEAST_SECONDS = 0.00001

#: A window that widens covers the wait that asked for it with this margin
#: (and is at least LEAST_SECONDS wide).
MARGIN = 1.5


class SpinWindow:
    """The polling window of one waiting thread (or of whoever holds one lock)."""

    def __init__(self, most: float = MOST_SECONDS) -> None:
        #: Seconds to poll before sleeping; 0.0: sleep at once.
        self.seconds = 0.0
        #: The widest the window gets: longer waits are slept through.
        self.most = most

    def waited(self, seconds: float) -> None:
        """A wait (window included) ended after ``seconds``: adjust the next window."""
        if seconds <= self.seconds:
            return  # caught while polling: the window fits
        if seconds <= self.most:
            self.seconds = min(self.most, max(LEAST_SECONDS, seconds * MARGIN))
            return
        self.seconds /= 2
        if self.seconds < LEAST_SECONDS:
            self.seconds = 0.0
