"""Load patterns: the arrival rate (tasks/s) at each moment of a run.

Every pattern is a pure function of the time ``t`` since the start, the run's
``duration`` and the ``peak`` rate, so a run can be replayed and plotted.
Shapes scale with the duration: a 15 s spike run and a 3 s one look alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: Share of the peak rate that keeps arriving between spikes and steps, so the
#: pool is never completely idle (a rate that never drops to zero).
QUIET_SHARE = 0.05

#: (start, end) of each spike, as fractions of the duration: a spike, a quiet
#: spell long enough for burst workers to leave, then a second spike.
SPIKES = ((0.05, 0.15), (0.6, 0.7))

RatePattern = Callable[[float, float, float], float]


def spike(t: float, duration: float, peak: float) -> float:
    """Two rectangular spikes at ``peak`` with quiet spells around them."""
    share = t / duration
    if any(start <= share < end for start, end in SPIKES):
        return peak
    return peak * QUIET_SHARE


def step(t: float, duration: float, peak: float) -> float:
    """A staircase up to the peak and back down: quarter, half, three quarters, full, ..."""
    levels = (0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, QUIET_SHARE)
    index = min(int(t / duration * len(levels)), len(levels) - 1)
    return peak * levels[index]


def sine(t: float, duration: float, peak: float) -> float:
    """A smooth wave between the quiet share and the peak, two periods per run."""
    low = peak * QUIET_SHARE
    phase = 2 * math.pi * 2 * t / duration
    return low + (peak - low) * (1 - math.cos(phase)) / 2


def steady(t: float, duration: float, peak: float) -> float:
    """The peak rate all the time."""
    return peak


PATTERNS: dict[str, RatePattern] = {
    "spike": spike,
    "step": step,
    "sine": sine,
    "steady": steady,
}
