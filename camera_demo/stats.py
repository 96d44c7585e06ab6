"""Statistics of a run that may last weeks: count, mean, extremes and percentiles in memory that never grows."""

from __future__ import annotations

import math

import numpy as np

LOW_MS = 1e-3  # the histogram spans 1 µs ...
HIGH_MS = 1e6  # ... to 1000 s
STEP = math.log(1.02)  # bins 2 % wide: a percentile is read to within 2 %
BINS = math.ceil(math.log(HIGH_MS / LOW_MS) / STEP) + 1


class Stats:
    """Milliseconds (or any positive figure) seen one at a time: a log-spaced histogram of ~1,000 bins, not a list."""

    __slots__ = ("_hist", "count", "high", "low", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf
        self._hist = np.zeros(BINS, np.int64)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        k = 0 if value <= LOW_MS else min(BINS - 1, int(math.log(value / LOW_MS) / STEP))
        self._hist[k] += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, pct: float) -> float:
        """The value below which ``pct`` % of those seen fall (the middle of its 2 % bin, kept within the extremes)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * pct / 100))
        k = int(np.searchsorted(np.cumsum(self._hist), rank))
        mid = LOW_MS * math.exp((k + 0.5) * STEP)
        return min(max(mid, self.low), self.high)
