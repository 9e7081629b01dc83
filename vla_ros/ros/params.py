"""The node's parameters: one table with type, default, description and valid range.

`declare(node)` declares them all with a ParameterDescriptor (so `ros2 param describe` explains
each); `read_config(node)` reads and validates them at configure time into a `NodeConfig`, raising
`ConfigError` whose message names the parameter and its valid range. Per-camera parameters
(`cameras.<name>.topic`, `cameras.<name>.transport`) are declared once `camera_names` is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vla_ros.core.runtime_types import (
    BLEND_RULES,
    EXECUTIONS,
    GOAL_POLICIES,
    GROUNDING_MODES,
    INSTRUCTION_REWRITES,
    INTERPOLATIONS,
    RTC_MODES,
    STARVATION_POLICIES,
    RuntimeConfig,
)

OUTPUT_MODES = ("position_array", "joint_trajectory", "joint_state")
TRAJECTORY_MODES = ("single_point", "buffer")
GRIPPER_OUTPUTS = (
    "with_arm",
    "array",
    "trajectory",
    "parallel_gripper_action",
    "gripper_command_action",
    "none",
)
TRANSPORTS = ("raw", "compressed")
POLICY_PROCESSES = ("child", "local", "remote")
POLICY_BACKENDS = ("vla_ros", "lerobot")


class ConfigError(ValueError):
    """A parameter value that fails validation; the message names the parameter and valid range."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    valid: str = ""  # human-readable valid range, used in descriptors and errors
    check: Callable[[Any], bool] | None = None


def _between(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: (lo < v if lo_open else lo <= v) and v <= hi


def _one_of(options: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda v: v in options


PARAMS: tuple[Param, ...] = (
    # model
    Param(
        "checkpoint_dir",
        "",
        "Model checkpoint directory; empty = the default checkpoint ($VLA_ROS_CHECKPOINT, the source "
        "tree's checkpoints/tiny_flow, or share/vla_ros/checkpoints/tiny_flow of the install). Its "
        "files choose the backend: one written by `vla_ros export-onnx` (onnx.json) runs on onnxruntime "
        "(cpu, float32, real_time_chunking off or cheap), otherwise torch",
        "an existing directory or empty",
    ),
    Param(
        "device",
        "cpu",
        "Torch device for inference",
        "'cpu', 'cuda' or 'cuda:N'",
        lambda v: v == "cpu" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()),
    ),
    Param(
        "dtype",
        "float32",
        "Inference dtype",
        "float32, float16 or bfloat16",
        _one_of(("float32", "float16", "bfloat16")),
    ),
    Param(
        "torch_threads",
        1,
        "Inference intra-op threads, torch's or onnxruntime's (keep below the core count: the control "
        "loop needs one)",
        "1..256",
        _between(1, 256),
    ),
    Param(
        "extra_latency_s",
        0.0,
        "Test knob: seconds added to every inference (latency-robustness evaluation; 0 = off)",
        "[0, 10]",
        _between(0.0, 10.0),
    ),
    Param(
        "policy_process",
        "child",
        "Where the model runs: 'child' = its own process (core/policy_process.py: this process keeps "
        "no torch and no model GIL, and survives the model), 'local' = an inference thread here, "
        "'remote' = a policy_server node over DDS (see policy_server)",
        "child, local or remote",
        _one_of(POLICY_PROCESSES),
    ),
    Param(
        "policy_server",
        "/policy_server",
        "remote: the policy_server node's fully qualified name (its services and topics are under it)",
        "an absolute node name",
        lambda v: v.startswith("/") and len(v) > 1,
    ),
    Param(
        "policy_timeout_s",
        2.0,
        "child/remote: a model call unanswered this long is a fault (child: the worker is killed and "
        "restarted)",
        "(0, 600]",
        _between(0.0, 600.0, lo_open=True),
    ),
    Param(
        "policy_start_timeout_s",
        120.0,
        "child/remote: seconds the worker may take to load the model (remote: the server to answer) at "
        "configure and after a restart",
        "(0, 3600]",
        _between(0.0, 3600.0, lo_open=True),
    ),
    Param(
        "policy_backend",
        "vla_ros",
        "What checkpoint_dir holds: 'vla_ros' = this package's model, 'lerobot' = a LeRobot policy "
        "checkpoint (config.json + model.safetensors, as lerobot's save_pretrained writes), run offline "
        "in a worker process started with lerobot_python (models/lerobot_policy.py)",
        "vla_ros or lerobot (lerobot: checkpoint_dir set, policy_process child or local)",
        _one_of(POLICY_BACKENDS),
    ),
    Param(
        "lerobot_python",
        "",
        "lerobot backend: the Python interpreter of an environment with lerobot installed; empty = "
        "$VLA_ROS_LEROBOT_PYTHON, else the source tree's .venv-lerobot/bin/python (make lerobot-venv)",
        "a path or empty",
    ),
    Param(
        "lerobot_fps",
        0.0,
        "lerobot backend: frames per second of the dataset the policy was trained on (its actions are "
        "1/fps apart; LeRobot checkpoints do not record it); 0 = unset, refused with that backend",
        "[0, 1000]",
        _between(0.0, 1000.0),
    ),
    Param(
        "policy_max_restarts",
        3,
        "child: worker failures in a row (no good chunk between them) before it stays down",
        "0..100",
        _between(0, 100),
    ),
    # inputs
    Param(
        "camera_names",
        ["scene", "wrist"],
        "Camera names, each one the model reads (any order)",
        "non-empty list of the model's camera names",
        lambda v: len(v) > 0,
    ),
    Param(
        "joint_states_topic",
        "/joint_states",
        "sensor_msgs/JointState input topic",
        "non-empty topic name",
        lambda v: bool(v),
    ),
    Param(
        "joint_names",
        ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"],
        "Arm joint names as in JointState, in the model's action order (gripper excluded)",
        "non-empty list of distinct names",
        lambda v: len(v) > 0 and len(set(v)) == len(v),
    ),
    Param(
        "gripper_joint",
        "gripper",
        "JointState name of the gripper joint; empty = the model has no gripper",
        "a joint name or empty",
    ),
    Param(
        "gripper_open_position",
        0.0,
        "Gripper joint position when fully open (model value 0.0)",
        "finite, different from gripper_closed_position",
        math.isfinite,
    ),
    Param(
        "gripper_closed_position",
        1.0,
        "Gripper joint position when fully closed (model value 1.0)",
        "finite, different from gripper_open_position",
        math.isfinite,
    ),
    Param(
        "sync_slop_s",
        0.05,
        "ApproximateTimeSynchronizer slop between cameras and joint state, seconds",
        "(0, 1]",
        _between(0.0, 1.0, lo_open=True),
    ),
    Param(
        "sync_queue_size",
        10,
        "ApproximateTimeSynchronizer queue size per input",
        "1..1000",
        _between(1, 1000),
    ),
    Param(
        "max_observation_age_s",
        0.5,
        "Observations older than this (stamp to arrival) are dropped, seconds",
        "(0, 10]",
        _between(0.0, 10.0, lo_open=True),
    ),
    Param(
        "stale_grace_s",
        0.5,
        "A goal faults when observations stay stale this long (silent camera), seconds",
        "[0, 60]",
        _between(0.0, 60.0),
    ),
    Param(
        "max_stamp_lead_s",
        0.5,
        "Messages stamped further ahead of the node's clock are dropped (clock skew allowed), seconds",
        "[0, 3600]",
        _between(0.0, 3600.0),
    ),
    Param(
        "max_image_bytes",
        50_000_000,
        "Camera frames (raw or compressed) with more data bytes are dropped where they enter",
        "1..2000000000",
        _between(1, 2_000_000_000),
    ),
    Param(
        "joint_state_limit_margin",
        0.5,
        "Joint states further outside position_lower/upper are dropped as implausible (rad; gripper 0..1)",
        "[0, 100]",
        _between(0.0, 100.0),
    ),
    # control
    Param(
        "control_rate_hz",
        50.0,
        "Control loop (command publishing) rate, Hz",
        "(0, 1000]",
        _between(0.0, 1000.0, lo_open=True),
    ),
    Param(
        "interpolation",
        "linear",
        "Between consecutive actions of the buffer",
        " | ".join(INTERPOLATIONS),
        _one_of(INTERPOLATIONS),
    ),
    Param(
        "execution",
        "async",
        "async: infer while executing; sync: infer when the buffer is used up",
        " | ".join(EXECUTIONS),
        _one_of(EXECUTIONS),
    ),
    Param(
        "refill_margin_s",
        0.05,
        "Request a new chunk when the buffered future is below the p95 inference "
        "latency plus this margin, seconds",
        "[0, 10]",
        _between(0.0, 10.0),
    ),
    Param(
        "max_inflight",
        1,
        "Inferences in flight at once (pipelined inference), at most what the policy serves "
        "concurrently: more than 1 pays where latency is waiting (extra_latency_s; the child and "
        "remote workers serve one call at a time), not where the model computes; k cover latencies "
        "up to k/(k+1) of a chunk",
        "1..32",
        _between(1, 32),
    ),
    Param(
        "real_time_chunking",
        "off",
        "Real-time chunking: each inference gets the buffered actions it must agree with and how many "
        "run before it lands; the flow head inpaints its chunk against them, 'exact' (a backward pass "
        "through the action expert per sampling step) or 'cheap' (none), or 'prefix' gives them to a "
        "flow model trained for it (vla_ros train --rtc-train-delay); other models ignore them "
        "(remote: the policy_server's model must do the same, checked at configure)",
        "off, cheap, exact or prefix",
        _one_of(RTC_MODES),
    ),
    Param(
        "rtc_max_guidance",
        5.0,
        "Real-time chunking: cap on the guidance weight (the paper's beta; remote: the policy_server's "
        "must be the same)",
        "(0, 100]",
        _between(0.0, 100.0, lo_open=True),
    ),
    Param(
        "blending",
        "crossfade",
        "How a new chunk joins the unexecuted rest of the buffer",
        " | ".join(BLEND_RULES),
        _one_of(BLEND_RULES),
    ),
    Param(
        "starvation_policy",
        "hold_last",
        "What the arm does when the action buffer runs empty",
        " | ".join(STARVATION_POLICIES),
        _one_of(STARVATION_POLICIES),
    ),
    Param(
        "max_starved_s",
        1.0,
        "A goal faults after starving this long, seconds",
        "(0, 60]",
        _between(0.0, 60.0, lo_open=True),
    ),
    Param(
        "goal_policy",
        "preempt",
        "A new goal while one runs: preempt it or reject the new one",
        "preempt or reject",
        _one_of(GOAL_POLICIES),
    ),
    Param(
        "instruction_grounding",
        "reject",
        "A goal whose instruction names no task or object the model's lexicon (grounding.json) knows: "
        "reject it (REJECTED, 'instruction not understood: ...'), accept it with a warning, or skip "
        "the check",
        "reject, warn or off",
        _one_of(GROUNDING_MODES),
    ),
    Param(
        "instruction_rewrite",
        "canonical",
        "canonical: the model is given its own phrasing (the lexicon's phrasings) of what the grounding "
        "check read, so 'Could you grab the RED block?' reaches it as 'pick up the red cube' and the "
        "result says so; off: the words as typed",
        "canonical or off",
        _one_of(INSTRUCTION_REWRITES),
    ),
    Param(
        "goal_timeout_s",
        60.0,
        "Default goal timeout when a goal gives 0, seconds (0 = none)",
        "[0, 86400]",
        _between(0.0, 86400.0),
    ),
    Param("max_steps", 0, "Default step limit when a goal gives 0 (0 = none)", "0..10^9", _between(0, 10**9)),
    Param(
        "max_instruction_bytes",
        4096,
        "Longest instruction accepted, in UTF-8 bytes; a longer goal is rejected with the reason",
        "1..1000000",
        _between(1, 1_000_000),
    ),
    Param(
        "success_topic",
        "",
        "std_msgs/Bool topic; true completes the running goal (empty = off)",
        "a topic name or empty",
    ),
    # limits
    Param(
        "position_lower",
        [-math.pi] * 5,
        "Lower position limit per arm joint (rad); the gripper is 0..1",
        "one finite value per joint_names entry, below position_upper",
    ),
    Param(
        "position_upper",
        [math.pi] * 5,
        "Upper position limit per arm joint (rad)",
        "one finite value per joint_names entry, above position_lower",
    ),
    Param(
        "velocity_limit",
        [2.0] * 5,
        "Velocity limit per arm joint (rad/s)",
        "one value > 0 per joint_names entry",
    ),
    Param(
        "gripper_velocity_limit",
        2.0,
        "Gripper velocity limit in model units (0..1 per second)",
        "(0, 1000]",
        _between(0.0, 1000.0, lo_open=True),
    ),
    Param(
        "use_urdf_limits",
        True,
        "Take position/velocity limits from robot_description when it is set",
        "true or false",
    ),
    Param(
        "robot_description",
        "",
        "URDF (XML text); with use_urdf_limits its <limit> tags override the lists",
        "URDF XML or empty",
    ),
    # outputs
    Param(
        "output_mode",
        "position_array",
        "Arm command message type",
        " | ".join(OUTPUT_MODES),
        _one_of(OUTPUT_MODES),
    ),
    Param(
        "output_topic",
        "/arm_controller/commands",
        "Arm command topic",
        "non-empty topic name",
        lambda v: bool(v),
    ),
    Param(
        "trajectory_mode",
        "single_point",
        "joint_trajectory: one point per tick, or the buffered actions",
        " | ".join(TRAJECTORY_MODES),
        _one_of(TRAJECTORY_MODES),
    ),
    Param(
        "trajectory_time_from_start_s",
        0.1,
        "time_from_start of a single-point trajectory, seconds",
        "(0, 10]",
        _between(0.0, 10.0, lo_open=True),
    ),
    Param(
        "gripper_output",
        "with_arm",
        "How the gripper is commanded",
        " | ".join(GRIPPER_OUTPUTS),
        _one_of(GRIPPER_OUTPUTS),
    ),
    Param(
        "gripper_topic",
        "/gripper_controller/gripper_cmd",
        "Gripper topic or action name",
        "non-empty name when gripper_output is not with_arm/none",
    ),
    Param("gripper_max_effort", 10.0, "max_effort of gripper action goals", "[0, 1e6]", _between(0.0, 1e6)),
    Param(
        "gripper_deadband",
        0.02,
        "Gripper action goals are sent only when the target moves this much (model units)",
        "[0, 1]",
        _between(0.0, 1.0),
    ),
    Param("dry_run", False, "Compute commands but publish them only on ~/dry_run/commands", "true or false"),
    Param(
        "realtime_priority",
        50,
        "SCHED_FIFO priority of the control-loop thread, tried at activation; where the process may "
        "not (no CAP_SYS_NICE or rtprio limit) it warns and runs at normal priority (0 = do not try)",
        "0..99",
        _between(0, 99),
    ),
    # status
    Param(
        "feedback_rate_hz", 5.0, "Action feedback rate, Hz", "(0, 100]", _between(0.0, 100.0, lo_open=True)
    ),
    Param(
        "status_rate_hz",
        2.0,
        "~/status and /diagnostics rate, Hz",
        "(0, 100]",
        _between(0.0, 100.0, lo_open=True),
    ),
    Param(
        "autostart", False, "Configure and activate at start-up (plain, non-lifecycle use)", "true or false"
    ),
)
PARAMS_BY_NAME = {p.name: p for p in PARAMS}
CAMERA_PARAMS = (
    Param("topic", "", "Image topic of this camera", "non-empty topic name", lambda v: bool(v)),
    Param(
        "transport",
        "raw",
        "raw = sensor_msgs/Image, compressed = sensor_msgs/CompressedImage",
        "raw or compressed",
        _one_of(TRANSPORTS),
    ),
)


@dataclass(frozen=True)
class CameraConfig:
    name: str
    topic: str
    transport: str


@dataclass(frozen=True)
class NodeConfig:
    """Validated parameter values; limits are per model action dimension (gripper in 0..1)."""

    values: dict[str, Any]
    cameras: tuple[CameraConfig, ...]
    position_lower: tuple[float, ...] = field(default=())
    position_upper: tuple[float, ...] = field(default=())
    velocity_limit: tuple[float, ...] = field(default=())

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def command_joint_names(self) -> tuple[str, ...]:
        """Joint names in model action order, the gripper last if there is one."""
        return tuple(self.joint_names) + ((self.gripper_joint,) if self.gripper_joint else ())


def _fail(param: Param | str, value: Any, detail: str = "") -> ConfigError:
    p = PARAMS_BY_NAME.get(param) if isinstance(param, str) else param
    name = p.name if p else str(param)
    valid = p.valid if p else ""
    message = f"parameter '{name}' = {value!r} is invalid"
    if detail:
        message += f": {detail}"
    if valid:
        message += f" (valid: {valid})"
    return ConfigError(message)


def _coerce(p: Param, value: Any) -> Any:
    # Parameters are declared with dynamic typing so a YAML `1` for a float or `[0, 1]` for a float
    # list is accepted; the type is enforced here with an error naming the parameter.
    default = p.default
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or int(value) != value:
                raise TypeError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, (bool, str)):
                raise TypeError
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
        if isinstance(default, list):
            items = list(value) if value is not None else []
            if default and isinstance(default[0], float):
                if any(isinstance(v, (bool, str)) for v in items):
                    raise TypeError
                return [float(v) for v in items]
            if any(not isinstance(v, str) for v in items):
                raise TypeError
            return items
    except (TypeError, ValueError):
        raise _fail(
            p,
            value,
            f"expected {type(default).__name__}"
            + (f" of {type(default[0]).__name__}" if isinstance(default, list) and default else ""),
        ) from None
    return value


def validate(
    values: dict[str, Any],
    cameras: dict[str, dict[str, Any]],
    urdf_limits: Callable[[str, list[str]], list] | None = None,
    topic_check: Callable[[str], None] | None = None,
) -> NodeConfig:
    """Check every value against its table entry and the cross-parameter rules.

    ``cameras`` maps camera name -> {"topic": ..., "transport": ...}. ``urdf_limits`` (xml, joints)
    -> [JointLimit] and ``topic_check`` (name; raises on an invalid topic name) are injected so
    this stays free of XML parsing and rclpy.
    """
    values = {p.name: _coerce(p, values.get(p.name, p.default)) for p in PARAMS}
    for p in PARAMS:
        if p.check is not None and not p.check(values[p.name]):
            raise _fail(p, values[p.name])
    if values["policy_backend"] == "lerobot" and not values["checkpoint_dir"]:
        raise _fail("checkpoint_dir", "", "policy_backend lerobot needs a LeRobot checkpoint directory")
    if values["policy_backend"] == "lerobot" and not values["lerobot_fps"] > 0:
        raise _fail("lerobot_fps", values["lerobot_fps"],
                    "policy_backend lerobot needs the fps of the policy's training data")
    if values["policy_backend"] == "lerobot" and values["policy_process"] == "remote":
        raise _fail("policy_process", "remote", "policy_backend lerobot runs here (child or local); a "
                    "policy_server serves one with policy_factory "
                    "vla_ros.models.lerobot_policy:load_lerobot_policy")
    if values["real_time_chunking"] != "off" and values["max_inflight"] > 1:
        raise _fail("max_inflight", values["max_inflight"], "real_time_chunking needs 1")
    joints = list(values["joint_names"])
    n = len(joints)
    if values["gripper_joint"] and values["gripper_joint"] in joints:
        raise _fail("gripper_joint", values["gripper_joint"], "it is also listed in joint_names")
    if values["gripper_joint"] and values["gripper_open_position"] == values["gripper_closed_position"]:
        raise _fail(
            "gripper_closed_position", values["gripper_closed_position"], "equals gripper_open_position"
        )
    if values["gripper_output"] not in ("with_arm", "none") and not values["gripper_topic"]:
        raise _fail("gripper_topic", values["gripper_topic"], f"gripper_output is {values['gripper_output']}")
    if values["gripper_joint"] and values["gripper_output"] == "none":
        raise _fail("gripper_output", "none", "the model commands a gripper (gripper_joint is set)")
    camera_configs = []
    for name in values["camera_names"]:
        cam = cameras.get(name, {})
        for p in CAMERA_PARAMS:
            value = cam.get(p.name, p.default)
            if p.check is not None and not p.check(value):
                raise _fail(Param(f"cameras.{name}.{p.name}", p.default, p.description, p.valid), value)
        camera_configs.append(CameraConfig(name, cam["topic"], cam.get("transport", "raw")))

    if topic_check is not None:
        topics = {"joint_states_topic": values["joint_states_topic"], "output_topic": values["output_topic"]}
        topics |= {f"cameras.{c.name}.topic": c.topic for c in camera_configs}
        if values["success_topic"]:
            topics["success_topic"] = values["success_topic"]
        if values["gripper_output"] not in ("with_arm", "none"):
            topics["gripper_topic"] = values["gripper_topic"]
        for name, topic in topics.items():
            try:
                topic_check(topic)
            except Exception as exc:
                raise ConfigError(
                    f"parameter '{name}' = {topic!r} is not a valid ROS name: {str(exc).splitlines()[0]}"
                ) from None
    lower, upper, velocity = (list(values[k]) for k in ("position_lower", "position_upper", "velocity_limit"))
    if values["use_urdf_limits"] and values["robot_description"] and urdf_limits is not None:
        try:
            limits = urdf_limits(values["robot_description"], joints)
        except ValueError as exc:
            raise _fail("robot_description", "<URDF>", str(exc)) from exc
        lower = [lim.lower for lim in limits]
        upper = [lim.upper for lim in limits]
        # A URDF without a velocity limit leaves the parameter's value in force (the filter needs one).
        velocity = [
            lim.velocity if math.isfinite(lim.velocity) else (velocity[i] if i < len(velocity) else math.nan)
            for i, lim in enumerate(limits)
        ]
    for name, seq in (("position_lower", lower), ("position_upper", upper), ("velocity_limit", velocity)):
        if len(seq) != n:
            raise _fail(name, seq, f"has {len(seq)} values for {n} joints in joint_names")
    for i, joint in enumerate(joints):
        if not (lower[i] < upper[i]) or math.isnan(lower[i]) or math.isnan(upper[i]):
            raise _fail(
                "position_lower", lower, f"joint {joint!r}: lower {lower[i]} not below upper {upper[i]}"
            )
        if not (velocity[i] > 0 and math.isfinite(velocity[i])):
            raise _fail("velocity_limit", velocity, f"joint {joint!r}: {velocity[i]} is not finite and > 0")
    if values["gripper_joint"]:
        lower, upper = lower + [0.0], upper + [1.0]
        velocity = velocity + [float(values["gripper_velocity_limit"])]
    return NodeConfig(
        dict(values),
        tuple(camera_configs),
        tuple(map(float, lower)),
        tuple(map(float, upper)),
        tuple(map(float, velocity)),
    )


def runtime_config(config: NodeConfig, spec) -> RuntimeConfig:
    """The core's RuntimeConfig from validated node parameters."""
    rt = RuntimeConfig(
        control_rate_hz=config.control_rate_hz,
        interpolation=config.interpolation,
        realtime_priority=config.realtime_priority > 0,
        realtime_priority_level=max(1, config.realtime_priority),
        blend=config.blending,
        execution=config.execution,
        refill_margin_s=config.refill_margin_s,
        real_time_chunking=config.real_time_chunking != "off",
        max_inflight=config.max_inflight,
        starvation_policy=config.starvation_policy,
        max_starved_s=config.max_starved_s,
        observation_max_age_s=config.max_observation_age_s,
        stale_grace_s=config.stale_grace_s,
        goal_timeout_s=config.goal_timeout_s,
        goal_max_steps=config.max_steps,
        goal_policy=config.goal_policy,
        instruction_grounding=config.instruction_grounding,
        instruction_rewrite=config.instruction_rewrite,
        joint_lower=config.position_lower,
        joint_upper=config.position_upper,
        max_velocity=config.velocity_limit,
        gripper_index=spec.gripper_index,
        dry_run=config.dry_run,
        # trajectory_mode=buffer publishes the chunk's remaining points, filtered by the core
        future_points=spec.chunk_size
        if config.output_mode == "joint_trajectory" and config.trajectory_mode == "buffer" else 0,
    )
    rt.validate()
    return rt


def check_against_model(config: NodeConfig, spec) -> None:
    """The configuration must fit the policy's spec (cameras, joint count, gripper position)."""
    names = list(config.camera_names)
    missing = [c for c in spec.cameras if c not in names]
    extra = [c for c in names if c not in spec.cameras]
    if missing or extra:
        raise _fail(
            "camera_names",
            names,
            f"the model reads cameras {list(spec.cameras)}; missing {missing}, unknown {extra}",
        )
    dims = len(config.command_joint_names)
    if dims != spec.action_dim:
        raise _fail(
            "joint_names",
            list(config.joint_names),
            f"{dims} joints (with gripper_joint {config.gripper_joint!r}) but the model has "
            f"{spec.action_dim} action dimensions {list(spec.action_names)}",
        )
    if spec.state_dim != dims:
        raise _fail(
            "joint_names",
            list(config.joint_names),
            f"the node reads {dims} joint positions {list(config.command_joint_names)} as the model's "
            f"state, but the model's state has {spec.state_dim} values {list(spec.state_names)}",
        )
    if config.gripper_joint and spec.gripper_index not in (None, spec.action_dim - 1):
        raise _fail(
            "gripper_joint",
            config.gripper_joint,
            f"the model's gripper is action {spec.gripper_index}, the node expects it last",
        )
    if not config.gripper_joint and spec.gripper_index is not None:
        raise _fail("gripper_joint", "", f"the model commands a gripper (action {spec.gripper_index})")


# ------------------------------------------------------------------------------------------ ROS side
def _descriptor(p: Param):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=p.description, additional_constraints=p.valid, dynamic_typing=True)


def declare(node) -> None:
    """Declare every parameter (and the per-camera ones of the current camera_names)."""
    for p in PARAMS:
        if not node.has_parameter(p.name):
            node.declare_parameter(p.name, p.default, _descriptor(p))
    declare_cameras(node)


def declare_cameras(node) -> None:
    for name in node.get_parameter("camera_names").value:
        for p in CAMERA_PARAMS:
            full = f"cameras.{name}.{p.name}"
            if not node.has_parameter(full):
                node.declare_parameter(full, p.default, _descriptor(p))


def read_config(node) -> NodeConfig:
    """Read every declared parameter and validate (raises ConfigError)."""
    from vla_ros.ros.urdf_limits import limits_for

    declare_cameras(node)
    values = {p.name: node.get_parameter(p.name).value for p in PARAMS}
    cameras = {
        name: {p.name: node.get_parameter(f"cameras.{name}.{p.name}").value for p in CAMERA_PARAMS}
        for name in values["camera_names"]
    }
    from rclpy.validate_topic_name import validate_topic_name

    return validate(values, cameras, limits_for, validate_topic_name)


# ------------------------------------------------------------------------------------------ docs
DOC_PATH = "docs/vla_node.md"
DOC_BEGIN = "<!-- parameters: generated from vla_ros/ros/params.py (python -m vla_ros.ros.params --write) -->"
DOC_END = "<!-- end of generated parameters -->"


def _doc_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_doc_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) or abs(value) >= 1e6 else f"{value:.1f}"
    return '""' if value == "" else str(value)


def markdown_table() -> str:
    """docs/vla_node.md's parameter table, from PARAMS and CAMERA_PARAMS."""
    rows = ["| parameter | default | valid | meaning |", "|---|---|---|---|"]
    entries = [(p.name, p) for p in PARAMS] + [(f"cameras.<name>.{p.name}", p) for p in CAMERA_PARAMS]
    for name, p in entries:
        default = _doc_value(p.default)
        valid = p.valid.replace("|", "/")  # a pipe would end the table cell
        rows.append(f"| `{name}` | `{default}` | {valid} | {p.description} |")
    return "\n".join(rows)


def document(text: str) -> str:
    """``text`` (docs/vla_node.md) with the generated table between its markers replaced."""
    if DOC_BEGIN not in text or DOC_END not in text:
        raise ValueError(f"{DOC_PATH} lacks the markers {DOC_BEGIN!r} ... {DOC_END!r}")
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    return f"{head}{DOC_BEGIN}\n{markdown_table()}\n{DOC_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m vla_ros.ros.params", description=document.__doc__)
    p.add_argument("--write", action="store_true", help=f"rewrite {DOC_PATH} (run from the repository root)")
    args = p.parse_args(argv)
    if not args.write:
        print(markdown_table())
        return 0
    path = Path(DOC_PATH)
    path.write_text(document(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
