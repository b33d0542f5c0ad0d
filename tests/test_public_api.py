"""The public face: exports, the error hierarchy, and a silent logger by default."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys

import procpool
from procpool import errors


def test_exports_are_exactly_the_documented_names() -> None:
    assert set(procpool.__all__) == {
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
    }
    for name in procpool.__all__:
        assert getattr(procpool, name) is not None


def test_errors_build_on_the_standard_hierarchy() -> None:
    assert issubclass(errors.ShutdownError, RuntimeError)
    assert issubclass(errors.TaskTimeoutError, TimeoutError)
    assert issubclass(errors.WorkerCrashedError, concurrent.futures.process.BrokenProcessPool)
    assert issubclass(errors.TaskPicklingError, TypeError)
    assert issubclass(errors.BrokenPoolError, concurrent.futures.BrokenExecutor)
    for name in (
        "ShutdownError",
        "ResourceCreationError",
        "WorkerCrashedError",
        "TaskTimeoutError",
        "MaxRetriesExceededError",
        "RemoteError",
        "TaskPicklingError",
    ):
        assert issubclass(getattr(errors, name), errors.ProcPoolError)


def test_crash_error_names_the_signal() -> None:
    crash = errors.WorkerCrashedError(123, -9, "task 7 (f)")
    assert crash.signal_name == "SIGKILL"
    assert "signal SIGKILL" in str(crash)
    assert "pid 123" in str(crash)
    assert errors.WorkerCrashedError(5, 3, "t").signal_name is None


def test_importing_is_light_and_logging_is_off_by_default() -> None:
    script = (
        "import sys\n"
        "from loguru import logger\n"
        "seen = []\n"
        "logger.remove()\n"
        "logger.add(seen.append, level='DEBUG')\n"
        "import procpool\n"
        "talk = lambda: exec('logger.info(1)', {'__name__': 'procpool.x', 'logger': logger})\n"
        "talk()\n"
        "assert seen == [], seen\n"
        "logger.enable('procpool')\n"
        "talk()\n"
        "assert len(seen) == 1, seen\n"
        "assert 'dask' not in sys.modules and 'matplotlib' not in sys.modules\n"
        "assert 'rich' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
