"""Rolling windows and percentiles for latency and tick-period statistics."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class RollingWindow:
    """The last ``size`` samples of a quantity; thread-safe, percentiles on demand."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"RollingWindow size must be >= 1, got {size}")
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.count = 0  # all samples ever added, not only those in the window

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(float(value))
            self.count += 1

    def values(self) -> np.ndarray:
        with self._lock:
            return np.fromiter(self._values, dtype=np.float64, count=len(self._values))

    def percentile(self, q: float, default: float = 0.0) -> float:
        values = self.values()
        return float(np.percentile(values, q)) if len(values) else default

    def last(self, default: float = 0.0) -> float:
        with self._lock:
            return self._values[-1] if self._values else default

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)


class RingBuffer:
    """The last ``size`` float samples in a preallocated array: O(1) ``append``, one memcpy per
    ``values()``. The control loop appends under its lock every tick, so a reader must not hold
    that lock for long: copying a deque of 100k floats element by element took milliseconds."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"RingBuffer size must be >= 1, got {size}")
        self._data = np.zeros(size, dtype=np.float64)
        self._next = 0  # index of the next write
        self.count = 0  # samples ever appended

    def append(self, value: float) -> None:
        self._data[self._next] = value
        self._next = (self._next + 1) % len(self._data)
        self.count += 1

    def values(self) -> np.ndarray:
        """The kept samples, oldest first (a copy)."""
        if self.count < len(self._data):
            return self._data[: self._next].copy()
        return np.concatenate((self._data[self._next :], self._data[: self._next]))

    def __len__(self) -> int:
        return min(self.count, len(self._data))


def summarize_ms(samples_s: np.ndarray, prefix: str) -> dict[str, float]:
    """p50/p99/max/mean of samples in seconds, as ``{prefix}_p50_ms: ...``."""
    if len(samples_s) == 0:
        return {f"{prefix}_{k}_ms": float("nan") for k in ("p50", "p99", "max", "mean")}
    return {
        f"{prefix}_p50_ms": float(np.percentile(samples_s, 50) * 1e3),
        f"{prefix}_p99_ms": float(np.percentile(samples_s, 99) * 1e3),
        f"{prefix}_max_ms": float(np.max(samples_s) * 1e3),
        f"{prefix}_mean_ms": float(np.mean(samples_s) * 1e3),
    }


def period_errors(tick_times: np.ndarray, period: float) -> np.ndarray:
    """|actual interval between consecutive ticks - nominal period|, seconds."""
    if len(tick_times) < 2:
        return np.zeros(0)
    return np.abs(np.diff(tick_times) - period)
