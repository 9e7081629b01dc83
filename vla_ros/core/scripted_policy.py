"""A model-free deterministic policy for benchmarks and tests: scripted actions, set latency, faults.

``ScriptedPolicy`` predicts samples of a smooth trajectory ``fn(t)`` at the chunk's due times, so
chunks computed from different observations agree where they overlap (blending is then
invisible), and it can be told to be slow, to raise, or to hang until released.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from vla_ros.core.policy import ActionChunk, InstructionContext, Observation, Policy, PolicySpec

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
SO100_NAMES = (*ARM_JOINTS, "gripper")


def default_spec(chunk_size: int = 10, action_period: float = 0.1, image_size=(64, 64)) -> PolicySpec:
    """The SO-100-style spec of docs/CONTRACTS.md."""
    return PolicySpec(
        action_names=SO100_NAMES,
        state_names=SO100_NAMES,
        chunk_size=chunk_size,
        action_period=action_period,
        cameras=("scene", "wrist"),
        image_size=image_size,
        action_mode="absolute",
        gripper_index=5,
    )


def sine_trajectory(amplitude: float = 0.5, frequency_hz: float = 0.2, dim: int = 6) -> Callable:
    """t -> float64[dim]: slow sines with per-joint phase; the gripper (last) stays in [0, 1]."""
    phases = np.linspace(0.0, np.pi, dim)

    def fn(t: float) -> np.ndarray:
        q = amplitude * np.sin(2 * np.pi * frequency_hz * t + phases)
        q[-1] = 0.5 + 0.5 * np.sin(2 * np.pi * frequency_hz * t)
        return q

    return fn


class PolicyFault(RuntimeError):
    """The error ScriptedPolicy raises when told to fail."""


class ScriptedPolicy(Policy):
    """Deterministic test policy.

    latency_s: seconds each ``predict_chunk`` sleeps (a float, or a callable of the call index).
    raise_on: call indices (0-based) of ``predict_chunk`` that raise ``PolicyFault``; or
        ``raise_always=True``.
    hang_on: call indices that block until ``release()`` (or ``hang_always=True``).
    nan_on / wrong_shape_on: call indices that return a chunk of NaN actions / one action short.
    fn: trajectory t -> actions; default ``sine_trajectory``: action k is ``fn`` at its due time,
        t_obs + (k + spec.action_offset_steps) * dt.
    sleep: how latency is spent (``time.sleep``; ``FakeClock.sleep`` to advance a fake clock).
    Records ``calls`` (predict count), ``instructions`` and ``resets``. Its latency is a sleep,
    so it serves concurrent calls (pipelined inference).
    """

    concurrency = 32

    def __init__(
        self,
        spec: PolicySpec | None = None,
        latency_s: float | Callable[[int], float] = 0.0,
        fn: Callable[[float], np.ndarray] | None = None,
        raise_on: tuple[int, ...] = (),
        raise_always: bool = False,
        hang_on: tuple[int, ...] = (),
        hang_always: bool = False,
        encode_raises: bool = False,
        nan_on: tuple[int, ...] = (),
        wrong_shape_on: tuple[int, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec or default_spec()
        self.latency_s = latency_s
        self.fn = fn or sine_trajectory(dim=self.spec.action_dim)
        self.raise_on = set(raise_on)
        self.raise_always = raise_always
        self.hang_on = set(hang_on)
        self.hang_always = hang_always
        self.encode_raises = encode_raises
        self.nan_on, self.wrong_shape_on = set(nan_on), set(wrong_shape_on)
        self.sleep = sleep
        self.calls = 0
        self._count_lock = threading.Lock()
        self.instructions: list[str] = []
        self.resets = 0
        self._released = threading.Event()
        self.hanging = threading.Event()  # set while a call is blocked in a hang

    def release(self) -> None:
        """Let every hanging call (current and future) return."""
        self._released.set()

    def encode_instruction(self, text: str) -> InstructionContext:
        if self.encode_raises:
            raise PolicyFault(f"ScriptedPolicy told to fail encoding {text!r}")
        self.instructions.append(text)
        return InstructionContext(text=text, num_tokens=len(text.split()))

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        with self._count_lock:
            index = self.calls
            self.calls += 1
        latency = self.latency_s(index) if callable(self.latency_s) else self.latency_s
        if latency > 0:
            self.sleep(latency)
        if self.hang_always or index in self.hang_on:
            self.hanging.set()
            self._released.wait()
            self.hanging.clear()
        if self.raise_always or index in self.raise_on:
            raise PolicyFault(f"ScriptedPolicy told to fail on call {index}")
        dt = self.spec.action_period
        times = observation.stamp + dt * (np.arange(self.spec.chunk_size) + self.spec.action_offset_steps)
        actions = np.stack([self.fn(t) for t in times]).astype(np.float64)
        if index in self.nan_on:
            actions[:] = np.nan
        if index in self.wrong_shape_on:
            actions = actions[:, :-1]
        return ActionChunk(t_obs=observation.stamp, actions=actions, dt=dt)

    def reset(self) -> None:
        self.resets += 1


def scripted_policy(image_size: int = 64, latency_s: float = 0.0) -> ScriptedPolicy:
    """A ScriptedPolicy with square images of ``image_size``: the model-free policy a policy_server
    or a worker process runs to measure its transport (plain arguments: JSON or pickle carry them)."""
    return ScriptedPolicy(spec=default_spec(image_size=(image_size, image_size)), latency_s=latency_s)


def make_observation(spec: PolicySpec, stamp: float, state: np.ndarray | None = None) -> Observation:
    """A black-image observation with the given (default zero) state."""
    h, w = spec.image_size
    images = {name: np.zeros((h, w, 3), np.uint8) for name in spec.cameras}
    st = np.zeros(spec.state_dim, np.float32) if state is None else np.asarray(state, np.float32)
    return Observation(stamp=stamp, images=images, state=st)
