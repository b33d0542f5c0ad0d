"""procpool: a process pool whose workers each own a heavy resource.

Logging goes through loguru and is off by default; turn it on with
``from loguru import logger; logger.enable("procpool")``.
"""

from loguru import logger as _logger

from procpool.config import Config
from procpool.errors import (
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
from procpool.manager import TaskManager
from procpool.metrics import Metrics, MetricsCollector, TaskStamps
from procpool.supervisor import Stats
from procpool.tasks import TaskFuture

_logger.disable("procpool")

__version__ = "0.1.0"

__all__ = [
    "Config",
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
