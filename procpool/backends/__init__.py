"""Backends: where worker processes run, behind one public seam.

:class:`Backend` is the abstract class every backend implements (its
docstring is the contract); the events it reports and the task it is handed
are below. :class:`LocalBackend` (processes on this machine) is the default;
pass another to ``TaskManager(config, backend=...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from procpool.backends.base import (
    Backend,
    Event,
    TaskOutcome,
    TaskSpec,
    WorkerCreateFailed,
    WorkerGone,
    WorkerLeaving,
    WorkerReady,
    WorkerResults,
    WorkerStarted,
)

if TYPE_CHECKING:
    from procpool.backends.local import LocalBackend

__all__ = [
    "Backend",
    "Event",
    "LocalBackend",
    "TaskOutcome",
    "TaskSpec",
    "WorkerCreateFailed",
    "WorkerGone",
    "WorkerLeaving",
    "WorkerReady",
    "WorkerResults",
    "WorkerStarted",
]


def __getattr__(name: str) -> Any:
    """``LocalBackend`` loads on first use: a worker importing this package skips it."""
    if name == "LocalBackend":
        from procpool.backends.local import LocalBackend

        return LocalBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
