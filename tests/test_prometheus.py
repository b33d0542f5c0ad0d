"""procpool.prometheus: a pool's Stats and Metrics, scraped the way Prometheus reads them."""

from __future__ import annotations

import gc
import importlib
import math
import re
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from procpool import Config, Metrics, Stats, TaskManager
from tests import tasks
from tests.gate import Gate

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from procpool.prometheus import PoolCollector  # noqa: E402

#: Prometheus's rule for metric names, and the base units this collector promises.
NAME = re.compile(r"^procpool_[a-z][a-z0-9_]*$")

STATS = Stats(base_workers=2, burst_workers=3, active_workers=4, busy_workers=5,
              queued_tasks=6, priority_tasks=7, available_resources=1, starting_workers=8)
METRICS = Metrics(
    task_arrival_rate=12.5, task_completion_rate=10.25, average_execution_time=0.04,
    min_execution_time=0.01, max_execution_time=0.2, p95_execution_time=0.09,
    p99_execution_time=0.15, average_wait_time=0.3, total_tasks_completed=90,
    total_tasks_failed=9, total_tasks_retried=4, success_rate=90 / 99, failure_rate=9 / 99,
)


class FakePool:
    """Stands for a TaskManager: set stats and metrics, count the reads."""

    def __init__(self, stats: Stats = STATS, metrics: Metrics | Exception = METRICS) -> None:
        self.stats_value = stats
        self.metrics_value = metrics
        self.reads = 0

    def stats(self) -> Stats:
        self.reads += 1
        return self.stats_value

    def metrics(self) -> Metrics:
        if isinstance(self.metrics_value, Exception):
            raise self.metrics_value
        return self.metrics_value


def scrape(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``generate_latest`` parsed back: (sample name, sorted labels) -> value; checks types."""
    text = generate_latest(registry).decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        assert NAME.match(family.name), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name == family.name + "_total"
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def registry_with(pool: Any) -> Any:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PoolCollector(pool))
    return registry


def test_every_stat_and_metric_is_exposed_under_its_prometheus_name() -> None:
    pool = FakePool()  # kept: the collector holds it weakly
    samples = scrape(registry_with(pool))
    assert samples == {
        ("procpool_workers", (("role", "base"),)): 2,
        ("procpool_workers", (("role", "burst"),)): 3,
        ("procpool_active_workers", ()): 4,
        ("procpool_busy_workers", ()): 5,
        ("procpool_starting_workers", ()): 8,
        ("procpool_available_resources", ()): 1,
        ("procpool_queued_tasks", (("priority", "true"),)): 7,
        ("procpool_queued_tasks", (("priority", "false"),)): 6,
        ("procpool_tasks_completed_total", ()): 90,
        ("procpool_tasks_failed_total", ()): 9,
        ("procpool_tasks_retried_total", ()): 4,
        ("procpool_task_arrivals_per_second", ()): 12.5,
        ("procpool_task_completions_per_second", ()): 10.25,
        ("procpool_task_duration_seconds", (("quantile", "0.95"),)): 0.09,
        ("procpool_task_duration_seconds", (("quantile", "0.99"),)): 0.15,
        ("procpool_task_duration_mean_seconds", ()): 0.04,
        ("procpool_task_duration_min_seconds", ()): 0.01,
        ("procpool_task_duration_max_seconds", ()): 0.2,
        ("procpool_task_wait_mean_seconds", ()): 0.3,
    }


def test_families_have_the_prometheus_types() -> None:
    pool = FakePool()
    text = generate_latest(registry_with(pool)).decode()
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["procpool_tasks_completed"] == "counter"
    assert types["procpool_tasks_failed"] == "counter"
    assert types["procpool_tasks_retried"] == "counter"
    assert types["procpool_task_duration_seconds"] == "summary"
    assert types["procpool_workers"] == types["procpool_queued_tasks"] == "gauge"
    assert "# HELP procpool_queued_tasks " in text


def test_describe_names_the_families_without_reading_the_pool() -> None:
    pool = FakePool()
    collector = PoolCollector(pool)
    described = {family.name for family in collector.describe()}
    assert pool.reads == 0
    assert all(not family.samples for family in collector.describe())
    collected = {family.name for family in collector.collect()}
    assert pool.reads == 1
    assert described == collected
    assert len(described) == 16


def test_durations_are_nan_before_any_task_ended() -> None:
    fresh = Metrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0.0, 0.0)
    pool = FakePool(metrics=fresh)
    samples = scrape(registry_with(pool))
    quantile = samples[("procpool_task_duration_seconds", (("quantile", "0.95"),))]
    assert math.isnan(quantile)
    assert math.isnan(samples[("procpool_task_duration_mean_seconds", ())])
    assert math.isnan(samples[("procpool_task_wait_mean_seconds", ())])
    assert samples[("procpool_tasks_completed_total", ())] == 0
    assert samples[("procpool_task_arrivals_per_second", ())] == 0


def test_a_failing_metrics_collector_leaves_the_stats_in_the_scrape() -> None:
    pool = FakePool(metrics=RuntimeError("collector is broken"))
    samples = scrape(registry_with(pool))
    assert samples[("procpool_workers", (("role", "base"),))] == 2
    assert samples[("procpool_queued_tasks", (("priority", "true"),))] == 7
    assert not [name for name, _ in samples if name.startswith("procpool_tasks_")]


def test_the_collector_does_not_keep_the_pool_alive() -> None:
    pool = FakePool()
    registry = registry_with(pool)
    gone = weakref.ref(pool)
    del pool
    gc.collect()
    assert gone() is None
    assert scrape(registry) == {}


def test_a_running_pool_then_a_stopped_one_scrape(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    config = Config(on_create=tasks.make_plain, worker_count=1, resource_pool_size=0)
    with TaskManager(config) as manager:
        registry = registry_with(manager)
        assert [manager.queue_task(tasks.double, i).result() for i in range(3)] == [0, 2, 4]
        with pytest.raises(tasks.BoomError):
            manager.queue_task(tasks.boom).result()
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        waiting = [manager.queue_task(tasks.double, 1), manager.queue_task(tasks.double, 2),
                   manager.queue_task_with_priority(tasks.double, 3)]
        running = scrape(registry)
        gate.open()
        assert blocker.result() > 0
        assert [future.result() for future in waiting] == [2, 4, 6]
    assert running[("procpool_workers", (("role", "base"),))] == 1
    assert running[("procpool_workers", (("role", "burst"),))] == 0
    assert running[("procpool_busy_workers", ())] == 1
    assert running[("procpool_queued_tasks", (("priority", "true"),))] == 1
    assert running[("procpool_queued_tasks", (("priority", "false"),))] == 2
    assert running[("procpool_tasks_completed_total", ())] == 3
    assert running[("procpool_tasks_failed_total", ())] == 1
    assert running[("procpool_tasks_retried_total", ())] == 0
    assert running[("procpool_task_arrivals_per_second", ())] > 0
    p95 = running[("procpool_task_duration_seconds", (("quantile", "0.95"),))]
    p99 = running[("procpool_task_duration_seconds", (("quantile", "0.99"),))]
    assert 0 < p95 <= p99 < 30

    assert manager.stopped
    stopped = scrape(registry)  # after stop: no workers, the final totals
    assert stopped[("procpool_workers", (("role", "base"),))] == 0
    assert stopped[("procpool_queued_tasks", (("priority", "false"),))] == 0
    assert stopped[("procpool_tasks_completed_total", ())] == 7


def test_a_missing_prometheus_client_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # "import" now fails
    monkeypatch.delitem(sys.modules, "prometheus_client.core", raising=False)
    monkeypatch.delitem(sys.modules, "procpool.prometheus")
    with pytest.raises(ImportError) as info:
        importlib.import_module("procpool.prometheus")
    assert 'pip install "procpool[prometheus]"' in str(info.value)
    assert 'pip install ".[prometheus]"' in str(info.value)


def test_importing_procpool_leaves_prometheus_client_alone() -> None:
    script = ("import sys, procpool\n"
              "procpool.TaskManager, procpool.Metrics\n"
              "assert 'prometheus_client' not in sys.modules\n"
              "import procpool.prometheus\n"
              "assert 'prometheus_client' in sys.modules\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
