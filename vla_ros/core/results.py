"""Goal results kept for the front-ends that wait on them, whichever thread ends the goal."""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable

from vla_ros.core.runtime_types import GoalResult

log = logging.getLogger(__name__)


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


class ResultDispatcher:
    """Hands goal results to ``deliver`` on a thread of its own once started, inline before.

    A goal may end inside a control tick (timeout, stale input, starvation); what the front-end
    does with its result (logging, status messages, statistics) must not run on the control
    thread. ``submit`` is O(1) from any thread; results are delivered in order. A runtime
    stepped by hand (tests on a fake clock) never starts the thread and gets them inline.
    """

    def __init__(self, deliver: Callable[[GoalResult], None], on_error: Callable[[GoalResult], None]) -> None:
        self._deliver, self._on_error = deliver, on_error
        self._queue: queue.SimpleQueue[GoalResult | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vla_ros-results", daemon=True)
            self._thread.start()

    def submit(self, result: GoalResult) -> None:
        if self._thread is None:
            self._call(result)
        else:
            self._queue.put(result)

    def stop(self, timeout: float) -> bool:
        """Deliver what is queued, then end the thread (bounded wait); True if it ended."""
        thread = self._thread
        if thread is None:
            return True
        self._queue.put(None)
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while (result := self._queue.get()) is not None:
            self._call(result)

    def _call(self, result: GoalResult) -> None:
        try:
            self._deliver(result)
        except Exception:
            self._on_error(result)
            log.exception("on_result callback failed for goal %d", result.goal_id)
