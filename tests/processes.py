"""This process's descendants, for the leak check and for counting a pool's processes."""

from __future__ import annotations

import psutil

#: multiprocessing's own shared helpers (one per interpreter, shared with any
#: other user of the forkserver start method): not procpool's processes.
_MP_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def descendants() -> dict[int, psutil.Process]:
    """Every descendant of this process but multiprocessing's own helpers.

    Only the helpers themselves are left out: workers forked *by* the
    forkserver share its command line, and they are ours to account for.
    """
    me = psutil.Process()
    helpers = set()
    for child in me.children():
        try:
            if any(helper in " ".join(child.cmdline()) for helper in _MP_HELPERS):
                helpers.add(child.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return {p.pid: p for p in me.children(recursive=True) if p.pid not in helpers}


def exited(pid: int) -> bool:
    """Gone, or exited and waiting to be reaped (an orphan's reaper, PID 1 in some
    containers, may never reap it): either way no longer running."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
