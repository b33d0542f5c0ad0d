"""Recent event rates and bounded duration statistics, in fixed memory.

Both classes answer "what is happening now?" rather than "what happened since
start-up": a lifetime average never falls when the load falls, so a pool
steered by one would never shrink. Neither class locks; callers that share
one between threads hold their own lock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Seconds of history behind a rate. Longer smooths out noise but notices a change in load
# later; 2 s holds about 20 events at 10 tasks/s yet reacts within a few burst ticks.
DEFAULT_RATE_WINDOW = 2.0
# Time buckets per window. More buckets let old events expire in smaller steps (a smoother
# rate) but cost memory and make rate() slower, which is O(buckets).
DEFAULT_RATE_BUCKETS = 20

# Shortest duration with a bucket of its own. Shorter ones are lumped together: timing a
# task below a microsecond says nothing useful.
HISTOGRAM_LOW = 1e-6
# Longest duration with a bucket of its own (a day). Longer ones share one overflow bucket;
# raising it costs about 47 buckets per tenfold.
HISTOGRAM_HIGH = 86_400.0
# Ratio between neighbouring bucket edges. 1.05 keeps percentiles within 2.5% using about
# 520 buckets; a smaller ratio is more precise but costs proportionally more memory and time.
HISTOGRAM_GROWTH = 1.05
# Weight of the newest duration in recent_mean. 0.1 lets roughly the last 10 to 20 tasks
# count: a larger weight follows a change of workload sooner, but one slow task swings it more.
RECENT_SMOOTHING = 0.1

_LOG_GROWTH = math.log(HISTOGRAM_GROWTH)
# Regular buckets between LOW and HIGH; index 0 is the underflow, the last the overflow.
_REGULAR = math.ceil(math.log(HISTOGRAM_HIGH / HISTOGRAM_LOW) / _LOG_GROWTH)
_NEVER = -(1 << 62)  # stamp of a bucket that has never been written


class RateWindow:
    """Events per second over the last ``window`` seconds, like a speedometer.

    A speedometer shows how fast you go now, not your average since the trip
    began: when events stop, the rate falls to 0.0 within one window. Time is
    cut into ``buckets`` slices of ``window / buckets`` seconds kept in a ring,
    so memory is fixed and :meth:`rate` costs O(buckets). ``now`` is any
    monotonic clock in seconds. Defaults: a 2 s window in 20 buckets; if in
    doubt, use them.

    Start-up rule: until a full window has passed since the first event, the
    count is divided by the time since that event, but by at least half a
    window. So a steady stream reads at least half its true rate during its
    first half window and its true rate after that, while a lone first event
    reads 1/s with the defaults instead of an absurd 1 / 0.001 s.
    """

    def __init__(
        self, window: float = DEFAULT_RATE_WINDOW, buckets: int = DEFAULT_RATE_BUCKETS
    ) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets!r}")
        self._window = float(window)
        self._width = self._window / buckets
        self._counts = [0] * buckets
        self._stamps = [_NEVER] * buckets  # which time slice each slot currently holds
        self._first: float | None = None
        self._total = 0

    @property
    def window(self) -> float:
        """Seconds of history behind :meth:`rate`."""
        return self._window

    @property
    def total(self) -> int:
        """Events recorded since construction (never expires)."""
        return self._total

    def record(self, now: float, count: int = 1) -> None:
        """Count ``count`` events that happened at ``now``."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        if self._first is None:
            self._first = now
        self._total += count
        stamp = math.floor(now / self._width)
        slot = stamp % len(self._counts)
        if self._stamps[slot] == stamp:
            self._counts[slot] += count
        elif self._stamps[slot] < stamp:  # the slot holds an expired slice: reuse it
            self._stamps[slot] = stamp
            self._counts[slot] = count
        # else: the event is a whole window older than newer data; only the total keeps it.

    def rate(self, now: float) -> float:
        """Events per second over the window ending at ``now``; 0.0 when there were none."""
        if self._first is None:
            return 0.0
        oldest = math.floor(now / self._width) - len(self._counts) + 1
        events = sum(c for c, s in zip(self._counts, self._stamps, strict=True) if s >= oldest)
        if events == 0:
            return 0.0
        # Divide by the time the counted slices really cover (the newest one is partly
        # filled), so the rate does not dip each time a new slice begins.
        covered = min(now - oldest * self._width, now - self._first)
        return events / max(covered, self._window / 2)


class DurationHistogram:
    """Durations in seconds, kept like coins sorted into jars of growing size.

    Each jar (bucket) holds durations about 5% longer than the one before,
    from 1 µs to a day, so memory is fixed (about 520 counters) however many
    durations are recorded, and a percentile is read by counting jars.
    ``count``, ``mean``, ``min`` and ``max`` are exact; :meth:`percentile` is
    within 2.5% between 1 µs and a day. ``recent_mean`` follows the latest
    tasks (``smoothing``, default 0.1; if in doubt, use 0.1).
    """

    def __init__(self, smoothing: float = RECENT_SMOOTHING) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        self._smoothing = smoothing
        self._counts = [0] * (_REGULAR + 2)
        self._count = 0
        self._sum = 0.0
        self._min = 0.0
        self._max = 0.0
        self._recent = 0.0

    @property
    def bucket_count(self) -> int:
        """Number of buckets; fixed, whatever was recorded."""
        return len(self._counts)

    @property
    def count(self) -> int:
        return self._count

    @property
    def mean(self) -> float:
        """Lifetime mean in seconds; 0.0 when empty."""
        return self._sum / self._count if self._count else 0.0

    @property
    def min(self) -> float:
        """Shortest duration in seconds; 0.0 when empty."""
        return self._min

    @property
    def max(self) -> float:
        """Longest duration in seconds; 0.0 when empty."""
        return self._max

    @property
    def recent_mean(self) -> float:
        """Exponentially weighted mean of the latest durations; 0.0 when empty.

        Each new duration moves it by ``smoothing`` of the difference, so it
        tracks the current workload where :attr:`mean` remembers the whole
        life of the pool.
        """
        return self._recent

    def record(self, seconds: float) -> None:
        """Add one duration (seconds, finite and >= 0)."""
        self.record_all((seconds,))

    def record_all(self, durations: Sequence[float]) -> None:
        """Add durations in order, as :meth:`record` one by one would: a worker's batch
        of results costs one call, not one per task. An invalid duration raises and
        adds none of them."""
        if not durations:
            return
        if not (min(durations) >= 0 and sum(durations) < math.inf):  # also rejects NaN
            bad = [seconds for seconds in durations if not 0 <= seconds < math.inf]
            raise ValueError(
                f"duration must be a finite number >= 0, got {bad[0] if bad else durations!r}")
        if not self._count:
            self._min = self._max = self._recent = durations[0]
        self._min = min(self._min, *durations)
        self._max = max(self._max, *durations)
        recent, smoothing, total, counts = self._recent, self._smoothing, self._sum, self._counts
        log, low, growth, last = math.log, HISTOGRAM_LOW, _LOG_GROWTH, _REGULAR + 1
        for seconds in durations:  # bucket 0 below LOW, then one per growth step
            recent += smoothing * (seconds - recent)
            total += seconds
            if seconds < low:
                counts[0] += 1
            else:
                index = int(log(seconds / low) / growth) + 1
                counts[index if index < last else last] += 1
        self._recent, self._sum = recent, total
        self._count += len(durations)

    def percentile(self, q: float) -> float:
        """The duration below which ``q`` percent of them fall (q in [0, 100]); 0.0 if empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q!r}")
        if not self._count:
            return 0.0
        if q == 0:
            return self._min
        if q == 100:
            return self._max
        rank = max(1, math.ceil(q / 100 * self._count))  # nearest-rank definition
        index, seen = 0, self._counts[0]
        while seen < rank:  # walk the buckets up to the one holding the rank-th duration
            index += 1
            seen += self._counts[index]
        if index == 0:
            value = self._min
        elif index == len(self._counts) - 1:
            value = self._max
        else:  # geometric middle of the bucket: at most sqrt(growth) off either way
            value = HISTOGRAM_LOW * HISTOGRAM_GROWTH ** (index - 0.5)
        return min(max(value, self._min), self._max)


class RecentShare:
    """One recent total as a share of another, such as CPU seconds per wall second.

    Like a fuel gauge's "litres per 100 km over the last few trips": each
    :meth:`record` adds a pair (``part``, ``whole``: a task's CPU and wall
    seconds), and :attr:`value` is the sum of the parts over the sum of the
    wholes, each older pair weighing ``1 - smoothing`` less than the next.
    Long tasks weigh more than short ones, as in a plain sum. Fixed memory;
    default smoothing 0.1 (about the last 10 to 20 pairs, as
    :attr:`DurationHistogram.recent_mean`); if in doubt, use it.
    """

    def __init__(self, smoothing: float = RECENT_SMOOTHING) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        self._keep = 1.0 - smoothing
        self._part = 0.0
        self._whole = 0.0
        self._count = 0

    @property
    def count(self) -> int:
        """Pairs recorded since construction."""
        return self._count

    @property
    def value(self) -> float | None:
        """Recent sum of parts / recent sum of wholes; None before any whole above 0."""
        return self._part / self._whole if self._whole > 0 else None

    def record(self, part: float, whole: float) -> None:
        """Add one pair (finite, >= 0; the units cancel out)."""
        self.record_all(((part, whole),))

    def record_all(self, pairs: Sequence[tuple[float, float]]) -> None:
        """Add pairs in order, as :meth:`record` one by one would; an invalid pair
        raises and adds none of them."""
        keep, part_sum, whole_sum = self._keep, self._part, self._whole
        for part, whole in pairs:
            if not (0 <= part < math.inf and 0 <= whole < math.inf):  # also rejects NaN
                raise ValueError(
                    f"part and whole must be finite and >= 0, got {part!r}, {whole!r}")
            part_sum = part_sum * keep + part
            whole_sum = whole_sum * keep + whole
        self._part, self._whole = part_sum, whole_sum
        self._count += len(pairs)
