"""BurstController: unit rules, load scenarios on a simulated pool, and invariants."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procpool.policy.burst import BurstController, BurstDecision, BurstSnapshot
from procpool.policy.rates import DurationHistogram, RateWindow


def snapshot(**changes: object) -> BurstSnapshot:
    """A calm pool of 2 base workers, with ``changes`` applied."""
    calm = BurstSnapshot(
        now=100.0,
        arrival_rate=1.0,
        completion_rate=1.0,
        queued_tasks=0,
        base_workers=2,
        burst_workers=0,
        starting_workers=0,
        busy_workers=1,
        idle_burst_workers=(),
        mean_task_seconds=1.0,
        worker_start_seconds=0.2,
    )
    return replace(calm, **changes)  # type: ignore[arg-type]


def controller(**changes: object) -> BurstController:
    settings: dict[str, object] = {
        "worker_count": 2,
        "max_worker_count": 10,
        "interval": 0.5,
        "target_drain_seconds": 2.0,
        "cooldown_ticks": 5,
    }
    settings.update(changes)
    return BurstController(**settings)  # type: ignore[arg-type]


# --- Unit rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "max_workers"), [(None, 10), (0, 10), (0.0, 10), (0.5, 2)])
def test_disabled_controller_always_holds(interval: float | None, max_workers: int) -> None:
    ctrl = controller(interval=interval, max_worker_count=max_workers)
    assert not ctrl.enabled
    flood = snapshot(queued_tasks=500, arrival_rate=100.0, busy_workers=2)
    idle = snapshot(burst_workers=3, idle_burst_workers=(7, 8, 9), busy_workers=0)
    for snap in [flood] * 3 + [idle] * 20:
        decision = ctrl.decide(snap)
        assert (decision.start, decision.retire) == (0, ())
        assert "disabled" in decision.reason


def test_no_backlog_means_no_start_however_high_the_arrival_rate() -> None:
    ctrl = controller()
    decision = ctrl.decide(snapshot(arrival_rate=50.0, completion_rate=1.0, busy_workers=2))
    assert decision.start == 0


def test_a_big_backlog_starts_enough_workers_at_once() -> None:
    ctrl = controller(max_worker_count=30)
    snap = snapshot(queued_tasks=40, arrival_rate=4.0, completion_rate=2.0, busy_workers=2)
    decision = ctrl.decide(snap)
    # backlog by the 2 s horizon = 40 + 2/s * 2 s = 44 tasks of 1 s -> 22 workers.
    assert decision.start == 22
    for number in (
        "queued=40",
        "arrival=4.00/s",
        "completion=2.00/s",
        "mean_task=1.000s",
        "needed=22",
    ):
        assert number in decision.reason


def test_start_never_exceeds_max_worker_count() -> None:
    ctrl = controller(max_worker_count=6)
    snap = snapshot(queued_tasks=100, burst_workers=1, starting_workers=1, busy_workers=2)
    assert ctrl.decide(snap).start == 3  # 2 base + 1 burst + 3 = 6


def test_small_backlog_within_the_target_wait_holds() -> None:
    ctrl = controller()
    # 3 tasks of 1 s on 2 busy workers: a 1.5 s wait, within the 2 s target.
    snap = snapshot(queued_tasks=3, arrival_rate=2.0, completion_rate=2.0, busy_workers=2)
    decision = ctrl.decide(snap)
    assert decision.start == 0
    assert "within target" in decision.reason


def test_a_growing_backlog_starts_workers_before_it_is_large() -> None:
    ctrl = controller()
    # Only 2 tasks queued, but arrivals outrun completions by 3/s.
    snap = snapshot(queued_tasks=2, arrival_rate=5.0, completion_rate=2.0, busy_workers=2)
    assert ctrl.decide(snap).start > 0


def test_workers_still_starting_count_as_capacity() -> None:
    ctrl = controller(max_worker_count=20)
    base = {"queued_tasks": 12, "arrival_rate": 2.0, "completion_rate": 2.0, "busy_workers": 2}
    first = ctrl.decide(snapshot(**base))
    assert first.start == 6  # 12 tasks of 1 s to clear in 2 s: 6 workers beyond the busy 2
    # Next tick those 6 are still starting: they cover the same backlog, start no more.
    again = ctrl.decide(snapshot(**base, burst_workers=first.start, starting_workers=first.start))
    assert again.start == 0
    assert "workers=8 free=6" in again.reason
    # Even with a bigger backlog, the workers still starting are subtracted from the need.
    bigger = ctrl.decide(
        snapshot(**{**base, "queued_tasks": 20}, burst_workers=6, starting_workers=6)
    )
    assert bigger.start == 4  # 20 tasks to clear in 2 s: 10 workers, 6 of them on the way


def test_slow_start_up_stretches_the_horizon() -> None:
    ctrl = controller(max_worker_count=40)
    snap = snapshot(queued_tasks=20, busy_workers=2, arrival_rate=2.0, completion_rate=2.0)
    quick = ctrl.decide(snap).start
    slow = ctrl.decide(replace(snap, worker_start_seconds=10.0)).start
    # 20 s of work: 10 workers clear it in 2 s, but a worker that needs 10 s to start
    # only has to help clear it within 10 s.
    assert (quick, slow) == (10, 2)


def test_a_worker_is_started_only_for_a_task_it_can_take() -> None:
    ctrl = controller(max_worker_count=40)
    # One 100 s task queued: the formula asks for 50 workers, but only one can help.
    snap = snapshot(queued_tasks=1, busy_workers=2, mean_task_seconds=100.0)
    assert ctrl.decide(snap).start == 1


def test_unknown_task_time_grows_by_the_untaken_tasks_capped_at_the_base() -> None:
    ctrl = controller(worker_count=3, max_worker_count=20)
    common = {"base_workers": 3, "mean_task_seconds": None, "worker_start_seconds": None}
    # All 3 base workers still starting: they will take 3 of the 5 tasks.
    assert (
        ctrl.decide(snapshot(queued_tasks=5, starting_workers=3, busy_workers=0, **common)).start
        == 2
    )
    # 50 tasks nobody can take: at most the base count (3) per tick.
    decision = ctrl.decide(snapshot(queued_tasks=50, busy_workers=3, **common))
    assert decision.start == 3
    assert "unknown" in decision.reason


def test_idle_burst_workers_retire_only_after_the_cooldown_since_the_last_load() -> None:
    ctrl = controller(cooldown_ticks=5)
    quiet = snapshot(
        burst_workers=2,
        idle_burst_workers=(5, 6),
        busy_workers=0,
        arrival_rate=0.0,
        completion_rate=0.5,
    )
    busy = snapshot(queued_tasks=1, burst_workers=2, busy_workers=4)
    for _ in range(4):
        assert ctrl.decide(quiet).retire == ()
    assert ctrl.decide(busy).start == 0  # a backlog tick restarts the count...
    for _ in range(4):
        assert ctrl.decide(quiet).retire == ()
    decision = ctrl.decide(quiet)  # ...so only the 5th quiet tick after it retires
    assert decision.retire == (5,)
    assert "quiet=5/5" in decision.reason


def test_retirement_is_gradual_longest_idle_first_and_never_repeated() -> None:
    ctrl = controller(cooldown_ticks=1)
    idle = (11, 12, 13, 14, 15)
    snap = snapshot(
        burst_workers=5,
        idle_burst_workers=idle,
        busy_workers=0,
        arrival_rate=0.0,
        completion_rate=0.0,
    )
    first = ctrl.decide(snap)
    assert first.retire == (11, 12, 13)  # half, rounded up, longest idle first
    # The retired workers have not exited yet and are still listed.
    second = ctrl.decide(snap)
    assert second.retire == (14,)
    # Now only 15 is left alive; 11-14 have exited.
    third = ctrl.decide(replace(snap, burst_workers=1, idle_burst_workers=(15,)))
    assert third.retire == (15,)


def test_retirement_keeps_the_workers_the_arrival_rate_needs() -> None:
    ctrl = controller(cooldown_ticks=1)
    # No backlog, but 5/s of 1 s tasks keep 5 workers busy on average.
    snap = snapshot(
        burst_workers=6,
        idle_burst_workers=(1, 2, 3, 4),
        busy_workers=4,
        arrival_rate=5.0,
        completion_rate=5.0,
    )
    decision = ctrl.decide(snap)
    assert decision.retire == (1, 2)  # 8 workers, keep 5: at most half of the 4 idle
    decision = ctrl.decide(replace(snap, burst_workers=4, idle_burst_workers=(3, 4)))
    assert decision.retire == (3,)
    decision = ctrl.decide(replace(snap, burst_workers=3, idle_burst_workers=(4,)))
    assert decision.retire == ()
    assert "keep 5 workers (arrivals x task time=5)" in decision.reason


def test_base_and_busy_workers_are_never_retired() -> None:
    ctrl = controller(cooldown_ticks=1)
    # Only the listed idle burst workers may go; nothing listed, nothing retired.
    snap = snapshot(burst_workers=3, busy_workers=5, arrival_rate=0.0, completion_rate=0.0)
    for _ in range(5):
        assert ctrl.decide(snap).retire == ()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"worker_count": -1}, "worker_count"),
        ({"max_worker_count": 1}, "max_worker_count"),
        ({"interval": -0.1}, "interval"),
        ({"target_drain_seconds": 0.0}, "target_drain_seconds"),
        ({"cooldown_ticks": 0}, "cooldown_ticks"),
    ],
)
def test_bad_settings_are_rejected(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        controller(**changes)


# --- A simulated pool ---------------------------------------------------------------------


@dataclass
class SimWorker:
    wid: int
    burst: bool
    ready_at: float
    busy_until: float | None = None
    idle_since: float = 0.0
    exit_at: float | None = None  # sent the exit sentinel; leaves at this time


@dataclass(frozen=True)
class Tick:
    now: float
    queued: int
    workers: int  # after the decision, starting ones included
    decision: BurstDecision


class SimPool:
    """A pool in virtual time: a queue, workers with a fixed task time, slow starts.

    Time advances in ``step``-second slices; every ``interval`` the controller
    gets a snapshot built the way the supervisor builds it, and its decision is
    carried out. Retired workers leave one step later, like a real sentinel.
    """

    step = 0.05

    def __init__(
        self,
        *,
        base: int,
        max_workers: int,
        task_seconds: float,
        start_seconds: float,
        load: Callable[[float], float],
        interval: float = 0.5,
        cooldown_ticks: int = 10,
    ) -> None:
        self.ctrl = BurstController(
            worker_count=base,
            max_worker_count=max_workers,
            interval=interval,
            cooldown_ticks=cooldown_ticks,
        )
        self.base, self.max_workers = base, max_workers
        self.task_seconds, self.start_seconds, self.load = task_seconds, start_seconds, load
        self.steps_per_tick = round(interval / self.step)
        self.arrivals, self.completions = RateWindow(), RateWindow()
        self.task_times, self.start_times = DurationHistogram(), DurationHistogram()
        self.workers: dict[int, SimWorker] = {}
        self.queued = 0
        self.ticks: list[Tick] = []
        self._steps = 0
        self._owed = 0.0  # fractional arrivals carried to the next step
        self._next_id = 0
        for _ in range(base):
            self._spawn(burst=False)

    @property
    def now(self) -> float:
        return self._steps * self.step

    def submit(self, count: int) -> None:
        self.queued += count
        self.arrivals.record(self.now, count)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / (self.step * self.steps_per_tick))):
            for _ in range(self.steps_per_tick):
                self._advance()
            self._tick()

    def _spawn(self, *, burst: bool) -> None:
        self._next_id += 1
        ready = self.now + self.start_seconds
        self.workers[self._next_id] = SimWorker(self._next_id, burst, ready, idle_since=ready)

    def _advance(self) -> None:
        self._steps += 1
        now = self.now
        self._owed += self.load(now) * self.step
        if self._owed >= 1:
            arrived = math.floor(self._owed + 1e-9)
            self._owed -= arrived
            self.submit(arrived)
        for w in list(self.workers.values()):
            if w.exit_at is not None and w.exit_at <= now + 1e-9:
                del self.workers[w.wid]
            elif w.busy_until is not None and w.busy_until <= now + 1e-9:
                w.busy_until, w.idle_since = None, now
                self.completions.record(now)
                self.task_times.record(self.task_seconds)
            elif abs(w.ready_at - now) < 1e-9:
                self.start_times.record(self.start_seconds)
        idle = sorted(
            (w for w in self.workers.values() if self._idle(w)), key=lambda w: w.idle_since
        )
        for w in idle:
            if not self.queued:
                break
            self.queued -= 1
            w.busy_until = now + self.task_seconds

    def _idle(self, w: SimWorker) -> bool:
        return w.ready_at <= self.now + 1e-9 and w.busy_until is None and w.exit_at is None

    def snapshot(self) -> BurstSnapshot:
        now = self.now
        live = self.workers.values()
        idle_burst = sorted(
            (w for w in live if w.burst and self._idle(w)), key=lambda w: w.idle_since
        )
        return BurstSnapshot(
            now=now,
            arrival_rate=self.arrivals.rate(now),
            completion_rate=self.completions.rate(now),
            queued_tasks=self.queued,
            base_workers=self.base,
            burst_workers=sum(w.burst for w in live),
            starting_workers=sum(w.ready_at > now + 1e-9 for w in live),
            busy_workers=sum(w.busy_until is not None for w in live),
            idle_burst_workers=tuple(w.wid for w in idle_burst),
            mean_task_seconds=self.task_times.recent_mean if self.task_times.count else None,
            worker_start_seconds=self.start_times.recent_mean if self.start_times.count else None,
        )

    def _tick(self) -> None:
        snap = self.snapshot()
        decision = self.ctrl.decide(snap)
        assert decision.start >= 0
        assert set(decision.retire) <= set(snap.idle_burst_workers)
        for _ in range(decision.start):
            self._spawn(burst=True)
        for wid in decision.retire:
            self.workers[wid].exit_at = self.now + self.step
        # Starting workers included, the pool never exceeds its maximum.
        assert len(self.workers) <= self.max_workers, decision.reason
        self.ticks.append(Tick(self.now, self.queued, len(self.workers), decision))

    # What happened, for the assertions.
    def starts(self) -> list[Tick]:
        return [t for t in self.ticks if t.decision.start]

    def retires(self) -> list[Tick]:
        return [t for t in self.ticks if t.decision.retire]

    def reversals(self, since: float = 0.0) -> int:
        """How often the direction changed between start and retire after ``since``."""
        moves = [
            "up" if t.decision.start else "down"
            for t in self.ticks
            if t.now >= since and (t.decision.start or t.decision.retire)
        ]
        return sum(a != b for a, b in itertools.pairwise(moves))


def test_step_up_is_followed_quickly_and_the_backlog_drains() -> None:
    # 2 workers of 1 s tasks handle 1.5/s; at t=10 the load jumps to 6/s.
    pool = SimPool(
        base=2,
        max_workers=10,
        task_seconds=1.0,
        start_seconds=0.2,
        load=lambda t: 1.5 if t < 10 else 6.0,
    )
    pool.run(10)
    assert pool.starts() == []
    pool.run(30)
    first = pool.starts()[0]
    assert first.now <= 11.0  # within two ticks of the step
    assert first.decision.start >= 2  # sized from the backlog, not +1 per tick
    late = [t for t in pool.ticks if t.now >= 20]
    assert all(6 <= t.workers <= 10 for t in late)  # what 6/s of 1 s tasks needs, or more
    assert max(t.queued for t in pool.ticks) <= 12  # about the 2 s target wait of 6 workers
    assert len(pool.starts()) <= 3 and pool.reversals() <= 1


def test_a_spike_grows_to_the_max_at_once_then_shrinks_gradually_after_the_cooldown() -> None:
    pool = SimPool(
        base=2,
        max_workers=8,
        task_seconds=0.5,
        start_seconds=0.2,
        load=lambda t: 1.0,
        cooldown_ticks=10,
    )
    pool.run(5)
    pool.submit(60)
    pool.run(0.5)
    assert pool.ticks[-1].workers == 8  # one tick: straight to the maximum
    pool.run(40)
    assert pool.ticks[-1].workers == 2  # back to the base workers
    drained = next(t.now for t in pool.ticks if t.now > 5 and t.queued == 0)
    last_backlog = max(t.now for t in pool.ticks if t.queued > 0)
    assert drained <= 10.0
    first_retire = pool.retires()[0]
    assert first_retire.now >= last_backlog + 10 * 0.5  # cooldown counted from the last load
    assert len(pool.starts()) == 1 and pool.reversals() == 1
    assert all(len(t.decision.retire) <= 3 for t in pool.retires())  # at most half of 6


def test_a_slow_sine_is_followed_without_thrash() -> None:
    # 0.5/s to 7.5/s and back every 120 s, 1 s tasks, 2 base workers, 1 s ticks.
    pool = SimPool(
        base=2,
        max_workers=12,
        task_seconds=1.0,
        start_seconds=0.5,
        load=lambda t: 4.0 + 3.5 * math.sin(2 * math.pi * t / 120),
        interval=1.0,
        cooldown_ticks=10,
    )
    pool.run(360)
    by_period = [[t for t in pool.ticks if k * 120 <= t.now < (k + 1) * 120] for k in range(3)]
    for ticks in by_period:
        assert max(t.workers for t in ticks) >= 8  # grew for the peak...
        assert min(t.workers for t in ticks[60:]) <= 3  # ...and shrank for the trough
        # A few scale events per period, not one per tick.
        assert sum(1 for t in ticks if t.decision.start or t.decision.retire) <= 20
    assert pool.reversals() <= 2 * 3
    assert max(t.queued for t in pool.ticks) <= 30


@pytest.mark.parametrize("rates", [(4.0, 4.0), (3.6, 4.4), (3.9, 3.9)])
def test_a_steady_load_at_capacity_changes_nothing(rates: tuple[float, float]) -> None:
    # 4 workers of 1 s tasks can do 4/s; the load alternates each second around it.
    low, high = rates
    pool = SimPool(
        base=4,
        max_workers=10,
        task_seconds=1.0,
        start_seconds=0.2,
        load=lambda t: high if int(t) % 2 else low,
    )
    pool.run(120)
    assert pool.starts() == [] and pool.retires() == []
    assert max(t.queued for t in pool.ticks) <= 4


@pytest.mark.parametrize(("high", "seconds"), [(8.0, 1.0), (16.0, 1.0), (16.0, 2.0), (30.0, 3.0)])
def test_a_flapping_load_does_not_thrash(high: float, seconds: float) -> None:
    # ``high`` tasks/s for ``seconds``, nothing for as long, for two minutes (240 ticks).
    pool = SimPool(
        base=2,
        max_workers=10,
        task_seconds=0.5,
        start_seconds=0.2,
        load=lambda t: high if int(t / seconds) % 2 == 0 else 0.0,
        cooldown_ticks=10,
    )
    pool.run(120)
    assert len(pool.starts()) + len(pool.retires()) <= 8
    assert pool.reversals() <= 2
    # Sized in the first seconds, then left alone although every phase flips the load.
    assert all(t.now < 20 for t in pool.starts() + pool.retires())


def test_slow_start_up_never_overshoots_the_max_and_counts_starting_workers() -> None:
    # Workers take 5 s to start; the load jumps from 1/s to 10/s of 1 s tasks.
    pool = SimPool(
        base=2,
        max_workers=6,
        task_seconds=1.0,
        start_seconds=5.0,
        load=lambda t: 1.0 if t < 20 else 10.0,
    )
    pool.run(40)  # SimPool asserts workers <= max at every tick
    assert max(t.workers for t in pool.ticks) == 6


def test_slow_start_up_does_not_start_more_while_enough_are_starting() -> None:
    # Room for 30, but 4/s of 1 s tasks needs about 4 workers plus some to drain.
    pool = SimPool(
        base=2,
        max_workers=30,
        task_seconds=1.0,
        start_seconds=3.0,
        load=lambda t: 1.0 if t < 20 else 4.0,
        cooldown_ticks=10,
    )
    pool.run(50)
    starts = [t for t in pool.starts() if t.now >= 20]
    assert 1 <= len(starts) <= 4  # a few steps while the first ones start, not one per tick
    peak = max(t.workers for t in pool.ticks)
    assert 5 <= peak <= 10
    assert pool.reversals(since=20) <= 1
    assert all(t.workers >= 5 for t in pool.ticks if t.now >= 30)  # ceil(4.2/s * 1 s)


def test_disabled_pool_keeps_its_base_workers() -> None:
    pool = SimPool(base=2, max_workers=2, task_seconds=1.0, start_seconds=0.2, load=lambda t: 8.0)
    pool.run(20)
    assert not pool.ctrl.enabled
    assert all(t.workers == 2 for t in pool.ticks)


# --- Invariants for any snapshot -----------------------------------------------------------


@st.composite
def pools(draw: st.DrawFn) -> tuple[BurstController, list[BurstSnapshot]]:
    base = draw(st.integers(0, 6))
    top = draw(st.integers(base + 1, base + 12))
    ctrl = BurstController(
        worker_count=base,
        max_worker_count=top,
        interval=draw(st.sampled_from([0.1, 0.2, 1.0])),
        target_drain_seconds=draw(st.floats(0.1, 30.0)),
        cooldown_ticks=draw(st.integers(1, 4)),
    )
    snaps = []
    for tick in range(draw(st.integers(1, 12))):
        burst = draw(st.integers(0, top - base))
        starting = draw(st.integers(0, base + burst))
        busy = draw(st.integers(0, base + burst - starting))
        idle = draw(st.integers(0, max(0, min(burst, base + burst - starting - busy))))
        snaps.append(
            BurstSnapshot(
                now=float(tick),
                arrival_rate=draw(st.floats(0.0, 1e4)),
                completion_rate=draw(st.floats(0.0, 1e4)),
                queued_tasks=draw(st.one_of(st.just(0), st.integers(0, 10_000))),
                base_workers=base,
                burst_workers=burst,
                starting_workers=starting,
                busy_workers=busy,
                idle_burst_workers=tuple(draw(st.permutations(range(100, 100 + burst))))[:idle],
                mean_task_seconds=draw(st.none() | st.floats(0.0, 1e4)),
                worker_start_seconds=draw(st.none() | st.floats(0.0, 600.0)),
            )
        )
    return ctrl, snaps


@given(pools())
def test_any_decision_respects_the_limits(
    pool: tuple[BurstController, list[BurstSnapshot]],
) -> None:
    ctrl, snaps = pool
    for snap in snaps:
        decision = ctrl.decide(snap)
        assert decision.start >= 0
        assert set(decision.retire) <= set(snap.idle_burst_workers)
        assert len(set(decision.retire)) == len(decision.retire)
        assert not (decision.start and decision.retire)
        after = snap.base_workers + snap.burst_workers + decision.start - len(decision.retire)
        assert after <= ctrl.max_worker_count
        assert decision.reason
