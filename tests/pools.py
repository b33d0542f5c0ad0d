"""The small pool most tests start, under a given start method."""

from __future__ import annotations

from typing import Any

from procpool import Config
from tests import tasks


def pool_config(start_method: str | None = None, **overrides: Any) -> Config[Any]:
    """2 plain workers, no reserved one; ``overrides`` replace any field."""
    options: dict[str, Any] = {
        "on_create": tasks.make_plain,
        "worker_count": 2,
        "resource_pool_size": 0,
        "start_method": start_method,
    }
    options.update(overrides)
    return Config(**options)
