"""The supervisor's record of each worker: role, state and what it was sent.

Supervisor thread only: other threads may read a field for a snapshot but
never write one. State changes go through :meth:`WorkerHandle.move`, which
refuses illegal transitions.
"""

from __future__ import annotations

import enum
from collections import deque
from time import monotonic

from procpool.tasks import Task


class WorkerRole(enum.Enum):
    BASE = "base"  # always kept, replaced when lost
    BURST = "burst"  # started by the burst loop under load, retired when idle
    RESERVED = "reserved"  # serves run_task only
    TEMPORARY = "temporary"  # started for one run_task when every reserved one is busy


class WorkerState(enum.Enum):
    STARTING = "starting"  # process started, inside on_create
    IDLE = "idle"
    BUSY = "busy"  # has tasks in flight
    LEAVING = "leaving"  # takes nothing more; exits soon
    GONE = "gone"

    # Members are singletons compared by identity, so hashing by identity is exact;
    # Enum's own hash (of the name, in Python) would cost two calls per move().
    __hash__ = object.__hash__


_ALLOWED = {
    WorkerState.STARTING: {WorkerState.IDLE, WorkerState.LEAVING, WorkerState.GONE},
    WorkerState.IDLE: {WorkerState.BUSY, WorkerState.LEAVING, WorkerState.GONE},
    WorkerState.BUSY: {WorkerState.IDLE, WorkerState.LEAVING, WorkerState.GONE},
    WorkerState.LEAVING: {WorkerState.GONE},
    WorkerState.GONE: set(),
}


class IllegalTransition(RuntimeError):
    """A worker was asked to move between states in a way that cannot happen."""


class WorkerHandle:
    __slots__ = (
        "abandon_at",
        "created_at",
        "drained_at",
        "id",
        "idle_since",
        "in_flight",
        "killed",
        "pid",
        "ready",
        "ready_at",
        "role",
        "started_at",
        "state",
        "tasks_done",
    )

    def __init__(self, worker_id: int, role: WorkerRole) -> None:
        self.id = worker_id
        self.role = role
        self.state = WorkerState.STARTING
        #: idle or busy: takes tasks (kept by move(); read for every dispatch)
        self.ready = False
        self.pid: int | None = None
        #: tasks sent and not yet reported, in the order the worker runs them
        self.in_flight: deque[Task] = deque()
        self.tasks_done = 0
        self.created_at = monotonic()
        #: when its process began (inside on_create from then on); None while waiting to start
        self.started_at: float | None = None
        self.ready_at: float | None = None
        #: when a leaving worker had nothing left to run, so on_destroy began
        self.drained_at: float | None = None
        #: True once it was sent SIGKILL (a hook outlived its timeout, or kill())
        self.killed = False
        #: told to leave while starting (a stop): terminated then unless ready first
        self.abandon_at: float | None = None
        self.idle_since = self.created_at

    def move(self, new: WorkerState) -> None:
        if new is self.state:
            return
        if new not in _ALLOWED[self.state]:
            raise IllegalTransition(f"worker {self.id}: {self.state.value} -> {new.value}")
        if new is WorkerState.IDLE:
            self.idle_since = monotonic()
        self.state = new
        self.ready = new is WorkerState.IDLE or new is WorkerState.BUSY

    @property
    def live(self) -> bool:
        """Counts toward the pool: starting, idle or busy (not leaving or gone)."""
        return self.state in (WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY)

