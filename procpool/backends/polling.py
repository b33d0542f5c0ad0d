"""Waiting for a pipe: poll it for a learnt window (:mod:`procpool.policy.spin`), then sleep;
and the pipe that wakes a thread asleep in ``select``.

Used on both ends of a round trip: by a worker waiting for its next task, and
by a caller's thread waiting for its task's result (``LocalBackend.collect``).
While it polls, the thread gives its CPU to any other thread that wants it
(``sched_yield``), so the window only uses a CPU nobody else needed.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable
from time import monotonic

from procpool.policy.spin import SpinWindow

_give_way: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


def spin_until_readable(poller: select.poll, seconds: float) -> bool:
    """Poll without sleeping for up to ``seconds``; True once something is readable."""
    deadline = monotonic() + seconds
    while not poller.poll(0):
        if monotonic() >= deadline:
            return False
        _give_way()
    return True


def readable_within(fd: int, timeout: float, window: SpinWindow | None = None) -> bool:
    """True once ``fd`` has data (or its end closed) within ``timeout`` seconds;
    polls for ``window``'s width first, and tells ``window`` how long it waited."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    started = monotonic()
    ready = False
    if window is not None and window.seconds:
        ready = spin_until_readable(poller, window.seconds)
    if not ready:
        ready = bool(poller.poll(max(0, int(timeout * 1000) + 1)))
    if window is not None:
        window.waited(monotonic() - started)
    return ready


class WakeUpPipe:
    """A pipe whose read end sits in a selector: any thread wakes the one asleep there
    (or, given ``write_fd``, ``signal.set_wakeup_fd`` does on a signal).

    One byte per sleep at most: a waker that finds a wake-up pending writes
    nothing, so the pipe never fills with wake-ups nobody reads.
    """

    def __init__(self) -> None:
        self.fd, self.write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self.write_fd, False)
        self._pending = False

    def wake(self) -> None:
        """Any thread."""
        if not self._pending:
            self._pending = True
            try:
                os.write(self.write_fd, b"\0")
            except OSError:
                pass  # full (a wake-up is pending) or closed

    def drain(self) -> None:
        """The sleeping thread, once woken."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass
        # Cleared only after draining: a waker that finds the flag still set knows
        # the woken thread has yet to return and look at what it was woken for.
        self._pending = False

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.write_fd)
