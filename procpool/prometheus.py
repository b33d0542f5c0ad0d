"""Prometheus metrics of a pool: :class:`PoolCollector`, a ``prometheus_client`` collector.

Needs the optional extra ``procpool[prometheus]``; ``import procpool`` never
imports ``prometheus_client``, only ``import procpool.prometheus`` does::

    from prometheus_client import REGISTRY, start_http_server
    from procpool.prometheus import PoolCollector

    REGISTRY.register(PoolCollector(manager))
    start_http_server(9464)          # http://localhost:9464/metrics

Each scrape reads :meth:`~procpool.TaskManager.stats` and
:meth:`~procpool.TaskManager.metrics` once, so the figures are as fresh as
the scrape. What is exposed (times in seconds, rates in tasks per second):

==========================================  =======  ====================================
name                                        type     from
==========================================  =======  ====================================
``procpool_workers{role}``                  gauge    ``Stats.base_workers``,
                                                     ``burst_workers`` (``role`` is
                                                     ``base`` or ``burst``)
``procpool_active_workers``                 gauge    ``Stats.active_workers``
``procpool_busy_workers``                   gauge    ``Stats.busy_workers``
``procpool_starting_workers``               gauge    ``Stats.starting_workers``
``procpool_available_resources``            gauge    ``Stats.available_resources``
``procpool_queued_tasks{priority}``         gauge    ``Stats.priority_tasks``
                                                     (``priority="true"``),
                                                     ``queued_tasks`` (``"false"``)
``procpool_tasks_completed_total``          counter  ``Metrics.total_tasks_completed``
``procpool_tasks_failed_total``             counter  ``Metrics.total_tasks_failed``
``procpool_tasks_retried_total``            counter  ``Metrics.total_tasks_retried``
``procpool_task_arrivals_per_second``       gauge    ``Metrics.task_arrival_rate``
``procpool_task_completions_per_second``    gauge    ``Metrics.task_completion_rate``
``procpool_task_duration_seconds``          summary  ``Metrics.p95_execution_time``,
                                                     ``p99_execution_time``
                                                     (``quantile`` 0.95 and 0.99)
``procpool_task_duration_mean_seconds``     gauge    ``Metrics.average_execution_time``
``procpool_task_duration_min_seconds``      gauge    ``Metrics.min_execution_time``
``procpool_task_duration_max_seconds``      gauge    ``Metrics.max_execution_time``
``procpool_task_wait_mean_seconds``         gauge    ``Metrics.average_wait_time``
==========================================  =======  ====================================

The two rates are the pool's own, over ``Config.metrics_window``; over a
longer span, ``rate(procpool_tasks_completed_total[5m])`` says the same from
the counters. The execution-time figures cover the pool's whole life, and are
NaN until a task has ended. The summary has no ``_count`` and ``_sum``
samples: :class:`~procpool.Metrics` does not say how many durations its
percentiles were drawn from. ``success_rate`` and ``failure_rate`` are left
out, as PromQL derives them from the counters.

The collector holds the manager weakly: it never keeps a pool running. A
stopped manager still scrapes (no workers, the final totals); once the
manager is garbage-collected the collector yields nothing, so unregister it
when the pool goes away for good. One collector per registry: two pools in
one registry would expose the same names.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from procpool._extras import install_hint

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        f"procpool.prometheus needs prometheus_client ({exc}); install it with:"
        f" {install_hint('prometheus')}"
    ) from exc

if TYPE_CHECKING:
    from procpool.metrics import Metrics
    from procpool.supervisor import Stats

__all__ = ["PoolCollector"]

#: Quantiles of ``procpool_task_duration_seconds``, and the Metrics field of each.
QUANTILES = (("0.95", "p95_execution_time"), ("0.99", "p99_execution_time"))


class _Pool(Protocol):
    """What the collector reads: a :class:`~procpool.TaskManager` or anything as observable."""

    def stats(self) -> Stats: ...
    def metrics(self) -> Metrics: ...


class PoolCollector:
    """Exposes one pool's :class:`~procpool.Stats` and :class:`~procpool.Metrics` to Prometheus.

    Register it with a ``prometheus_client`` registry; see the module
    docstring for the names. If the pool's metrics cannot be read (a user
    ``Config.collector`` that raises), the scrape still carries the stats and
    the error is logged, so one broken figure never fails the whole scrape.
    """

    def __init__(self, manager: _Pool) -> None:
        self._manager = weakref.ref(manager)

    def describe(self) -> Iterator[Metric]:
        """The families :meth:`collect` yields, without samples (and without reading the pool)."""
        yield from _stats_families()
        yield from _metrics_families()

    def collect(self) -> Iterator[Metric]:
        """Read the pool once and yield its figures; nothing if the manager is gone."""
        manager = self._manager()
        if manager is None:
            return
        stats = manager.stats()
        try:
            metrics = manager.metrics()
        except Exception as exc:
            from procpool._log import logger

            logger.opt(exception=exc).warning(
                "procpool metrics could not be read for Prometheus; exposing stats only")
            metrics = None
        del manager  # hold the pool only while reading it
        yield from _stats_families(stats)
        if metrics is not None:
            yield from _metrics_families(metrics)


def _gauge(name: str, documentation: str, value: float | None, unit: str = "") -> Metric:
    family = GaugeMetricFamily(name, documentation, unit=unit)
    if value is not None:
        family.add_metric([], value)
    return family


def _stats_families(stats: Stats | None = None) -> Iterator[Metric]:
    s = stats
    workers = GaugeMetricFamily(
        "procpool_workers", "Live base and burst workers (starting, idle or busy), by role.",
        labels=["role"])
    queued = GaugeMetricFamily(
        "procpool_queued_tasks", "Tasks waiting in the queues; priority tasks all start first.",
        labels=["priority"])
    if s is not None:
        workers.add_metric(["base"], s.base_workers)
        workers.add_metric(["burst"], s.burst_workers)
        queued.add_metric(["true"], s.priority_tasks)
        queued.add_metric(["false"], s.queued_tasks)
    yield workers
    yield _gauge("procpool_active_workers", "Base and burst workers ready (idle or busy).",
                 None if s is None else s.active_workers)
    yield _gauge("procpool_busy_workers", "Base and burst workers running tasks.",
                 None if s is None else s.busy_workers)
    yield _gauge("procpool_starting_workers", "Workers of any role still inside on_create.",
                 None if s is None else s.starting_workers)
    yield _gauge("procpool_available_resources", "Idle reserved workers ready for run_task.",
                 None if s is None else s.available_resources)
    yield queued


def _metrics_families(metrics: Metrics | None = None) -> Iterator[Metric]:
    m = metrics
    counters = (
        ("procpool_tasks_completed", "Tasks that returned a result.", "total_tasks_completed"),
        ("procpool_tasks_failed", "Tasks that raised, or failed with no retry left.",
         "total_tasks_failed"),
        ("procpool_tasks_retried", "Retries of tasks whose worker crashed or was unhealthy.",
         "total_tasks_retried"),
    )
    for name, documentation, field in counters:
        counter = CounterMetricFamily(name, documentation)
        if m is not None:
            counter.add_metric([], getattr(m, field))
        yield counter
    yield _gauge("procpool_task_arrivals_per_second",
                 "Tasks submitted per second, over the pool's metrics window.",
                 None if m is None else m.task_arrival_rate)
    yield _gauge("procpool_task_completions_per_second",
                 "Tasks that ended (completed or failed) per second, over the metrics window.",
                 None if m is None else m.task_completion_rate)
    # Before the first task ends every duration figure is 0.0 in Metrics:
    # Prometheus says "no observation" with NaN.
    ended = m is not None and (m.total_tasks_completed + m.total_tasks_failed) > 0

    def duration(value: float) -> float:
        return value if ended else math.nan

    summary = Metric("procpool_task_duration_seconds",
                     "Execution time of tasks in a worker, over the pool's life.", "summary",
                     unit="seconds")
    if m is not None:
        for quantile, field in QUANTILES:
            summary.add_sample("procpool_task_duration_seconds", {"quantile": quantile},
                               duration(getattr(m, field)))
    yield summary
    for name, documentation, value in (
        ("procpool_task_duration_mean_seconds", "Mean execution time of tasks.",
         None if m is None else m.average_execution_time),
        ("procpool_task_duration_min_seconds", "Shortest execution time of a task.",
         None if m is None else m.min_execution_time),
        ("procpool_task_duration_max_seconds", "Longest execution time of a task.",
         None if m is None else m.max_execution_time),
        ("procpool_task_wait_mean_seconds", "Mean time tasks waited in the queue before starting.",
         None if m is None else m.average_wait_time),
    ):
        yield _gauge(name, documentation, None if value is None else duration(value), "seconds")
