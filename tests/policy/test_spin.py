"""The polling window before a sleep (procpool.policy.spin.SpinWindow), on made-up waits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from procpool.policy.spin import (
    LEAST_SECONDS,
    MARGIN,
    MOST_BETWEEN_CHUNKS_SECONDS,
    MOST_SECONDS,
    SpinWindow,
)

US = 1e-6


def test_a_new_window_is_closed_a_short_wait_opens_it_with_a_margin() -> None:
    window = SpinWindow()
    assert window.seconds == 0.0
    window.waited(60 * US)
    assert window.seconds == 60 * US * MARGIN


def test_a_wait_caught_while_polling_leaves_the_window_as_it_is() -> None:
    window = SpinWindow()
    window.waited(100 * US)
    window.waited(40 * US)
    assert window.seconds == 100 * US * MARGIN


def test_a_wait_a_little_over_the_window_widens_it_never_past_the_most() -> None:
    window = SpinWindow()
    window.waited(50 * US)
    window.waited(120 * US)
    assert window.seconds == 120 * US * MARGIN
    window.waited(MOST_SECONDS)
    assert window.seconds == MOST_SECONDS


def test_long_waits_halve_the_window_then_close_it() -> None:
    window = SpinWindow()
    window.waited(MOST_SECONDS)
    window.waited(1.0)  # a pool between bursts
    assert window.seconds == MOST_SECONDS / 2
    for _ in range(20):
        window.waited(1.0)
    assert window.seconds == 0.0
    window.waited(1.0)
    assert window.seconds == 0.0  # closed stays closed while waits stay long
    window.waited(2 * LEAST_SECONDS)
    assert window.seconds == 2 * LEAST_SECONDS * MARGIN  # and reopens on a short one


def test_a_window_with_a_higher_ceiling_covers_the_waits_between_map_chunks() -> None:
    between_tasks, between_chunks = SpinWindow(), SpinWindow(most=MOST_BETWEEN_CHUNKS_SECONDS)
    for window in (between_tasks, between_chunks):
        window.waited(0.0012)  # a caller slicing the next chunk
    assert between_tasks.seconds == 0.0  # longer than a round trip: slept through
    assert between_chunks.seconds == 0.0012 * MARGIN <= MOST_BETWEEN_CHUNKS_SECONDS
    between_chunks.waited(1.0)  # the map ended
    assert between_chunks.seconds == 0.0012 * MARGIN / 2


@given(st.lists(st.floats(min_value=0.0, max_value=10.0), max_size=50),
       st.floats(min_value=0.0, max_value=1.0), st.sampled_from([MOST_SECONDS, 0.002]))
def test_the_window_stays_bounded_and_covers_any_short_wait_it_just_saw(
        waits: list[float], short: float, most: float) -> None:
    window = SpinWindow(most)
    for seconds in waits:
        window.waited(seconds)
        assert window.seconds == 0.0 or LEAST_SECONDS <= window.seconds <= most
    window.waited(short)
    if short <= most:
        assert window.seconds >= short  # the same wait again is caught while polling
