"""How pools stop when a program is interrupted or ends.

Ctrl-C escalates one step at a time: a first one (or a block left by
``KeyboardInterrupt``/``SystemExit``) cancels what is queued and lets the
running tasks finish; the next one kills the workers. At interpreter exit a
pool nobody stopped drains its queue, unless the program is ending on an
uncaught Ctrl-C. Used by :class:`~procpool.TaskManager` (``__exit__``) and
by its ``atexit`` hook. Callers' threads only.
"""

from __future__ import annotations

import atexit
import sys
from time import monotonic

from procpool._log import logger
from procpool.supervisor import Supervisor
from procpool.supervisor import _live_supervisors as live_supervisors


def left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (None: no limit), never below 0."""
    return None if deadline is None else max(0.0, deadline - monotonic())


_ESCALATION = {
    1: "cancelling the queued tasks; the running ones finish (Ctrl-C again to kill them)",
    2: "killing the workers",
}


def stop_escalating(supervisors: list[Supervisor], cancel_queued: bool, reraise: bool) -> None:
    """Stop pools, one step harsher at each Ctrl-C: drain, cancel the queue, kill.

    Each step waits for every pool's workers and done-callbacks. With
    ``reraise``, a Ctrl-C that escalated is raised again once the pools are down.
    """
    level = 1 if cancel_queued else 0
    interrupt: KeyboardInterrupt | None = None
    while True:
        try:  # the log line is inside: a Ctrl-C right after it still escalates
            if level and supervisors:
                logger.warning("interrupted: {}", _ESCALATION[level])
            for supervisor in supervisors:
                if level >= 2:
                    supervisor.begin_kill()
                elif level == 1:
                    supervisor.cancel_queued()
                supervisor.begin_stop()
            for supervisor in supervisors:
                supervisor.join()
                if level < 2:
                    supervisor.callbacks.join()
            break
        except KeyboardInterrupt as exc:
            if level >= 2:
                raise
            level += 1
            interrupt = exc
    if interrupt is not None and reraise:
        raise interrupt


@atexit.register
def _stop_all_at_exit() -> None:
    """At interpreter exit, a manager nobody stopped drains its queue and stops.

    After an uncaught Ctrl-C it cancels what is queued instead and lets the
    running tasks finish; a Ctrl-C while it waits escalates (see ``__exit__``).
    """
    last = getattr(sys, "last_type", None)  # set by the traceback of an uncaught exception
    interrupted = isinstance(last, type) and issubclass(last, KeyboardInterrupt)
    stop_escalating(list(live_supervisors), cancel_queued=interrupted, reraise=False)
