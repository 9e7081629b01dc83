"""The small value types the runtime hands to its users (re-exported by ``vla_ros.core.runtime``).

They live apart from ``runtime.py`` so the task runner, control loop and worker can use them
without importing the facade that wires them together.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

# The runtime's enumerations, declared here only; the ROS parameters and the buffer take their
# allowed values from the tuples below.
Interpolation = Literal["linear", "hold"]
BlendRule = Literal["replace", "average", "crossfade", "ensemble"]
StarvationPolicy = Literal["hold_last", "hold_measured"]
GoalPolicy = Literal["preempt", "reject"]
GroundingMode = Literal["reject", "warn", "off"]
InstructionRewrite = Literal["canonical", "off"]
ExecutionMode = Literal["async", "sync"]
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
BLEND_RULES: tuple[str, ...] = get_args(BlendRule)
STARVATION_POLICIES: tuple[str, ...] = get_args(StarvationPolicy)
GOAL_POLICIES: tuple[str, ...] = get_args(GoalPolicy)
GROUNDING_MODES: tuple[str, ...] = get_args(GroundingMode)
INSTRUCTION_REWRITES: tuple[str, ...] = get_args(InstructionRewrite)
EXECUTIONS: tuple[str, ...] = get_args(ExecutionMode)
RtcMode = Literal["off", "cheap", "exact", "prefix"]  # real-time chunking's guidance (models/vla.py: Guide)
RTC_MODES: tuple[str, ...] = get_args(RtcMode)


class TerminationReason(str, enum.Enum):
    """Why a goal ended; the values equal the lower-case constants of ExecuteInstruction.action."""

    COMPLETED = "completed"
    TIMEOUT = "timeout"
    MAX_STEPS = "max_steps"
    CANCELED = "canceled"
    PREEMPTED = "preempted"
    FAULT = "fault"
    ESTOP = "estop"
    SHUTDOWN = "shutdown"

    def __str__(self) -> str:  # so f"{reason}" gives "completed", not "TerminationReason.COMPLETED"
        return self.value


class RejectReason(str, enum.Enum):
    """Why ``start_goal`` refused a goal (``GoalDecision.reason``)."""

    NO_MODEL = "no model"
    MODEL_NOT_READY = "model not ready"  # its worker process is starting, restarting or down
    NO_FRESH_OBSERVATION = "no fresh observation"
    ESTOP_LATCHED = "e-stop latched"
    BUSY = "busy"  # a goal is active and goal_policy == "reject"
    NOT_RUNNING = "runtime not running"
    BAD_REQUEST = "bad request"
    NOT_UNDERSTOOD = "instruction not understood"  # core/grounding.py found no task or object it knows

    def __str__(self) -> str:
        return self.value


@dataclass
class RuntimeConfig:
    """Every knob of the runtime. Times in seconds, angles in radians.

    Joint limits are per action dimension (same order as ``PolicySpec.action_names``); ``None``
    means unbounded for position limits. ``max_velocity`` is a scalar for all dimensions or one
    value per dimension (the gripper in its normalised units per second).
    """

    # control loop
    control_rate_hz: float = 50.0
    interpolation: Interpolation = "linear"  # between consecutive actions of the buffer
    realtime_priority: bool = False  # try SCHED_FIFO for the control thread (warns if not permitted)
    realtime_priority_level: int = 50  # SCHED_FIFO priority, 1..99
    spin_s: float = 0.0002  # busy-wait this long before each deadline instead of sleeping
    # Python hands the GIL to a waiting thread only every switch interval (default 5 ms), so any
    # other thread running Python code (the worker's IPC, executor callbacks) can delay the
    # control thread's wake-up that long. start() lowers it process-wide to this; None leaves the
    # interpreter's setting alone. `python -m vla_ros.bench jitter --quick` (model in the child):
    # period-error p99 0.67 ms at 500 us, 0.20 ms at 50 us, 0.07 ms at 25 us. A waiting thread is
    # what triggers a switch, so a process whose threads mostly sleep pays little for a short one.
    gil_switch_interval_s: float | None = 0.000025

    # action buffer and blending
    blend: BlendRule = "crossfade"
    average_new_weight: float = 0.7  # "average": new = w * new + (1 - w) * old on the overlap
    crossfade_steps: int = 5  # "crossfade": ramp from old to new over this many actions
    ensemble_decay: float = 0.1  # "ensemble": prediction i (0 = oldest) weighs exp(-decay * i)

    # inference worker
    execution: ExecutionMode = "async"  # "sync": infer only once the buffer is used up (openpi-style)
    refill_margin_s: float = 0.05  # refill when remaining future < p95 latency + this margin
    latency_window: int = 20  # inferences kept for the latency percentiles
    # Pipelined inference: up to this many inferences in flight (bounded by Policy.concurrency).
    # With one, a chunk must land before the previous one runs out, which starves the buffer
    # above about half a chunk of latency; k staggered inferences land every latency / k.
    max_inflight: int = 1
    # Real-time chunking: hand each observation the buffered actions due from its stamp on and
    # how many of them run before the chunk lands (from the p95 latency), for the policy to
    # inpaint its chunk against (the built-in flow head does; others ignore them).
    real_time_chunking: bool = False
    stop_timeout_s: float = 2.0  # how long stop() waits for each thread
    future_points: int = 0  # > 0: each action Command carries up to this many filtered future points

    # starvation and staleness
    # hold_last: repeat the last command; hold_measured: go (velocity-limited) to the measured
    # position. (Commands are positions only, so a "zero velocity" policy would be hold_last.)
    starvation_policy: StarvationPolicy = "hold_last"
    max_starved_s: float = 1.0  # starved longer than this under a goal -> fault
    observation_max_age_s: float = 0.5  # an observation older than this is stale
    stale_grace_s: float = 0.5  # stale for longer than this under a goal -> fault

    # goals
    goal_timeout_s: float = 0.0  # default goal timeout, 0 = none
    goal_max_steps: int = 0  # default step budget, 0 = none
    goal_policy: GoalPolicy = "preempt"  # what a new goal does to an active one
    # What a goal whose instruction names no task or object the policy's lexicon knows does
    # (core/grounding.py): reject it, accept it with a warning, or skip the check.
    instruction_grounding: GroundingMode = "reject"
    # canonical: the model is given its own phrasing of what the grounding check read (the
    # lexicon's phrasings: "pick up the red cube" for "Could you grab the RED block?"); off, or
    # an instruction the check did not read (grounding off, or not grounded under "warn"): the
    # words as typed.
    instruction_rewrite: InstructionRewrite = "canonical"

    # safety
    joint_lower: tuple[float, ...] | None = None
    joint_upper: tuple[float, ...] | None = None
    max_velocity: float | tuple[float, ...] = 2.0  # largest |step| per second, per dimension
    gripper_index: int | None = None  # None: take PolicySpec.gripper_index
    gripper_range: tuple[float, float] = (0.0, 1.0)
    action_mode: Literal["absolute", "delta"] | None = None  # None: take PolicySpec.action_mode
    dry_run: bool = False  # compute everything, command only holds (``Command.proposed`` has the rest)

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_rate_hz

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks = [
            (self.control_rate_hz > 0, "control_rate_hz must be > 0"),
            (self.interpolation in INTERPOLATIONS, f"interpolation must be one of {INTERPOLATIONS}"),
            (self.blend in BLEND_RULES, f"blend must be one of {BLEND_RULES}"),
            (0.0 <= self.average_new_weight <= 1.0, "average_new_weight must be in [0, 1]"),
            (self.crossfade_steps >= 0, "crossfade_steps must be >= 0"),
            (self.execution in EXECUTIONS, f"execution must be one of {EXECUTIONS}"),
            (self.refill_margin_s >= 0, "refill_margin_s must be >= 0"),
            (self.latency_window >= 1, "latency_window must be >= 1"),
            (1 <= self.max_inflight <= 32, "max_inflight must be in 1..32"),
            (
                not (self.real_time_chunking and self.max_inflight > 1),
                "real_time_chunking needs max_inflight 1: inferences in flight together are each "
                "guided against the buffer, not against one another (`python -m vla_ros.bench "
                "chunking` measured larger switch jumps than without RTC)",
            ),
            (self.future_points >= 0, "future_points must be >= 0"),
            (
                self.starvation_policy in STARVATION_POLICIES,
                f"starvation_policy must be one of {STARVATION_POLICIES}, not {self.starvation_policy!r}",
            ),
            (self.max_starved_s > 0, "max_starved_s must be > 0"),
            (self.observation_max_age_s > 0, "observation_max_age_s must be > 0"),
            (self.stale_grace_s >= 0, "stale_grace_s must be >= 0"),
            (self.goal_timeout_s >= 0, "goal_timeout_s must be >= 0"),
            (self.goal_max_steps >= 0, "goal_max_steps must be >= 0"),
            (self.goal_policy in GOAL_POLICIES, f"goal_policy must be one of {GOAL_POLICIES}"),
            (
                self.instruction_grounding in GROUNDING_MODES,
                f"instruction_grounding must be one of {GROUNDING_MODES}, not {self.instruction_grounding!r}",
            ),
            (
                self.instruction_rewrite in INSTRUCTION_REWRITES,
                f"instruction_rewrite must be one of {INSTRUCTION_REWRITES}, "
                f"not {self.instruction_rewrite!r}",
            ),
            (self.gripper_range[0] <= self.gripper_range[1], "gripper_range must be (low, high)"),
            (self.action_mode in (None, "absolute", "delta"), "action_mode must be absolute or delta"),
            (1 <= self.realtime_priority_level <= 99, "realtime_priority_level must be in 1..99"),
            (self.spin_s >= 0, "spin_s must be >= 0"),
            (
                self.gil_switch_interval_s is None or self.gil_switch_interval_s > 0,
                "gil_switch_interval_s must be > 0 or None",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"RuntimeConfig: {message}")
        mv = np.atleast_1d(np.asarray(self.max_velocity, dtype=float))
        if not np.all(np.isfinite(mv)) or np.any(mv <= 0):
            raise ValueError(f"RuntimeConfig: max_velocity must be finite and > 0, got {self.max_velocity}")


@dataclass
class Command:
    """What the control loop sends every tick, always after the safety filter.

    ``held`` is True when the command is a hold rather than the policy's action; ``reason``
    says why: "action", "idle", "starved", "estop", "fault", "dry_run", "invalid_action".
    ``clamped`` is True when the safety filter changed the policy's action.
    ``proposed`` is the filtered action a dry run did not send (None otherwise).
    """

    stamp: float
    positions: np.ndarray  # float64 [action_dim], absolute targets
    held: bool
    reason: str
    clamped: bool = False
    proposed: np.ndarray | None = None
    # the buffered points after this one, filtered by the same safety chain: ((seconds ahead,
    # positions), ...); only for actions, and only when RuntimeConfig.future_points > 0
    future: tuple[tuple[float, np.ndarray], ...] = ()


@dataclass(frozen=True)
class GoalDecision:
    accepted: bool
    reason: str  # "" when accepted, else a RejectReason value plus detail
    goal_id: int  # the new goal's id when accepted, -1 otherwise


@dataclass(frozen=True)
class GoalResult:
    goal_id: int
    success: bool  # True only for TerminationReason.COMPLETED
    reason: TerminationReason
    message: str
    steps: int  # action periods executed under the goal
    duration_s: float


@dataclass(frozen=True)
class Feedback:
    goal_id: int  # -1 when no goal is active
    step: int
    elapsed_s: float
    latency_s: float  # latest inference latency
    buffered: int  # future actions in the buffer
    state: str  # "idle", "waiting" (goal accepted, first chunk pending), "running", "estop"
    buffered_s: float = 0.0  # seconds of future actions in the buffer
    faults: tuple[str, ...] = field(default_factory=tuple)  # recent fault messages
