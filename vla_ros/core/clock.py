"""Clocks, deadline sleeping and real-time priority for the control thread."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable

import numpy as np

Clock = Callable[[], float]


def sleep_until(deadline: float, spin_s: float = 0.0, now: Clock = time.monotonic) -> None:
    """Sleep until ``deadline`` on ``now``'s clock.

    The OS wakes a sleeper up to a scheduler slice late; sleeping until ``spin_s`` before the
    deadline and busy-waiting the rest trades a little CPU for a tighter wake-up.
    """
    remaining = deadline - now() - spin_s
    if remaining > 0:
        time.sleep(remaining)
    while now() < deadline:
        pass


def try_realtime_priority(level: int = 50) -> tuple[bool, str]:
    """Make the calling thread SCHED_FIFO at ``level``; warn and return (False, why) if not permitted.

    On Linux a thread is a task, so pid 0 targets only the calling thread.
    """
    if not hasattr(os, "sched_setscheduler"):
        message = "SCHED_FIFO not available on this platform; control loop runs at normal priority"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return False, message
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(level))
    except (PermissionError, OSError) as exc:
        message = (
            f"could not set SCHED_FIFO priority {level} ({exc}); control loop runs at normal "
            "priority (grant CAP_SYS_NICE or an rtprio limit to enable it)"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return False, message
    return True, f"SCHED_FIFO priority {level}"


class ExecutionClock:
    """Execution time: runtime-clock time that stands still while the robot holds.

    Chunks are placed on this axis, so latency compensation drops only the actions the robot
    really executed since the observation. While the buffer is starved the robot holds and this
    clock stops; a chunk computed from an observation taken during the hold then starts at its
    first action instead of skipping actions for time the robot spent standing still. While
    actions flow it runs at the rate of the runtime clock (equal to it until the first hold).
    """

    def __init__(self, history: int = 1024) -> None:
        self._lock = threading.Lock()
        self._wall: deque[float] = deque(maxlen=history)
        self._exec: deque[float] = deque(maxlen=history)
        self._executing = True  # whether the robot executes from the last tick on

    def tick(self, wall: float, executing_since_last: bool | None = None) -> float:
        """Record a control tick at ``wall``; the interval since the previous tick counts when
        the robot was executing (``executing_since_last``, default: what ``set_executing`` said)."""
        with self._lock:
            if not self._wall:
                exec_now = wall
            else:
                running = self._executing if executing_since_last is None else executing_since_last
                exec_now = self._exec[-1] + (max(0.0, wall - self._wall[-1]) if running else 0.0)
            self._wall.append(wall)
            self._exec.append(exec_now)
            return exec_now

    def set_executing(self, executing: bool) -> None:
        """Whether the robot executes actions from the latest tick until the next one."""
        with self._lock:
            self._executing = executing

    def at(self, wall: float) -> float:
        """Execution time of runtime-clock time ``wall`` (interpolated between ticks)."""
        with self._lock:
            if not self._wall:
                return wall
            last_wall, last_exec = self._wall[-1], self._exec[-1]
            if wall >= last_wall:
                return last_exec + (wall - last_wall if self._executing else 0.0)
            if wall <= self._wall[0]:
                return self._exec[0] - (self._wall[0] - wall)
            walls = np.fromiter(self._wall, dtype=np.float64, count=len(self._wall))
            execs = np.fromiter(self._exec, dtype=np.float64, count=len(self._exec))
        return float(np.interp(wall, walls, execs))
