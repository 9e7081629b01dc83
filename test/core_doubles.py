"""Test doubles for the core's tests: a settable clock, an observation feeder thread, a poll helper,
a policy that reports the images it received."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import numpy as np

from vla_ros.core.policy import PolicySpec
from vla_ros.core.scripted_policy import ScriptedPolicy, make_observation


class FakeClock:
    """A settable clock for single-threaded tests: ``clock()`` reads it, ``sleep(dt)`` advances it."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ObservationFeeder:
    """A thread submitting black-image observations to a Runtime at ``rate_hz`` (a camera stand-in).

    ``state_fn()`` gives the state to report (default: zeros). Use as a context manager.
    """

    def __init__(self, runtime, spec: PolicySpec, rate_hz: float = 30.0, state_fn=None, clock=time.monotonic):
        self.runtime, self.spec, self.period = runtime, spec, 1.0 / rate_hz
        self.state_fn = state_fn or (lambda: np.zeros(spec.state_dim, np.float32))
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observation-feeder", daemon=True)
        self.sent = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.runtime.submit_observation(make_observation(self.spec, self.clock(), self.state_fn()))
            self.sent += 1
            self._stop.wait(self.period)

    def __enter__(self) -> ObservationFeeder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2.0)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, poll: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (a liveness bound, not a speed test)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


class ImageProbePolicy(ScriptedPolicy):
    """A ScriptedPolicy that also reports what it saw: a SHA-256 of each camera's image bytes and
    the state, in ``chunk.info``, and in the actions (column i plus the byte sum of camera i / 1e6,
    the state added to every row), for transports that carry only actions: a changed pixel or
    state value changes the chunk."""

    def predict_chunk(self, observation, context):
        chunk = super().predict_chunk(observation, context)
        for i, cam in enumerate(self.spec.cameras):
            chunk.actions[:, i] += float(np.asarray(observation.images[cam], np.int64).sum()) * 1e-6
        chunk.actions += np.asarray(observation.state, np.float64)[: chunk.actions.shape[1]]
        chunk.info["images"] = {name: hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()
                                for name, img in observation.images.items()}
        chunk.info["state"] = np.asarray(observation.state).tolist()
        return chunk
