"""Waiting for a pipe: poll it for a learnt window (:mod:`procpool.policy.spin`), then sleep.

Used on both ends of a round trip: by a worker waiting for its next task, and
by a caller's thread waiting for its task's result (``LocalBackend.collect``).
While it polls, the thread gives its CPU to any other thread that wants it
(``sched_yield``), so the window only uses a CPU nobody else needed.
"""

from __future__ import annotations

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
