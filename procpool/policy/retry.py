"""The retry rule: when may a failed task run again?

Only failures that say nothing about the task itself earn a retry: its
worker was unhealthy (``check_health`` returned False) or died under it.
A task's ordinary exception is its answer, never retried. ``*_once`` tasks
are never retried at all. ``max_retries=0`` means no retries (the Go original
silently turned 0 into 3).
"""

from __future__ import annotations


def may_retry(*, once: bool, retries_done: int, max_retries: int) -> bool:
    """True when a task that failed on a broken worker should run again."""
    return not once and retries_done < max_retries
