"""What the demo saw: one :class:`Tick` per refresh, and the run's summary.

A tick is built from :meth:`procpool.TaskManager.dump_stats` and the feeder's
counts. The :class:`Recorder` keeps them (for the plot) and notices burst
workers arriving and leaving by their worker ids, between two ticks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from procpool.demo.feeder import Counts


@dataclass(frozen=True)
class Tick:
    """The pool at one moment of the run (``t`` seconds after the load started)."""

    t: float
    target_rate: float  # tasks/s the pattern asks for now
    base_workers: int
    burst_workers: int
    busy_workers: int
    starting_workers: int
    queued_tasks: int
    priority_tasks: int
    arrival_rate: float  # tasks/s measured by the pool
    completion_rate: float
    p95_ms: float  # 95th percentile execution time so far
    counts: Counts
    #: recent tasks' CPU seconds per wall second (bursting holds at the cores near 1)
    cpu_share: float | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def build(cls, t: float, target_rate: float, dump: dict[str, Any], counts: Counts) -> Tick:
        stats, metrics = dump["stats"], dump["metrics"]
        return cls(
            t=t,
            target_rate=target_rate,
            base_workers=stats["base_workers"],
            burst_workers=stats["burst_workers"],
            busy_workers=stats["busy_workers"],
            starting_workers=stats["starting_workers"],
            queued_tasks=stats["queued_tasks"],
            priority_tasks=stats["priority_tasks"],
            arrival_rate=metrics["task_arrival_rate"] or 0.0,
            completion_rate=metrics["task_completion_rate"] or 0.0,
            p95_ms=(metrics["p95_execution_time"] or 0.0) * 1000,
            counts=counts,
            cpu_share=metrics.get("cpu_share"),
            processes=dump["processes"],
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["counts"]
        data = {"type": "tick", **data}
        for key in ("t", "target_rate", "arrival_rate", "completion_rate", "p95_ms"):
            data[key] = round(data[key], 3)
        del data["processes"]
        data.update(asdict(self.counts))
        data["processes"] = self.processes  # last: the long part
        return data


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class ScaleEvent:
    t: float
    kind: str  # "start": a burst worker appeared; "stop": it left (retired or died)
    worker_id: int


@dataclass
class Recorder:
    """Every tick of the run, and the burst workers seen coming and going."""

    ticks: list[Tick] = field(default_factory=list)
    events: list[ScaleEvent] = field(default_factory=list)
    _burst: set[int] = field(default_factory=set)  # live burst worker ids at the last tick

    def add(self, tick: Tick) -> None:
        self.ticks.append(tick)
        live = {
            p["worker_id"] for p in tick.processes
            if p["role"] == "burst" and p["state"] != "leaving"
        }
        self.events += [ScaleEvent(tick.t, "start", w) for w in sorted(live - self._burst)]
        self.events += [ScaleEvent(tick.t, "stop", w) for w in sorted(self._burst - live)]
        self._burst = live

    def summary(self, *, elapsed: float, counts: Counts, interrupted: bool) -> dict[str, Any]:
        """The run in one JSON-ready dict."""
        ticks = self.ticks
        return {
            "type": "summary",
            "duration_seconds": round(elapsed, 3),
            "interrupted": interrupted,
            "tasks_submitted": counts.submitted,
            "tasks_completed": counts.completed,
            "tasks_failed": counts.failed,
            "tasks_crashed": counts.crashed,
            "tasks_cancelled": counts.cancelled,
            "max_burst_workers": max((t.burst_workers for t in ticks), default=0),
            "max_queued_tasks": max((t.queued_tasks + t.priority_tasks for t in ticks),
                                    default=0),
            "p95_ms": round(ticks[-1].p95_ms, 3) if ticks else 0.0,
            "cpu_share": _rounded(ticks[-1].cpu_share if ticks else None),
            "burst_workers_started": sum(1 for e in self.events if e.kind == "start"),
            "burst_workers_stopped": sum(1 for e in self.events if e.kind == "stop"),
            "scale_events": [
                {"t": round(e.t, 3), "event": e.kind, "worker_id": e.worker_id}
                for e in self.events
            ],
        }
