"""Clocks, deadline sleeping and real-time priority for the control thread."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable

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
