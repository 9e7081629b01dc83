"""The real runtime on a simulated clock against the simulator: what `vla_ros eval` runs.

vla_node's executor without ROS: the same ``Runtime`` (the worker's refill rule, the action
buffer and its blending, the execution clock, the one safety chain, the goal lifecycle and its
stale/starvation faults), driven by a clock that only this loop advances. Per control period:
sensors that are due (camera frames with the joint state at ``camera_rate_hz``, joint states alone
at ``joint_state_rate_hz``, the rates of sim_robot_node), a chunk that is due lands, the worker
may start an inference, one ``Runtime.tick``, the simulator follows the command for one period,
success is checked at ``success_rate_hz`` (vla_node's success topic) and completes the goal.

Latency: an inference started at simulated time t lands at t + L, where L is the wall time the
policy call took here (``latency="measured"``) or a fixed number of seconds, plus
``extra_latency_s``; the ticks in between run on the buffer as it was, as they do while a real
inference runs. Inferences start on control ticks (the real worker can start between them); with
``max_inflight`` > 1 and a simulated latency, several may be in flight, as in the threaded worker.
What remains different from the ROS path: no DDS transport, no message conversion, no
synchroniser slop, and the simulator is stepped in lockstep instead of in real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vla_ros.core.delayed_policy import DelayedPolicy
from vla_ros.core.policy import Observation, Policy
from vla_ros.core.runtime import Runtime
from vla_ros.core.runtime_types import Command, GoalResult, RuntimeConfig
from vla_ros.core.worker import PendingChunk

# the simulated robot's sensor rates, Hz (also sim_robot_node's parameter defaults)
CAMERA_RATE_HZ = 15.0
JOINT_STATE_RATE_HZ = 50.0
SUCCESS_RATE_HZ = 10.0


def sim_robot_runtime_config(spec) -> RuntimeConfig:
    """The RuntimeConfig vla_node builds from config/sim_robot.yaml for the simulated arm.

    Written out here because the simulator may not read the node's parameter table;
    test/test_sim_executor.py checks it against the YAML through the node's own conversion."""
    from vla_ros.sim.scene import JOINT_RANGES

    unknown = [name for name in spec.action_names if name not in JOINT_RANGES]
    if unknown:
        raise ValueError(f"the simulated arm has no joints {unknown}; it has {list(JOINT_RANGES)}")
    lower = tuple(float(JOINT_RANGES[name][0]) for name in spec.action_names)
    upper = tuple(float(JOINT_RANGES[name][1]) for name in spec.action_names)
    config = RuntimeConfig(
        control_rate_hz=50.0, interpolation="linear", blend="crossfade", execution="async",
        refill_margin_s=0.05, starvation_policy="hold_last", max_starved_s=1.0,
        observation_max_age_s=0.5, stale_grace_s=0.5, goal_timeout_s=30.0, goal_policy="preempt",
        joint_lower=lower, joint_upper=upper, max_velocity=(3.0,) * len(lower),
        gripper_index=spec.gripper_index, realtime_priority=False,
    )  # fmt: skip
    config.validate()
    return config


class SimulatedClock:
    """Seconds that pass only when the loop says so."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class EpisodeOutcome:
    seed: int
    instruction: str
    result: GoalResult
    inferences: int
    latency_p50_s: float
    starved_ticks: int
    clamped_ticks: int
    commands: int
    first_action_s: float | None  # simulated seconds from goal start to the first non-hold command
    latencies_s: list[float] = field(default_factory=list)  # every inference's measured wall time

    @property
    def success(self) -> bool:
        """The goal completed (the simulator's success detector fired)."""
        return self.result.success

    @property
    def sim_s(self) -> float:
        """Simulated seconds from goal start to its result."""
        return self.result.duration_s

    @property
    def steps(self) -> int:
        """Action periods executed under the goal."""
        return self.result.steps


@dataclass
class EpisodeTrace:
    """What ``run_episode(trace=...)`` records: every command and when each chunk landed."""

    commands: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (stamp, positions)
    landings: list[float] = field(default_factory=list)  # simulated times chunks reached the buffer
    # at each landing onto a buffer that still had actions: the buffered plan at the control tick
    # before and the next ones (up to ``plan_ticks`` + 1, as far as the old plan went), before and
    # after the chunk was merged in ([n, A] each; the first row, already sent, is the same)
    plans: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    plan_ticks: int = 10

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Command stamps [T] and positions [T, A]."""
        stamps = np.array([t for t, _ in self.commands])
        return stamps, np.stack([q for _, q in self.commands]) if self.commands else np.zeros((0, 0))


def run_episode(
    policy: Policy,
    env,
    config: RuntimeConfig,
    seed: int,
    *,
    time_limit_s: float | None = None,
    latency: str | float = "measured",
    extra_latency_s: float = 0.0,
    trace: EpisodeTrace | None = None,
    on_observation: Callable[[Observation], None] | None = None,
) -> EpisodeOutcome:
    """One seeded episode: reset the scene, one goal through a fresh Runtime, until its result.

    ``on_observation`` sees every camera observation as it is submitted (vla_ros distill labels
    them with a teacher's chunks).

    A fresh Runtime per episode is what eval-ros does to vla_node around each reset (re-arm).
    ``time_limit_s`` (default: the env's max_steps * action_period) becomes the goal's timeout."""
    if latency != "measured" and not (isinstance(latency, (int, float)) and latency >= 0):
        raise ValueError(f"latency must be 'measured' or seconds >= 0, not {latency!r}")
    _, info = env.reset(seed=seed)
    limit = env.max_steps * env.action_period if time_limit_s is None else time_limit_s
    clock = SimulatedClock()
    results: list[GoalResult] = []
    sent = {"commands": 0, "first_action": None}
    latencies: list[float] = []

    def on_command(command: Command) -> None:
        sent["commands"] += 1
        if trace is not None:
            trace.commands.append((command.stamp, np.asarray(command.positions, dtype=np.float64)))
        if sent["first_action"] is None and command.reason == "action":
            sent["first_action"] = command.stamp

    if config.max_inflight > 1 and (latency != "measured" or extra_latency_s > 0):
        # the simulated latency is waiting, as DelayedPolicy's is: inferences may overlap it
        # (the model itself still serves one call at a time)
        policy = DelayedPolicy(policy, 0.0)
    runtime = Runtime(policy, config, on_command=on_command, clock=clock, on_result=results.append)
    worker = runtime.worker
    period = config.control_period
    due = {"camera": clock.now, "joints": clock.now, "success": clock.now}
    periods = {"camera": 1 / CAMERA_RATE_HZ, "joints": 1 / JOINT_STATE_RATE_HZ,
               "success": 1 / SUCCESS_RATE_HZ}

    def sense() -> None:
        if clock.now >= due["camera"] - 1e-9:
            seen = env.observe()
            observation = Observation(clock.now, seen["images"], seen["state"])
            runtime.submit_observation(observation)
            if on_observation is not None:
                on_observation(observation)
        elif clock.now >= due["joints"] - 1e-9:
            runtime.set_measured_state(env.joint_state(), clock.now)
        for key in ("camera", "joints"):
            if clock.now >= due[key] - 1e-9:
                due[key] += periods[key]

    sense()
    decision = runtime.start_goal(info["instruction"], timeout_s=limit)
    if not decision.accepted:
        raise RuntimeError(f"episode {seed}: the runtime rejected the goal: {decision.reason}")
    started = clock.now
    flying: list[tuple[float, PendingChunk]] = []  # (lands at, chunk), in landing order
    while not results:
        sense()
        while flying and clock.now >= flying[0][0] - 1e-9:
            lands_at, pending = flying.pop(0)
            if trace is None:
                worker.land(pending, lands_at)
                continue
            # the plan on the buffer's time axis from the tick before to the next ticks, before and
            # after the chunk was merged in (the tick before was sent already: it stays)
            ahead = worker.execution_time(lands_at) + period * np.arange(-1, trace.plan_ticks + 1)
            before, covered = worker.buffer.sample(ahead)
            n = len(covered) if covered.all() else int(np.argmin(covered))  # what the old plan covers
            if worker.land(pending, lands_at):
                trace.landings.append(lands_at)
                if n >= 3:
                    after = worker.buffer.sample(ahead[:n])[0]
                    after[0] = before[0]
                    trace.plans.append((before[:n], after))
        for _ in range(config.max_inflight):  # the worker's rule says how many may start
            wall = time.perf_counter()
            pending = worker.begin()
            if pending is None:
                break
            measured = time.perf_counter() - wall
            latencies.append(measured)
            took = measured if latency == "measured" else float(latency)
            flying.append((clock.now + took + extra_latency_s, pending))
            flying.sort(key=lambda item: item[0])
        command = runtime.tick()
        if results:  # the tick ended the goal (time limit, fault)
            break
        if command is not None:
            env.set_target(np.asarray(command.positions, dtype=np.float32))
        env.advance(period)
        clock.now += period
        if clock.now >= due["success"] - 1e-9:
            due["success"] += periods["success"]
            if env.success():
                runtime.complete_goal()  # by hand, the result is delivered inline
    stats = runtime.stats()
    runtime.stop()
    first = sent["first_action"]
    return EpisodeOutcome(
        seed=seed, instruction=info["instruction"], result=results[0], inferences=stats["inferences"],
        latency_p50_s=float(stats["latency_p50_s"]), starved_ticks=stats["starved_ticks"],
        clamped_ticks=stats["clamped_ticks"], commands=sent["commands"],
        first_action_s=None if first is None else first - started, latencies_s=latencies,
    )  # fmt: skip
