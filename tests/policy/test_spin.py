"""The polling window before a sleep (procpool.policy.spin.SpinWindow), on made-up waits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from procpool.policy.spin import LEAST_SECONDS, MARGIN, MOST_SECONDS, SpinWindow

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


@given(st.lists(st.floats(min_value=0.0, max_value=10.0), max_size=50),
       st.floats(min_value=0.0, max_value=MOST_SECONDS))
def test_the_window_stays_bounded_and_covers_any_short_wait_it_just_saw(
        waits: list[float], short: float) -> None:
    window = SpinWindow()
    for seconds in waits:
        window.waited(seconds)
        assert window.seconds == 0.0 or LEAST_SECONDS <= window.seconds <= MOST_SECONDS
    window.waited(short)
    assert window.seconds >= short  # the same wait again is caught while polling
