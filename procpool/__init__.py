"""procpool: a process pool whose workers each own a heavy resource.

Logging goes through loguru and is off by default; turn it on with
``from loguru import logger; logger.enable("procpool")``.

Public names load on first use, so that a worker process, which imports
this package to reach its entry point, does not pay for the supervisor.
"""

from __future__ import annotations

import importlib
from multiprocessing import current_process
from typing import TYPE_CHECKING, Any

# Switch procpool's logging off at import, before a user can switch it on.
# A worker process being bootstrapped by multiprocessing skips this: it logs
# nothing, and importing loguru would add most of a worker's start-up time.
if not getattr(current_process(), "_inheriting", False):
    from procpool import _log  # noqa: F401

__version__ = "0.1.0"

_WHERE = {
    "BrokenPoolError": "procpool.errors",
    "Config": "procpool.config",
    "Executor": "procpool.executor",
    "MaxRetriesExceededError": "procpool.errors",
    "Metrics": "procpool.metrics",
    "MetricsCollector": "procpool.metrics",
    "ProcPoolError": "procpool.errors",
    "RemoteError": "procpool.errors",
    "RemoteTraceback": "procpool.errors",
    "ResourceCreationError": "procpool.errors",
    "ShutdownError": "procpool.errors",
    "Stats": "procpool.supervisor",
    "TaskFuture": "procpool.tasks",
    "TaskManager": "procpool.manager",
    "TaskPicklingError": "procpool.errors",
    "TaskStamps": "procpool.metrics",
    "TaskTimeoutError": "procpool.errors",
    "WorkerCrashedError": "procpool.errors",
}

__all__ = [
    "BrokenPoolError",
    "Config",
    "Executor",
    "MaxRetriesExceededError",
    "Metrics",
    "MetricsCollector",
    "ProcPoolError",
    "RemoteError",
    "RemoteTraceback",
    "ResourceCreationError",
    "ShutdownError",
    "Stats",
    "TaskFuture",
    "TaskManager",
    "TaskPicklingError",
    "TaskStamps",
    "TaskTimeoutError",
    "WorkerCrashedError",
    "__version__",
]

if TYPE_CHECKING:
    from procpool.config import Config
    from procpool.errors import (
        BrokenPoolError,
        MaxRetriesExceededError,
        ProcPoolError,
        RemoteError,
        RemoteTraceback,
        ResourceCreationError,
        ShutdownError,
        TaskPicklingError,
        TaskTimeoutError,
        WorkerCrashedError,
    )
    from procpool.executor import Executor
    from procpool.manager import TaskManager
    from procpool.metrics import Metrics, MetricsCollector, TaskStamps
    from procpool.supervisor import Stats
    from procpool.tasks import TaskFuture


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'procpool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
