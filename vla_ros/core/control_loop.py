"""A dedicated thread that calls a step function on absolute deadlines.

Deadline ``k`` is ``t0 + k * period`` on ``time.monotonic`` (never ``last_wake + period``, which
drifts). A tick that wakes more than a period late skips the deadlines it missed, counting
them, instead of running them back to back in a burst.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable

import numpy as np

from vla_ros.core.clock import sleep_until, try_realtime_priority
from vla_ros.core.stats import RingBuffer, period_errors, summarize_ms

log = logging.getLogger(__name__)


def skip_missed(deadline: float, now: float, period: float) -> tuple[float, int]:
    """The deadline to run now and how many were skipped: when ``now`` is a period or more past
    ``deadline``, jump to the latest deadline already passed instead of running each in a burst."""
    late = now - deadline
    if late < period:
        return deadline, 0
    skipped = int(late // period)
    return deadline + skipped * period, skipped


class ControlLoop:
    """Runs ``step()`` every ``period`` seconds in its own thread; exceptions are counted, not fatal."""

    def __init__(
        self,
        period: float,
        step: Callable[[], object],
        *,
        spin_s: float = 0.0002,
        realtime_priority: bool = False,
        realtime_priority_level: int = 50,
        name: str = "vla_ros-control",
        history: int = 100_000,
    ) -> None:
        if not period > 0:
            raise ValueError(f"control period must be > 0, got {period}")
        self.period = period
        self._step = step
        self.spin_s = spin_s
        self.realtime_priority = realtime_priority
        self.realtime_priority_level = realtime_priority_level
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_times = RingBuffer(history)  # wake-up times, monotonic
        self._lateness = RingBuffer(history)  # wake-up minus deadline
        self._lock = threading.Lock()
        self.ticks = 0
        self.missed_ticks = 0
        self.step_errors = 0
        self.last_error = ""
        self.priority_status = "normal priority"
        self.realtime_granted = False  # the thread got the SCHED_FIFO it asked for
        self._scheduled = threading.Event()  # set once the thread has tried its priority

    def start(self) -> None:
        """Start the loop's thread; returns once the thread has set its scheduling
        (``priority_status`` then says what it got)."""
        if self._thread is not None:
            raise RuntimeError("control loop already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._scheduled.wait(1.0)

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the loop to stop and wait up to ``timeout``; True if the thread ended."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        if self.realtime_priority:
            self.realtime_granted, self.priority_status = try_realtime_priority(self.realtime_priority_level)
        self._scheduled.set()
        period = self.period
        deadline = time.monotonic() + period
        while not self._stop.is_set():
            sleep_until(deadline, self.spin_s)
            now = time.monotonic()
            deadline, skipped = skip_missed(deadline, now, period)
            with self._lock:
                self.missed_ticks += skipped
                self._tick_times.append(now)
                self._lateness.append(now - deadline)
                self.ticks += 1
            try:
                self._step()
            except Exception as exc:  # the loop must outlive any bug in a step
                with self._lock:
                    self.step_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("control step failed: %s\n%s", exc, traceback.format_exc())
            deadline += period

    def tick_times(self) -> np.ndarray:
        with self._lock:
            return self._tick_times.values()

    def stats(self) -> dict:
        with self._lock:
            times = self._tick_times.values()
            lateness = self._lateness.values()
            out = {
                "ticks": self.ticks,
                "missed_ticks": self.missed_ticks,
                "step_errors": self.step_errors,
                "last_step_error": self.last_error,
                "priority": self.priority_status,
            }
        periods = np.diff(times) if len(times) > 1 else np.zeros(0)
        out.update(summarize_ms(periods, "period"))
        out.update(summarize_ms(period_errors(times, self.period), "period_error"))
        out.update(summarize_ms(lateness, "lateness"))
        return out
