"""The pool's totals at past burst ticks, and the short-window rates and task times they give.

Like a car's trip computer: the odometer and the fuel counter only ever go
up, and the speed and consumption over the last stretch come from their
differences between two readings. The burst controller reads its arrival
and completion rates (over ``rate_window`` seconds, stretched until enough
arrivals were counted) and its mean task times (over ``SIZING_SECONDS`` to
size the pool, over a judging window to judge a scale-up) from here.
Pure: numbers in, numbers out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

# Arrivals the rate is measured over, at least: when the rate window counted fewer, it
# stretches back until it holds as many. More steadies low rates but notices their changes
# later; a rate from one or two arrivals swings from zero to absurd and back.
_MIN_ARRIVALS = 4
# Task times averaged over at least this many tasks when taken from the totals; fewer fall
# back to the snapshot's recent mean. More is steadier, but needs longer windows.
_MIN_TASKS = 4
# Seconds of ended tasks the sizing's mean task time is taken over. Longer is steadier (the
# mean of n tasks of uniform length wobbles by about 1/(2 n^0.5): 8% for 10 tasks, 5.5% for
# the 40 that 2 s hold at 20/s) but follows a change of the task times later; the arrival
# rate, not the task time, is what sees a rise of load, so this lag costs little.
SIZING_SECONDS = 2.0
# Seconds of task times a scale-up is judged on, at most; it bounds the history kept (ticks
# over twice this). Longer tasks are judged on fewer than four each, with the recent mean
# when too few ended. Longer judges slow tasks more surely, with more memory and later.
_LONGEST_JUDGING = 60.0


class Totals(Protocol):
    """What one tick tells: the counters (None when unknown) and the fallbacks."""

    @property
    def now(self) -> float: ...
    @property
    def arrival_rate(self) -> float: ...
    @property
    def completion_rate(self) -> float: ...
    @property
    def arrived_total(self) -> int | None: ...
    @property
    def ended_total(self) -> int | None: ...
    @property
    def executed_seconds_total(self) -> float | None: ...
    @property
    def mean_task_seconds(self) -> float | None: ...


@dataclass(frozen=True)
class _Sample:
    now: float
    arrived: int
    ended: int
    executed: float | None


class LoadHistory:
    """Readings of the totals at past ticks, oldest first, and what they measure."""

    def __init__(self, rate_window: float, interval: float | None, lookahead: float) -> None:
        self._rate_window = rate_window
        self._interval = interval
        self._lookahead = lookahead
        self.history: deque[_Sample] = deque()

    def rates(self, snap: Totals) -> tuple[float, float, float]:
        """Arrival and completion rates over the rate window; the arrivals' rise in tasks/s²."""
        if snap.arrived_total is None or snap.ended_total is None:
            self.history.clear()
            return snap.arrival_rate, snap.completion_rate, 0.0
        sample = _Sample(snap.now, snap.arrived_total, snap.ended_total,
                         snap.executed_seconds_total)
        history = self.history
        if history and (history[-1].now >= snap.now or history[-1].arrived > sample.arrived
                        or history[-1].ended > sample.ended):
            history.clear()  # a clock or a counter that went back: measure afresh
        history.append(sample)
        window = self.window()
        # Keep what the rise, the sizing's task time and two judging windows (before and
        # after a scale-up) need.
        keep = max(2 * window, SIZING_SECONDS,
                   2 * self.judge_window(snap.mean_task_seconds)) + window
        while len(history) > 2 and snap.now - history[1].now >= keep:
            history.popleft()
        if len(history) < 2:
            return snap.arrival_rate, snap.completion_rate, 0.0
        then = self.sample_before(snap.now - window)
        if sample.arrived - then.arrived < _MIN_ARRIVALS:
            # Too few arrivals to call it a rate (one task in 0.4 s is not 2.5/s): look
            # further back, as far as the history goes, until enough were counted.
            for older in reversed(history):
                if older.now < then.now:
                    then = older
                    if sample.arrived - older.arrived >= _MIN_ARRIVALS:
                        break
        seconds = snap.now - then.now
        arrival = (sample.arrived - then.arrived) / seconds
        completion = (sample.ended - then.ended) / seconds
        rise = 0.0
        if self._lookahead > 0:
            earlier = self.sample_before(then.now - window)
            if earlier.now < then.now:
                before = (then.arrived - earlier.arrived) / (then.now - earlier.now)
                rise = max(0.0, (arrival - before) / ((snap.now - earlier.now) / 2))
        return arrival, completion, rise

    def window(self) -> float:
        """The rate window in seconds: at least one tick."""
        return max(self._rate_window, self._interval or 0.0)

    def judge_window(self, mean: float | None) -> float:
        """Seconds of task times a scale-up is judged on: two rate windows or four tasks."""
        return max(2 * self.window(), min(4 * (mean or 0.0), _LONGEST_JUDGING))

    def sample_before(self, when: float) -> _Sample:
        """The newest sample taken at ``when`` or before (half a tick of slack), else the oldest.

        The slack keeps a tick that comes a little early from measuring over one tick less.
        """
        slack = (self._interval or 0.0) / 2
        for sample in reversed(self.history):
            if sample.now <= when + slack:
                return sample
        return self.history[0]

    def sizing_mean(self, snap: Totals) -> float | None:
        """Mean execution seconds the sizing uses: the tasks ended over ``SIZING_SECONDS``."""
        return self.mean_over(snap, SIZING_SECONDS)

    def mean_over(self, snap: Totals, seconds: float) -> float | None:
        """Mean execution seconds of the tasks that ended in the last ``seconds``.

        From the totals when they cover at least ``_MIN_TASKS`` tasks, else the snapshot's
        recent mean (which lags: it follows the latest tasks one by one).
        """
        if self.history and snap.executed_seconds_total is not None:
            then = self.sample_before(snap.now - seconds)
            last = self.history[-1]
            ended = last.ended - then.ended
            if ended >= _MIN_TASKS and then.executed is not None and last.executed is not None:
                return max(last.executed - then.executed, 0.0) / ended
        return snap.mean_task_seconds
