"""Config validation: a wrong value names the field and what it accepts."""

from __future__ import annotations

from typing import Any

import pytest

from procpool import Config
from procpool.config import default_start_method
from tests import tasks


def make(**overrides: Any) -> Config[Any]:
    return Config(on_create=tasks.make_plain, **overrides)


@pytest.mark.parametrize(
    ("field", "value", "error", "words"),
    [
        ("worker_count", 0, ValueError, "worker_count must be >= 1"),
        ("worker_count", 2.5, TypeError, "worker_count must be an int"),
        ("worker_count", True, TypeError, "worker_count must be an int"),
        ("max_worker_count", 1, ValueError, "max_worker_count must be >= 2"),
        ("burst_interval", -0.1, ValueError, "burst_interval must be a finite number >= 0"),
        ("burst_interval", "fast", TypeError, "burst_interval must be a number of seconds"),
        ("burst_cooldown", -1, ValueError, "burst_cooldown must be a finite number >= 0"),
        ("burst_cooldown", None, TypeError, "burst_cooldown must be a number of seconds"),
        ("max_retries", -1, ValueError, "max_retries must be >= 0"),
        ("resource_pool_size", -1, ValueError, "resource_pool_size must be >= 0"),
        ("start_method", "threads", ValueError, "start_method must be None or one of"),
        ("task_timeout", 0, ValueError, "task_timeout must be a finite number > 0"),
        ("task_timeout", float("inf"), ValueError, "task_timeout must be a finite number"),
        ("max_tasks_per_worker", 0, ValueError, "max_tasks_per_worker must be >= 1"),
        ("max_memory_per_worker", 0, ValueError, "max_memory_per_worker must be >= 1"),
        ("metrics_window", 0, ValueError, "metrics_window must be a finite number > 0"),
        ("metrics_window", None, TypeError, "metrics_window must be a number of seconds"),
        ("on_destroy", "close", TypeError, "on_destroy must be a callable or None"),
        ("check_health", 3, TypeError, "check_health must be a callable or None"),
        ("stats_dump_path", 7, TypeError, "stats_dump_path must be a path or None"),
        ("stats_dump_path", "no-such-folder/stats.json", ValueError,
         "stats_dump_path: folder .*no-such-folder.* does not exist"),
    ],
)
def test_a_wrong_value_names_the_field(field: str, value: Any, error: type, words: str) -> None:
    overrides = {field: value}
    if field == "max_worker_count":
        overrides["worker_count"] = 2
    with pytest.raises(error, match=words):
        make(**overrides)


def test_on_create_is_required_and_callable() -> None:
    with pytest.raises(TypeError, match="on_create must be a callable"):
        Config(on_create=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Config()  # type: ignore[call-arg]


def test_defaults_are_safe() -> None:
    config = make()
    assert config.worker_count >= 1
    assert config.max_retries == 0  # zero means zero
    assert not config.bursting  # no max_worker_count: no bursting
    assert config.effective_start_method == default_start_method()
    assert default_start_method() in ("forkserver", "spawn")


def test_bursting_needs_room_and_an_interval() -> None:
    assert make(worker_count=2, max_worker_count=4).bursting
    assert not make(worker_count=2, max_worker_count=2).bursting
    assert not make(worker_count=2, max_worker_count=4, burst_interval=0).bursting
    assert not make(worker_count=2, max_worker_count=4, burst_interval=None).bursting


def test_config_is_frozen() -> None:
    config = make()
    with pytest.raises(AttributeError):
        config.worker_count = 5  # type: ignore[misc]
