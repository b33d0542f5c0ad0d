"""Dask backend: the same pool on the workers of a Dask distributed cluster.

One procpool worker is one Dask worker process with one thread. The backend
sends it Dask tasks pinned to that worker (``workers=[address]``, no other
allowed), which :mod:`procpool.backends.dask_worker` runs: identify the
process, build the resource, run each ``send`` as *one* Dask task (Dask costs
milliseconds per task, a batch pays that once), destroy the resource. With
one thread they run one at a time, in the order sent, so procpool's own
queues and prefetch keep priorities strict as they do locally.

Where the Dask workers come from: neither ``address`` nor ``cluster``: a
``LocalCluster`` the backend owns; ``cluster=``: a cluster object procpool
scales itself, growing with ``cluster.scale(n)`` and closing the very worker
whose procpool worker ended (never Dask's ``Adaptive``, which may skip plugin
teardown, dask/distributed#6961), so ``on_destroy`` always runs and bursting
works as locally; ``address=``: a running scheduler, whose Dask workers
procpool uses but cannot add to (bursting is off).

Dask futures' done-callbacks (Dask's callback thread) and the reading of the
scheduler's worker list (:class:`~procpool.backends.dask_cluster.SchedulerWatch`)
put items in one inbox; :meth:`DaskBackend.wait` handles them on the
supervisor thread, which alone changes the backend's records.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import uuid
from collections.abc import Sequence
from functools import partial
from time import monotonic
from typing import Any

from procpool._extras import install_hint

try:
    import distributed
except ImportError as exc:  # the extra is missing
    raise ImportError(f"procpool's Dask backend needs Dask distributed: {install_hint('dask')}"
                      ) from exc

from procpool._log import logger
from procpool.backends import dask_worker, wire
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
from procpool.backends.codec import decode_results, encode_batch
from procpool.backends.dask_cluster import (
    ClusterScaler,
    DaskWorker,
    DaskWorkerInfo,
    Op,
    Placement,
    SchedulerWatch,
    local_cluster,
    scheduler_helper,
)
from procpool.backends.worker import WorkerSpec
from procpool.config import Config

#: Seconds between two readings of the scheduler's worker list: how soon a lost
#: Dask worker is noticed (its running task failed) and a new one is used.
#: Shorter notices sooner; each reading costs the scheduler about a millisecond.
POLL_SECONDS = 0.1

#: Between SIGTERM and SIGKILL when a worker on this machine is terminated.
TERMINATE_GRACE_SECONDS = 0.2

#: How long a Dask worker told to end from afar may take to leave the scheduler's
#: list before its procpool worker is reported gone anyway (and it is never used again).
REMOTE_KILL_SECONDS = 10.0

_IDENTIFY, _CREATE, _BATCH, _DESTROY = "identify", "create", "batch", "destroy"
_WAKE = ("wake", None)


class DaskBackend(Backend):
    """Workers on a Dask distributed cluster: ``TaskManager(config, backend=DaskBackend())``.

    ``address``: a running scheduler (``"tcp://host:8786"``); ``cluster``: a
    cluster object procpool may scale; neither: a ``LocalCluster`` of this
    machine started for the pool, built with ``local_cluster_kwargs``
    (``memory_limit=``, ...). ``workers_timeout``: with ``address``, how long
    the pool waits for the Dask workers it needs at start, and a later start
    (a replacement, a ``run_task`` worker) for a free one before it fails.
    procpool must be installed on the Dask workers.
    """

    def __init__(self, address: str | None = None, cluster: Any = None, *,
                 workers_timeout: float = 60.0, **local_cluster_kwargs: Any) -> None:
        if address is not None and cluster is not None:
            raise ValueError("DaskBackend takes address= or cluster=, not both")
        if local_cluster_kwargs and (address is not None or cluster is not None):
            raise ValueError("LocalCluster arguments apply only without address= and cluster=")
        self._address = address
        self._cluster = cluster
        self._owned_cluster: Any = None
        self._cluster_kwargs = local_cluster_kwargs
        self._workers_timeout = workers_timeout
        self._token = uuid.uuid4().hex[:12]
        self._client: Any = None
        self._placement = Placement(ClusterScaler(None))
        self._watch: SchedulerWatch | None = None
        self._spec_bytes = b""
        self._machine = dask_worker.machine_id()
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_pending = False
        self._pending: list[Event] = []
        self._seq = itertools.count(1)
        self._workers: dict[int, DaskWorker] = {}
        self._helpers: dict[str, int] = {}  # read by any thread: replaced, never changed

    # -- opening and closing -------------------------------------------------------

    def open(self, config: Config[Any]) -> None:
        self._spec_bytes = wire.dumps(WorkerSpec.of(config))  # a hook that cannot travel
        wanted = config.worker_count + config.resource_pool_size
        cluster = self._cluster
        if self._address is None and cluster is None:
            cluster = self._owned_cluster = local_cluster(self._cluster_kwargs)
        self._client = distributed.Client(  # type: ignore[no-untyped-call]
            cluster if cluster is not None else self._address, set_as_default=False)
        self._placement = Placement(ClusterScaler(cluster))
        if cluster is None:
            if config.effective_max_workers > config.worker_count:
                logger.info("dask: connected to {} without a cluster object: procpool cannot"
                            " add Dask workers, so bursting is off (pass cluster= to let"
                            " procpool scale the cluster)", self._address)
            try:
                self._client.wait_for_workers(wanted, timeout=self._workers_timeout)
            except TimeoutError as exc:
                raise TimeoutError(f"the Dask scheduler at {self._address} has fewer than the"
                                   f" {wanted} workers the pool needs (worker_count +"
                                   f" resource_pool_size) after {self._workers_timeout} s"
                                   ) from exc
            self._helpers = scheduler_helper(self._client, self._machine)
        self._client.register_plugin(dask_worker.DestroyOnClose(self._token))
        self._watch = SchedulerWatch(self._client, self._inbox.put, POLL_SECONDS)
        self._watch.start()
        logger.info("dask: pool {} on {}", self._token,
                    self._address or type(cluster).__name__)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        client = self._client
        if client is None:
            return
        alive = [w for w in self._workers.values() if w.address is not None and not w.killed]
        for worker in alive:
            self._kill(worker)
        futures = [op.future for w in self._workers.values() for op in w.ops]
        try:
            if futures:
                client.cancel(futures)
            if self._owned_cluster is None:
                client.unregister_worker_plugin(f"procpool-{self._token}")
        except Exception as exc:
            logger.debug("dask: while closing: {!r}", exc)
        for worker in list(self._workers.values()):
            self._placement.release(worker, lost=True)
        self._workers.clear()
        client.close()
        if self._owned_cluster is not None:
            self._owned_cluster.close()
        self._client = None

    # -- starting and stopping workers -----------------------------------------------

    def start_worker(self, worker_id: int) -> None:
        worker = DaskWorker(worker_id)
        self._workers[worker_id] = worker
        self._placement.waiting.append(worker)
        self._bind_waiting()
        self._placement.balance()

    def _bind_waiting(self) -> None:
        for worker in self._placement.bind_waiting():
            self._submit(worker, _IDENTIFY, dask_worker.identify, with_key=False)
            self._submit(worker, _CREATE, dask_worker.create, self._spec_bytes)

    def retire(self, worker_id: int) -> None:
        worker = self._workers.get(worker_id)
        if worker is None or worker.retiring:
            return
        worker.retiring = True
        if worker.address is None:
            self._drop_waiting(worker)
        elif not worker.killed:
            self._submit(worker, _DESTROY, dask_worker.destroy)

    def terminate(self, worker_id: int, grace: float = TERMINATE_GRACE_SECONDS) -> None:
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        if worker.address is None:
            self._drop_waiting(worker)
        elif grace <= 0 or not worker.killed:
            self._kill(worker, grace)

    def _drop_waiting(self, worker: DaskWorker) -> None:
        """A start that never got a Dask worker ends before it began."""
        self._placement.waiting.remove(worker)
        self._end(worker, None, None, None, self._pending)

    def _kill(self, worker: DaskWorker, grace: float = 0.0) -> None:
        """End the Dask worker process: by signal when it is on this machine, else from
        its own event loop (a task that never returns cannot stop that)."""
        worker.killed = True
        assert worker.address is not None
        self._placement.unusable(worker.address)
        if worker.local and worker.pid is not None:
            try:
                os.kill(worker.pid, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
            except ProcessLookupError:
                pass
            if grace <= 0:
                self._end(worker, -signal.SIGKILL, None, self._gone_task(worker), self._pending)
            elif worker.kill_at is None:
                worker.kill_at = monotonic() + grace
            return
        try:
            self._client.run(dask_worker.kill_self, workers=[worker.address], wait=False)
        except Exception as exc:
            logger.warning("dask: could not end worker {}: {!r}", worker.address, exc)
        worker.give_up_at = monotonic() + REMOTE_KILL_SECONDS

    def _end(self, worker: DaskWorker, exitcode: int | None, destroy_error: str | None,
             running: int | None, events: list[Event]) -> None:
        """Report the worker gone, exactly once; forget what it was still sent."""
        if self._workers.pop(worker.worker_id, None) is None:
            return
        events.append(WorkerGone(worker.worker_id, exitcode, running, destroy_error))
        futures = [op.future for op in worker.ops]
        worker.ops.clear()
        if futures:
            try:
                self._client.cancel(futures)
            except Exception as exc:
                logger.debug("dask: cancelling {} futures failed: {!r}", len(futures), exc)
        self._placement.release(worker, lost=worker.killed or exitcode is None)

    def _on_workers(self, workers: dict[str, DaskWorkerInfo], events: list[Event]) -> None:
        """The scheduler's list: a bound worker missing from it was lost."""
        for worker in self._placement.update(workers):
            if not worker.killed:
                logger.warning("dask: worker {} (procpool worker {}) left the cluster",
                               worker.address, worker.worker_id)
            exitcode = -signal.SIGKILL if worker.killed else None
            self._end(worker, exitcode, None, self._gone_task(worker), events)
        now = monotonic()
        if not self._placement.scaler.enabled:  # nobody adds Dask workers: waits end
            for worker in self._placement.expired(now, self._workers_timeout):
                self._create_failed(worker, f"no free Dask worker (with one thread) within"
                                    f" {self._workers_timeout} s: add workers to the cluster,"
                                    " or pass cluster= to let procpool scale it", events)
        for worker in list(self._workers.values()):
            if worker.give_up_at is not None and now >= worker.give_up_at:
                logger.warning("dask: worker {} did not end when told to; giving it up",
                               worker.address)
                self._end(worker, None, None, self._gone_task(worker), events)
        self._bind_waiting()
        self._placement.balance()

    # -- work --------------------------------------------------------------------------

    def _submit(self, worker: DaskWorker, kind: str, fn: Any, *args: Any,
                task_ids: tuple[int, ...] = (), with_key: bool = True) -> None:
        seq = next(self._seq)
        key_args = ((self._token, worker.worker_id),) if with_key else ()
        future = self._client.submit(
            fn, *key_args, *args, key=f"procpool-{kind}-{self._token}-{worker.worker_id}-{seq}",
            workers=[worker.address], allow_other_workers=False, pure=False)
        worker.ops.append(Op(seq, kind, task_ids, future))
        future.add_done_callback(partial(self._on_done, worker.worker_id, seq))

    def _on_done(self, worker_id: int, seq: int, future: Any) -> None:
        """Dask's callback thread: fetch the outcome, hand it to the supervisor thread."""
        done_at = monotonic()
        if future.status == "cancelled":
            return
        try:
            value, ok = future.result(), True
        except BaseException as exc:  # the Dask task itself failed (a missing module?)
            value, ok = exc, False
        self._inbox.put(("op", (worker_id, seq, ok, value, done_at)))

    def send(self, worker_id: int, tasks: Sequence[TaskSpec]) -> list[tuple[int, BaseException]]:
        payload, sent, rejected = encode_batch(tasks)
        worker = self._workers.get(worker_id)
        if sent and worker is not None and not worker.killed:
            ids = tuple(t.task_id for t in sent)
            self._submit(worker, _BATCH, dask_worker.run_batch, ids, payload, task_ids=ids)
        return rejected

    def running_task(self, worker_id: int) -> tuple[int, float] | None:
        """The first task of the oldest batch not reported, from when it can have started.

        Told from here, not by the worker: a batch starts when the one before it
        has finished, so this is at most a round trip late. Batches of several
        tasks are of tiny tasks only (see procpool.policy.prefetch).
        """
        worker = self._workers.get(worker_id)
        if worker is None or not worker.ready or not worker.ops:
            return None
        op = worker.ops[0]
        if op.kind != _BATCH:
            return None
        return op.task_ids[0], max(op.sent_at, worker.last_done_at)

    def _gone_task(self, worker: DaskWorker) -> int | None:
        """What WorkerGone blames: the task of a batch of one, else (negated) the first of
        a batch, so the supervisor sends those again one by one."""
        op = worker.ops[0] if worker.ops and worker.ready else None
        if op is None or op.kind != _BATCH:
            return None
        return op.task_ids[0] if len(op.task_ids) == 1 else -op.task_ids[0]

    def pid(self, worker_id: int) -> int | None:
        worker = self._workers.get(worker_id)
        return worker.pid if worker is not None and worker.local else None

    def helper_processes(self) -> dict[str, int]:
        return self._helpers

    def worker_figures(self) -> dict[int, dict[str, Any]]:
        """What the scheduler reports of workers on other machines, by worker id:
        ``host``, ``cpu_percent`` and ``rss_bytes`` (psutil covers the local ones)."""
        return self._placement.figures(list(self._workers.values()))

    # -- events ------------------------------------------------------------------------

    def wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            self._inbox.put(_WAKE)

    def wait(self, timeout: float | None) -> list[Event]:
        events, self._pending = self._pending, []
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            now = monotonic()
            self._escalate(now, events)
            if events:
                block: float | None = 0.0
            else:
                block = None if deadline is None else max(0.0, deadline - now)
                kill_due = [w.kill_at for w in self._workers.values() if w.kill_at is not None]
                if kill_due:
                    until = max(0.0, min(kill_due) - now)
                    block = until if block is None else min(block, until)
            try:
                item = self._inbox.get(timeout=block) if block != 0.0 else \
                    self._inbox.get_nowait()
            except queue.Empty:
                if events or (deadline is not None and monotonic() >= deadline):
                    break
                continue
            woke = self._handle(item, events)
            while True:  # everything already there, in one go
                try:
                    woke = self._handle(self._inbox.get_nowait(), events) or woke
                except queue.Empty:
                    break
            if events or woke:
                break
        events += self._pending
        self._pending = []
        return events

    def _escalate(self, now: float, events: list[Event]) -> None:
        for worker in list(self._workers.values()):
            if worker.kill_at is not None and now >= worker.kill_at:
                worker.kill_at = None
                self._kill(worker, 0.0)
        events += self._pending
        self._pending = []

    def _handle(self, item: tuple[str, Any], events: list[Event]) -> bool:
        """Handle one inbox item; True for a wake-up."""
        kind, data = item
        if kind == "wake":
            self._wake_pending = False
            return True
        if kind == "workers":
            self._on_workers(data, events)
        else:
            worker_id, seq, ok, value, done_at = data
            self._on_op(worker_id, seq, ok, value, done_at, events)
        events += self._pending
        self._pending = []
        return False

    def _on_op(self, worker_id: int, seq: int, ok: bool, value: Any, done_at: float,
               events: list[Event]) -> None:
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        worker.done[seq] = (ok, value, done_at)
        while worker.ops and worker.ops[0].seq in worker.done and worker_id in self._workers:
            op = worker.ops.popleft()
            ok, value, done_at = worker.done.pop(op.seq)
            worker.last_done_at = done_at
            self._on_reported(worker, op, ok, value, events)

    def _on_reported(self, worker: DaskWorker, op: Op, ok: bool, value: Any,
                     events: list[Event]) -> None:
        wid = worker.worker_id
        if op.kind == _IDENTIFY:
            if not ok:
                self._create_failed(worker, f"the Dask worker cannot run procpool's tasks:"
                                    f" {value!r}", events)
                return
            worker.pid, machine = value
            worker.local = machine == self._machine
            events.append(WorkerStarted(wid, worker.pid or 0))
        elif op.kind == _CREATE:
            if ok and value[0]:
                worker.ready = True
                events.append(WorkerReady(wid, worker.pid or 0, value[1]))
            elif ok:
                self._create_failed(worker, value[1], events, value[2])
            else:
                self._create_failed(worker, f"on_create could not run: {value!r}", events)
        elif op.kind == _BATCH:
            outcomes = self._outcomes(op, ok, value)
            if outcomes:
                events.append(WorkerResults(wid, outcomes))
            if ok and value.leaving is not None:
                events.append(WorkerLeaving(wid, value.leaving))
                self._end(worker, 0, value.destroy_error, None, events)
        elif op.kind == _DESTROY:
            error = value if ok else f"on_destroy could not run: {value!r}"
            self._end(worker, 0, error, None, events)

    def _outcomes(self, op: Op, ok: bool, value: Any) -> list[TaskOutcome]:
        if ok:
            return decode_results(value.results)
        now = monotonic()  # the batch task itself failed: its tasks are sent again alone
        text = f"the Dask task failed: {value!r}"
        return [TaskOutcome(task_id, wire.UNREADABLE_TASK, text, now, now)
                for task_id in op.task_ids]

    def _create_failed(self, worker: DaskWorker, message: str, events: list[Event],
                       traceback_text: str = "") -> None:
        events.append(WorkerCreateFailed(worker.worker_id, message, traceback_text))
        self._end(worker, 1, None, None, events)
