"""Goal results kept for the front-ends that wait on them, whichever thread ends the goal."""

from __future__ import annotations

import collections
import threading

from vla_ros.core.runtime_types import GoalResult


class GoalResults:
    """The results of the last ``keep`` goals by id, and the newest one.

    The runtime hands a result over (``put``) from whatever thread ends the goal, possibly before
    the front-end that started it begins to wait; ``wait`` finds it either way. Lock-protected;
    put and wait are cheap (the control thread may call put).
    """

    def __init__(self, keep: int = 256) -> None:
        self._keep = keep
        self._cond = threading.Condition()
        self._results: collections.OrderedDict[int, GoalResult] = collections.OrderedDict()
        self._last: GoalResult | None = None

    def put(self, result: GoalResult) -> None:
        with self._cond:
            self._last = result
            if result.goal_id >= 0:
                self._results[result.goal_id] = result
                while len(self._results) > self._keep:
                    self._results.popitem(last=False)
            self._cond.notify_all()

    def wait(self, goal_id: int, timeout_s: float | None = None) -> GoalResult | None:
        """The result of goal ``goal_id``, waiting up to ``timeout_s`` for it; None if not yet ended."""
        with self._cond:
            self._cond.wait_for(lambda: goal_id in self._results, timeout_s)
            return self._results.get(goal_id)

    @property
    def last(self) -> GoalResult | None:
        with self._cond:
            return self._last
