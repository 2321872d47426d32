"""How far a rise must go to count: out of the metric's own jitter, and at least its floor.

At a short ``collect_interval`` under steady traffic, CPU and latency jitter by more than the
25 % a ``diff`` rule asks, so a rise must also stand :data:`NOISE_SIGMAS` standard deviations
above the average, the deviation estimated robustly (from the median absolute deviation) so
that one earlier spike does not mask the next.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection

NOISE_SIGMAS = 5.0
"""A rise (``diff``) must also be this many standard deviations of the window over its
average: at a short interval under steady traffic, CPU and latency jitter by more than 25 %."""
MAD_TO_SIGMA = 1.4826
"""The standard deviation of normal data is 1.4826 times its median absolute deviation."""
NOISE_HISTORY = 30
"""Samples the jitter is estimated over (at least the window): ten are too few for a median."""
MIN_RISE_OF_FLOOR = 1.0
"""A rise (``diff``) must also be at least the rule's floor: the floor says which level
matters, and a rise smaller than it does not either (CPU from 14 % to 22 % for one second
against a 10 % floor, seen under steady traffic at a 1 s interval)."""


def jitter(recent: Collection[float]) -> float:
    """:data:`NOISE_SIGMAS` standard deviations of ``recent`` (non-empty), estimated from its
    median absolute deviation."""
    middle = statistics.median(recent)
    mad = statistics.median(abs(value - middle) for value in recent)
    return NOISE_SIGMAS * MAD_TO_SIGMA * mad


def floor_rise(floor: float) -> float:
    """The smallest rise that counts for a rule whose floor (``min``) is ``floor``."""
    return floor * MIN_RISE_OF_FLOOR
