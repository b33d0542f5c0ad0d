"""RateWindow and DurationHistogram, on a fake clock."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procpool.policy.rates import (
    HISTOGRAM_GROWTH,
    HISTOGRAM_HIGH,
    HISTOGRAM_LOW,
    DurationHistogram,
    RateWindow,
    RecentShare,
)

# --- RateWindow -------------------------------------------------------------------------


def test_rate_is_zero_before_any_event() -> None:
    assert RateWindow().rate(100.0) == 0.0


@pytest.mark.parametrize("per_second", [0.5, 4.0, 10.0, 250.0])
def test_steady_events_give_their_rate(per_second: float) -> None:
    window = RateWindow(window=2.0, buckets=20)
    gap = 1.0 / per_second
    t = 1000.0
    for _ in range(int(per_second * 30)):  # 30 s of events
        window.record(t)
        t += gap
    # Whatever the phase inside a bucket, the estimate stays close.
    for offset in (0.0, 0.013, 0.05, 0.099):
        assert window.rate(t - gap + offset) == pytest.approx(per_second, rel=0.12, abs=0.5)


def test_rate_falls_to_zero_one_window_after_events_stop() -> None:
    window = RateWindow(window=2.0, buckets=20)
    for k in range(100):
        window.record(10.0 + k * 0.1)  # 10/s until t=19.9
    assert window.rate(19.95) == pytest.approx(10.0, rel=0.1)
    assert 0.0 < window.rate(21.0) < 10.0  # fading
    assert window.rate(19.9 + 2.0 + 0.1) == 0.0
    assert window.rate(1e6) == 0.0
    assert window.total == 100  # the lifetime count never fades


def test_rate_follows_a_step_down_instead_of_a_lifetime_average() -> None:
    window = RateWindow()
    t = 0.0
    for _ in range(6000):  # 100/s for 60 s
        window.record(t)
        t += 0.01
    for _ in range(20):  # then 2/s for 10 s
        window.record(t)
        t += 0.5
    assert window.rate(t) == pytest.approx(2.0, rel=0.3)


def test_start_up_divides_by_observed_time_but_at_least_half_a_window() -> None:
    window = RateWindow(window=2.0, buckets=20)
    window.record(500.0, count=50)
    # 50 events just after start-up read as 50 / 1 s, not 50 / 2 s, nor 50 / 0 s.
    assert window.rate(500.0) == pytest.approx(50.0)
    assert window.rate(500.2) == pytest.approx(50.0)
    # Later, the time observed since the first event is the divisor...
    assert window.rate(501.5) == pytest.approx(50 / 1.5)
    # ...until the slices cover less than that (the newest partly filled).
    assert window.rate(501.95) == pytest.approx(50 / 1.95)


def test_a_lone_first_event_does_not_read_as_a_flood() -> None:
    window = RateWindow(window=2.0, buckets=20)
    window.record(3.0)
    assert window.rate(3.001) == pytest.approx(1.0)


def test_record_counts_several_events_at_once() -> None:
    window = RateWindow(window=1.0, buckets=10)
    window.record(0.0, count=3)
    window.record(0.5, count=0)
    window.record(2.0, count=7)
    assert window.total == 10
    # The slices ending at 2.05 cover 0.95 s: nine whole ones and half of the newest.
    assert window.rate(2.05) == pytest.approx(7 / 0.95)


def test_an_event_older_than_the_window_only_adds_to_the_total() -> None:
    window = RateWindow(window=1.0, buckets=10)
    window.record(0.0)
    window.record(10.0, count=4)
    window.record(8.95)  # same slot as 10.0, a whole window older: must not wipe it
    assert window.rate(10.05) == pytest.approx(4 / 0.95)
    assert window.total == 6


def test_memory_is_fixed() -> None:
    window = RateWindow(window=2.0, buckets=20)
    for k in range(100_000):
        window.record(k * 0.003)
    assert len(window._counts) == 20 and len(window._stamps) == 20


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"window": 0.0}, "window"), ({"window": math.inf}, "window"), ({"buckets": 0}, "buckets")],
)
def test_rate_window_rejects_bad_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RateWindow(**kwargs)  # type: ignore[arg-type]


def test_negative_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="count"):
        RateWindow().record(0.0, count=-1)


# --- DurationHistogram --------------------------------------------------------------------


def exact_percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, computed the slow, obvious way."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def test_empty_histogram_reads_zero() -> None:
    hist = DurationHistogram()
    assert (hist.count, hist.mean, hist.min, hist.max, hist.recent_mean) == (0, 0.0, 0.0, 0.0, 0.0)
    assert hist.percentile(50) == 0.0


def test_exact_summary_values() -> None:
    hist = DurationHistogram()
    for seconds in (0.5, 0.1, 2.0, 0.4):
        hist.record(seconds)
    assert hist.count == 4
    assert hist.mean == pytest.approx(0.75)
    assert (hist.min, hist.max) == (0.1, 2.0)
    assert (hist.percentile(0), hist.percentile(100)) == (0.1, 2.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_the_exact_ones_within_the_bucket_growth(seed: int) -> None:
    rnd = random.Random(seed)
    values = [rnd.lognormvariate(-3.0, 1.5) for _ in range(20_000)]
    hist = DurationHistogram()
    for v in values:
        hist.record(v)
    for q in (1, 10, 25, 50, 75, 90, 95, 99, 99.9):
        assert hist.percentile(q) == pytest.approx(
            exact_percentile(values, q), rel=HISTOGRAM_GROWTH - 1
        )


@given(
    st.lists(
        st.floats(min_value=HISTOGRAM_LOW, max_value=HISTOGRAM_HIGH, allow_nan=False),
        min_size=1,
        max_size=200,
    ),
    st.floats(min_value=0, max_value=100),
)
def test_any_percentile_is_within_the_bucket_growth(values: list[float], q: float) -> None:
    hist = DurationHistogram()
    for v in values:
        hist.record(v)
    estimate = hist.percentile(q)
    assert hist.min <= estimate <= hist.max
    assert estimate == pytest.approx(exact_percentile(values, q), rel=HISTOGRAM_GROWTH - 1)


def test_durations_outside_the_bucket_range_are_clamped_to_min_and_max() -> None:
    hist = DurationHistogram()
    for seconds in (0.0, 1e-9, 3 * HISTOGRAM_HIGH, 5 * HISTOGRAM_HIGH):
        hist.record(seconds)
    assert hist.percentile(25) == 0.0
    assert hist.percentile(75) == 5 * HISTOGRAM_HIGH


def test_recent_mean_follows_a_change_of_workload() -> None:
    hist = DurationHistogram(smoothing=0.1)
    for _ in range(1000):
        hist.record(1.0)
    for _ in range(50):
        hist.record(0.1)
    assert hist.mean > 0.9  # the lifetime mean barely moves
    assert hist.recent_mean == pytest.approx(0.1, abs=0.01)  # 0.9 ** 50 of the old value


def test_recent_mean_starts_at_the_first_duration() -> None:
    hist = DurationHistogram()
    hist.record(3.0)
    assert hist.recent_mean == 3.0


def test_bucket_count_is_fixed_after_a_million_records() -> None:
    hist = DurationHistogram()
    before = hist.bucket_count
    rnd = random.Random(7)
    for _ in range(1_000_000):
        hist.record(math.exp(rnd.uniform(-16.0, 12.0)))  # 1e-7 s to 1.6e5 s
    assert hist.count == 1_000_000
    assert hist.bucket_count == before < 600


@pytest.mark.parametrize("seconds", [-0.001, math.nan, math.inf])
def test_bad_durations_are_rejected(seconds: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        DurationHistogram().record(seconds)


def test_a_batch_of_durations_records_what_one_by_one_recording_does() -> None:
    rnd = random.Random(3)
    values = [math.exp(rnd.uniform(-16.0, 12.0)) for _ in range(500)] + [0.0, HISTOGRAM_HIGH * 2]
    batch, single = DurationHistogram(), DurationHistogram()
    batch.record(0.25)
    single.record(0.25)
    batch.record_all(values)
    for seconds in values:
        single.record(seconds)

    def reading(hist: DurationHistogram) -> tuple[float, ...]:
        return (hist.count, hist.mean, hist.min, hist.max, hist.recent_mean,
                *(hist.percentile(q) for q in (1, 25, 50, 90, 99, 99.9)))

    assert reading(batch) == reading(single)


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf])
def test_a_batch_with_a_bad_duration_adds_none_of_them(bad: float) -> None:
    hist = DurationHistogram()
    hist.record(0.5)
    with pytest.raises(ValueError, match=f"duration must be a finite number >= 0, got {bad}"):
        hist.record_all([0.1, bad, 0.2])
    assert (hist.count, hist.mean, hist.min, hist.max) == (1, 0.5, 0.5, 0.5)
    hist.record_all([])
    assert hist.count == 1


@pytest.mark.parametrize("q", [-1.0, 100.5, math.nan])
def test_bad_percentiles_are_rejected(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        DurationHistogram().percentile(q)


def test_bad_smoothing_is_rejected() -> None:
    with pytest.raises(ValueError, match="smoothing"):
        DurationHistogram(smoothing=0.0)


# --- RecentShare ------------------------------------------------------------------------


def test_share_is_unknown_until_a_whole_above_zero() -> None:
    share = RecentShare()
    assert share.value is None
    share.record(0.0, 0.0)  # a task that took no time says nothing
    assert share.value is None
    assert share.count == 1


def test_share_of_steady_pairs_is_their_ratio() -> None:
    share = RecentShare()
    for _ in range(50):
        share.record(0.097, 0.1)  # CPU-bound: 97 ms of CPU per 100 ms of wall time
    assert share.value == pytest.approx(0.97)


def test_share_weighs_long_tasks_more_as_a_sum_does() -> None:
    share = RecentShare(smoothing=0.5)
    share.record(1.0, 1.0)  # a 1 s CPU-bound task
    share.record(0.0, 0.01)  # a 10 ms sleep
    # Sums, not a mean of ratios: (0.5 * 1 + 0) / (0.5 * 1 + 0.01), not (1 + 0) / 2.
    assert share.value == pytest.approx(0.5 / 0.51)


def test_share_follows_a_change_of_workload_within_a_few_dozen_tasks() -> None:
    share = RecentShare()
    for _ in range(100):
        share.record(0.001, 0.25)  # sleeping tasks
    assert share.value is not None and share.value < 0.01
    for _ in range(30):
        share.record(0.25, 0.25)  # now CPU-bound
    assert share.value is not None and share.value > 0.95


@pytest.mark.parametrize(("part", "whole"), [(-1.0, 1.0), (1.0, -1.0), (math.nan, 1.0),
                                             (1.0, math.inf)])
def test_share_rejects_bad_pairs(part: float, whole: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        RecentShare().record(part, whole)


def test_a_batch_of_pairs_records_what_one_by_one_recording_does() -> None:
    pairs = [(i / 100, i / 50 + 0.01) for i in range(40)]
    batch, single = RecentShare(), RecentShare()
    batch.record_all(pairs)
    for part, whole in pairs:
        single.record(part, whole)
    assert (batch.value, batch.count) == (single.value, single.count)
    with pytest.raises(ValueError, match="finite"):
        batch.record_all([(0.5, 1.0), (math.nan, 1.0)])
    assert (batch.value, batch.count) == (single.value, single.count)  # none of them added


def test_share_rejects_bad_smoothing() -> None:
    with pytest.raises(ValueError, match="smoothing"):
        RecentShare(smoothing=0.0)
