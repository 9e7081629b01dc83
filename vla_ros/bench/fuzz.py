"""Property-based fuzzing of a running vla_node: bad input of every class among good input, over DDS.

    python -m vla_ros.bench fuzz [--messages N] [--quick] [--seed S] [--rate HZ]

The node (VlaNode, in this process) runs the "tiny" model config with random weights; a fake robot
publishes synchronised sets (scene: sensor_msgs/Image, wrist: CompressedImage, joint state) at
``--rate`` sets per second and sends goals through InstructionClient, as a robot and a user would.
Hypothesis strategies (seeded: the same seed gives the same messages) generate the cases; each is a
good set, a set with one bad message, a burst of such sets, or a bad instruction:

  joint states   NaN/+-inf/huge position or velocity, missing/unknown/duplicate names, array lengths,
                 a position just past its limit (within joint_state_limit_margin: accepted)
  header stamps  zero, negative, nanosec out of range, ahead of the clock, going backwards
  raw images     wrong encoding, wrong size or step, truncated data; frames over max_image_bytes
  compressed     undecodable, empty, unsupported format
  instructions   empty, whitespace-only, over max_instruction_bytes, with a NUL; a goal whose
                 timeout_s is negative or NaN

Every class is sent at least once. While a goal is not running the robot sends a good one.

Invariants (a breach is a violation):
  - the executor keeps spinning and the node answers (lifecycle get_state, ~/status keeps coming);
  - every command, received over DDS and handed to the output by the control loop, is finite and
    inside the position limits; each control tick moves at most velocity limit x period (+1 %);
  - a hold names its reason (Command.reason), a goal that ends other than "completed" names why
    (its result message), ~/status names the last termination, every dropped or skipped message
    is reported naming its input, and no input callback raised (an "internal error");
  - a bad instruction is refused naming why ("bad request: ...");
  - after the bad phase, with good input only, a new goal is accepted and commands move again.
A bad goal the node ran (a NUL cuts the text on the wire; a NaN timeout_s passes the check for
negative ones) breaks none of these: it is reported apart, under bad_input_accepted.

Progress goes to stderr; the last stdout line is one JSON object: messages (sent in the bad phase),
per_class (class -> messages; "good" counts the unchanged messages of every set), dropped_per_source
(the node's skipped counters), violations (count, by_kind, examples), bad_input_accepted, node_alive,
resumed, commands (received over DDS and checked), ticks_checked, named_drops (per class: bad
messages expecting a reason, those named with it, those named otherwise), seconds, and more.
Exit code 0 iff no violations, the node alive and resumed. Needs hypothesis (the dev extra).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.bench.fuzz_cases import (
    GOOD,
    IMAGE_HW,
    JOINTS,
    MAX_IMAGE_BYTES,
    MAX_INSTRUCTION_BYTES,
    Case,
    generate_cases,
    zero_positions,
)
from vla_ros.core.runtime_types import RejectReason

NODE_NAME = "fuzz_vla"  # not "vla_node": launch tests in the same DDS domain look that one up
TOPICS = {
    "scene": "/fuzz/scene/image_raw",
    "wrist": "/fuzz/wrist/image_raw/compressed",
    "joint_states": "/fuzz/joint_states",
    "commands": "/fuzz/arm/commands",
}
QUICK_MESSAGES, DEFAULT_MESSAGES = 300, 2000
HOLD_REASONS = {"idle", "waiting", "starved", "estop", "invalid_action", "dry_run"}  # Command.reason
MAX_EXAMPLES = 12
STEP_TOLERANCE = 1.01

# ----------------------------------------------------------------------------------- messages


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _set_stamp(msg, fields: dict) -> None:
    stamp = msg.header.stamp
    if "stamp_offset_s" in fields:
        ns = _stamp_ns(stamp) + int(fields["stamp_offset_s"] * 1e9)
        ns = min(max(ns, 1), (2**31 - 1) * 1_000_000_000)  # int32 seconds
        stamp.sec, stamp.nanosec = divmod(ns, 1_000_000_000)
    if "sec" in fields:
        stamp.sec = fields["sec"]
    if "nanosec" in fields:
        stamp.nanosec = fields["nanosec"]


class Feeder:
    """Builds one set (scene Image, wrist CompressedImage, JointState), changes one message, publishes."""

    def __init__(self, node) -> None:
        import cv2
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, JointState

        self._node, self._types = node, (Image, CompressedImage, JointState)
        types = {"scene": Image, "wrist": CompressedImage, "joint_states": JointState}
        self._pubs = {
            source: node.create_publisher(msg_type, TOPICS[source], qos_profile_sensor_data)
            for source, msg_type in types.items()
        }
        height, width = IMAGE_HW
        ramp = np.tile(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
        scenes = [np.roll(ramp, 8 * k, axis=1) for k in range(8)]  # a moving scene
        self._raw = [frame.tobytes() for frame in scenes]
        self._jpeg = [cv2.imencode(".jpg", frame)[1].tobytes() for frame in scenes]
        self.sets = 0

    def publish(self, case: Case = GOOD) -> None:
        stamp = self._node.get_clock().now().to_msg()
        msgs = {"scene": self._scene(), "wrist": self._wrist(), "joint_states": self._joints()}
        for msg in msgs.values():
            msg.header.stamp = stamp
        if case.source in msgs:
            self._change(msgs[case.source], case)
        for source, msg in msgs.items():
            self._pubs[source].publish(msg)
        self.sets += 1

    def _scene(self):
        height, width = IMAGE_HW
        return self._types[0](height=height, width=width, encoding="rgb8", step=width * 3,
                              data=self._raw[self.sets % 8])

    def _wrist(self):
        return self._types[1](format="jpeg", data=self._jpeg[self.sets % 8])

    def _joints(self):
        return self._types[2](name=list(JOINTS), position=zero_positions())

    def _change(self, msg, case: Case) -> None:
        fields = case.fields
        _set_stamp(msg, fields)
        if case.source == "joint_states":
            for key in ("name", "position", "velocity", "effort"):
                if key in fields:
                    setattr(msg, key, list(fields[key]))
        elif case.source == "scene":
            for key in ("encoding", "height", "width", "step"):
                if key in fields:
                    setattr(msg, key, fields[key])
            if "data_len" in fields:
                msg.data = np.full(fields["data_len"], 90, np.uint8).tobytes()
        elif "format" in fields:  # wrist
            msg.format = fields["format"]
            msg.data = self._compressed_data(fields)

    def _compressed_data(self, fields: dict) -> bytes:
        if "data" in fields:
            return fields["data"]
        jpeg = self._jpeg[self.sets % 8]
        if "pad_to" in fields:  # bytes after the JPEG's end marker, which decoders ignore
            return jpeg + bytes(max(fields["pad_to"] - len(jpeg), 0))
        if "truncate" in fields:
            return jpeg[: fields["truncate"] % len(jpeg)]
        data = bytearray(jpeg)
        for offset, value in fields.get("flip", ()):
            data[offset % len(data)] = value
        return bytes(data)


# -------------------------------------------------------------------------------- observation


class Violations:
    """Invariant breaches: a count per kind and the first few examples."""

    def __init__(self) -> None:
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []
        self._lock = threading.Lock()

    def add(self, kind: str, detail: str) -> None:
        with self._lock:
            self.by_kind[kind] += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(f"{kind}: {detail}"[:400])

    @property
    def count(self) -> int:
        return sum(self.by_kind.values())

    def summary(self) -> dict:
        return {"count": self.count, "by_kind": dict(self.by_kind), "examples": list(self.examples)}


class Monitor:
    """What the node does: its own callbacks (wrapped before activation) and what arrives over DDS."""

    def __init__(self, node) -> None:
        self.ticks: list[tuple[float, np.ndarray, bool, str]] = []  # control loop -> output
        self.received: list[tuple[float, tuple[float, ...]]] = []  # command messages over DDS
        self.results: list[tuple[float, Any]] = []  # GoalResult as the node keeps it
        self.problems: list[tuple[float, str, str]] = []  # (time, source, message)
        self.statuses: list[tuple[float, dict]] = []
        self._node = node
        self._wrap(node)

    def _wrap(self, node) -> None:
        on_command, on_problem, on_result = node._on_command, node._on_problem, node._on_result

        def command(cmd) -> None:
            self.ticks.append((cmd.stamp, np.array(cmd.positions, dtype=np.float64), cmd.held, cmd.reason))
            on_command(cmd)

        def problem(source: str, message: str) -> None:
            self.problems.append((time.monotonic(), source, message))
            on_problem(source, message)

        def result(res) -> None:
            on_result(res)
            kept = node.results.wait(res.goal_id, 0.0)  # with the input trouble the node appended
            self.results.append((time.monotonic(), kept or res))

        node._on_command, node._on_problem, node._on_result = command, problem, result

    def attach(self, robot, client) -> None:
        from std_msgs.msg import Float64MultiArray

        robot.create_subscription(Float64MultiArray, TOPICS["commands"], self._on_received, 1000)
        client.status_listeners.append(lambda fields: self.statuses.append((time.monotonic(), dict(fields))))

    def _on_received(self, msg) -> None:
        self.received.append((time.monotonic(), tuple(msg.data)))

    def moving_since(self, t: float) -> int:
        """Non-held ticks handed to the output after runtime-clock time ``t``."""
        return sum(1 for stamp, _, held, _ in self.ticks[-200:] if stamp > t and not held)

    def received_since(self, t: float) -> int:
        return sum(1 for arrival, _ in self.received[-200:] if arrival > t)


class GoalThread:
    """InstructionClient.run for one instruction, in a thread of its own."""

    def __init__(self, client, text: str, timeout_s: float = 0.0) -> None:
        self.text, self.timeout_s = text, timeout_s
        self.started, self.cancel = threading.Event(), threading.Event()
        self.outcome = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self._thread.start()

    def _run(self, client) -> None:
        try:
            self.outcome = client.run(self.text, self.timeout_s, on_started=self.started.set,
                                      cancel=self.cancel)
        except Exception as exc:  # read by the driver
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()


class LivenessProbe:
    """Calls the node's lifecycle get_state now and then; a call unanswered for 3 s is a violation."""

    def __init__(self, robot, violations: Violations) -> None:
        from lifecycle_msgs.srv import GetState

        self._request = GetState.Request()
        self._client = robot.create_client(GetState, f"/{NODE_NAME}/get_state")
        self._violations = violations
        self._pending = None
        self._sent = 0.0
        self._reported = False
        self.answered = 0

    def poll(self) -> None:
        now = time.monotonic()
        if self._pending is not None and not self._pending.done():
            if now - self._sent > 3.0 and not self._reported:
                self._reported = True
                self._violations.add("not_answering", f"get_state unanswered for {now - self._sent:.1f} s")
            return
        if self._pending is not None:
            self.answered += 1
        self._pending, self._sent, self._reported = self._client.call_async(self._request), now, False

    def answers(self, timeout_s: float = 3.0) -> bool:
        """One call now, waited for."""
        future = self._client.call_async(self._request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return future.done() and future.result() is not None


# ------------------------------------------------------------------------------------- checks


def _limits(node):
    """(lower, upper, max_step) of the node's safety filter, model units; and lower/upper in robot units."""
    from vla_ros.core.safety import SafetyLimits
    from vla_ros.ros.outputs import GripperMap
    from vla_ros.ros.params import runtime_config

    spec = node.policy.spec
    limits = SafetyLimits.from_config(runtime_config(node.config, spec), spec.action_dim, spec.gripper_index)
    gripper = GripperMap(node.config.gripper_open_position, node.config.gripper_closed_position)
    robot_lo, robot_hi = limits.lower.copy(), limits.upper.copy()
    g = spec.gripper_index
    if g is not None:
        robot_lo[g], robot_hi[g] = sorted(gripper.to_joint(v) for v in (limits.lower[g], limits.upper[g]))
    return limits, (robot_lo, robot_hi)


def _outside(positions: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> bool:
    return bool(np.any(positions < lower - 1e-9) or np.any(positions > upper + 1e-9))


def check_ticks(ticks, limits, violations: Violations, context: Callable[[float], str]) -> None:
    """Every command the control loop handed out: finite, inside the limits, one tick's step, named hold."""
    previous = None
    for stamp, positions, held, reason in ticks:
        where = f"tick at {context(stamp)}"
        if not np.all(np.isfinite(positions)):
            violations.add("command_not_finite", f"{where}: {positions.tolist()}")
        elif _outside(positions, limits.lower, limits.upper):
            violations.add("command_out_of_limits", f"{where}: {positions.tolist()}")
        elif previous is not None and np.any(np.abs(positions - previous) > limits.max_step * STEP_TOLERANCE
                                             + 1e-9):
            step = np.abs(positions - previous).tolist()
            violations.add("command_step_too_large", f"{where}: step {step} > {limits.max_step.tolist()}")
        if held and reason not in HOLD_REASONS:
            violations.add("hold_unnamed", f"{where}: held with reason {reason!r}")
        previous = positions


def check_received(received, robot_limits, violations: Violations, context: Callable[[float], str]) -> None:
    lower, upper = robot_limits
    for arrival, data in received:
        positions = np.asarray(data, dtype=np.float64)
        where = f"message received at {context(arrival)}"
        if positions.shape != lower.shape:
            violations.add("command_wrong_length", f"{where}: {len(data)} values")
        elif not np.all(np.isfinite(positions)):
            violations.add("command_not_finite", f"{where}: {list(data)}")
        elif _outside(positions, lower, upper):
            violations.add("command_out_of_limits", f"{where}: {list(data)}")


def check_results(results, violations: Violations) -> dict[str, int]:
    """Every goal that did not complete names why; returns results per termination reason."""
    reasons: collections.Counter[str] = collections.Counter()
    for _, result in results:
        reasons[str(result.reason)] += 1
        if not str(result.reason) or (not result.success and not result.message.strip()):
            violations.add("result_unnamed", f"goal {result.goal_id} ended {result.reason!s} with no message")
    return dict(reasons)


def check_goal_outcomes(goals: list[GoalThread], violations: Violations) -> None:
    """The good goals the robot sent: each ended goal (or refusal) names why, as the client received it."""
    for goal in goals:
        if not goal.done():
            continue
        if goal.error is not None:
            violations.add("goal_error", f"{goal.text!r}: {type(goal.error).__name__}: {goal.error}")
        elif not goal.outcome.success and not goal.outcome.message.strip():
            violations.add("result_unnamed", f"{goal.text!r} ended {goal.outcome.termination_reason!r} "
                           "with no message")


def check_statuses(statuses, first_result_at: float | None, violations: Violations) -> None:
    """Once a goal has ended, ~/status names the last termination whenever no goal runs."""
    if first_result_at is None:
        return
    for at, fields in statuses:
        if at > first_result_at + 0.5 and not fields.get("goal_active") and not fields.get(
                "last_termination_reason"):
            violations.add("status_unnamed", f"~/status {fields}")


def check_problems(problems, violations: Violations) -> None:
    """Each reported drop or skip names its input; an internal error (a callback raised) is a bug."""
    for _, source, message in problems:
        if "internal error" in message:
            violations.add("internal_error", message)
        elif not message.strip() or not (message.startswith(f"{source}:") or f"camera '{source}'" in message
                                         or source == "time"):
            violations.add("problem_unnamed", f"source {source!r}: {message!r}")


def match_named_drops(expected, problems) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Per class: bad messages sent expecting a reason ("expected"), those the node dropped naming
    the expected words within 2 s ("named"), and those with another reason for the same input
    within 0.5 s ("otherwise", examples returned). Informational: sensor-data QoS is best effort,
    so a message may be lost before the node sees it."""
    by_source: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    for at, source, message in problems:
        by_source[source].append((at, message))
    used: set[tuple[str, int]] = set()
    counts: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"expected": 0, "named": 0,
                                                                          "otherwise": 0})
    otherwise: list[str] = []
    for sent_at, source, phrase, cls, sent in expected:
        counts[cls]["expected"] += 1
        entries = by_source.get(source, [])
        first = bisect.bisect_left(entries, (sent_at - 0.05, ""))
        last = bisect.bisect_right(entries, (sent_at + 2.0, "\uffff"))
        window = [i for i in range(first, last) if (source, i) not in used]
        named = next((i for i in window if phrase in entries[i][1]), None)
        other = next((i for i in window if entries[i][0] <= sent_at + 0.5), None)
        if named is not None:
            used.add((source, named))
            counts[cls]["named"] += 1
        elif other is not None:
            used.add((source, other))
            counts[cls]["otherwise"] += 1
            if len(otherwise) < MAX_EXAMPLES:
                said = entries[other][1]
                otherwise.append(f"{cls} {sent}: expected {phrase!r}, the node said {said!r}"[:400])
    return dict(counts), otherwise


# ------------------------------------------------------------------------------------- runner


def _short(fields: dict) -> str:
    """The fields of a case for an example line (long values cut)."""
    return "{" + ", ".join(f"{k}: {v!r}"[:120] for k, v in fields.items()) + "}"


def _log(message: str) -> None:
    print(f"fuzz: {message}", file=sys.stderr, flush=True)


def node_parameters(**overrides) -> list:
    """The fuzzed node's parameters: the fake robot's topics, short freshness limits, no goal timeout."""
    from rclpy.parameter import Parameter

    values = {
        "camera_names": ["scene", "wrist"],
        "cameras.scene.topic": TOPICS["scene"],
        "cameras.scene.transport": "raw",
        "cameras.wrist.topic": TOPICS["wrist"],
        "cameras.wrist.transport": "compressed",
        "joint_states_topic": TOPICS["joint_states"],
        "output_topic": TOPICS["commands"],
        "control_rate_hz": 50.0,
        "status_rate_hz": 10.0,
        "goal_timeout_s": 0.0,
        "max_observation_age_s": 0.5,
        "stale_grace_s": 0.3,
        "max_instruction_bytes": MAX_INSTRUCTION_BYTES,
        "max_image_bytes": MAX_IMAGE_BYTES,
    }
    values.update(overrides)
    return [Parameter(name, value=value) for name, value in values.items()]


class FuzzRun:
    """The node, the fake robot and one executor thread; drives the phases and checks the invariants."""

    def __init__(self, policy, rate_hz: float = 30.0) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor

        from vla_ros.ros.vla_node import VlaNode
        from vla_ros.tools.goal_client import InstructionClient

        self.violations = Violations()
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = VlaNode(NODE_NAME, policy=policy, context=self.context,
                            parameter_overrides=node_parameters())
        self.monitor = Monitor(self.node)
        self.robot = rclpy.create_node("fuzz_robot", context=self.context)
        self.feeder = Feeder(self.robot)
        self.client = InstructionClient(self.robot, f"/{NODE_NAME}")
        self.monitor.attach(self.robot, self.client)
        self.probe = LivenessProbe(self.robot, self.violations)
        # Threads: inputs, services, the command/status readers, an action goal or two.
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.robot)
        self._stop = threading.Event()
        self._spin_thread = threading.Thread(target=self._spin, daemon=True)
        self._spin_thread.start()
        self.period = 1.0 / rate_hz
        self._next_slot = time.monotonic()
        self.per_class: collections.Counter[str] = collections.Counter()
        self.sent: list[tuple[float, str]] = []  # (time, class) of every case sent, for context
        self.expected: list[tuple[float, str, str, str, str]] = []  # (time, source, phrase, class, fields)
        self.goals: list[GoalThread] = []  # good goals
        self.bad_goal_threads: list[GoalThread] = []
        self.accepted_bad: list[tuple[str, str]] = []  # (class, what happened)
        self.rejections: dict[str, str] = {}  # class -> one rejection message
        self._last_housekeeping = self._last_progress = 0.0
        self._goal_count = 0

    def _spin(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def spinning(self) -> bool:
        return self._spin_thread.is_alive()

    # -------------------------------------------------------------------- pacing and goals
    def _paced_set(self, case: Case = GOOD) -> None:
        delay = self._next_slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_slot = max(self._next_slot + self.period, time.monotonic() - self.period)
        self.feeder.publish(case)

    def pump(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Good sets at the set rate for ``seconds`` or until ``until()``; returns whether it held."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            self._paced_set()
        return until is None or until()

    def start_goal(self, text: str, timeout_s: float = 10.0) -> GoalThread | None:
        """Send ``text`` until the node runs it (it refuses goals until observations are fresh)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            goal = GoalThread(self.client, text)
            self.goals.append(goal)
            self.pump(5.0, lambda goal=goal: goal.started.is_set() or goal.done())
            if goal.started.is_set():
                return goal
            self.pump(0.2)
        return None

    def _keep_a_goal_running(self) -> None:
        runtime = self.node.runtime
        idle = runtime is not None and runtime.feedback().goal_id < 0
        if idle and all(g.done() or g.started.is_set() for g in self.goals):
            self._goal_count += 1
            self.goals.append(GoalThread(self.client, f"wave the arm, take {self._goal_count}"))
            self.per_class["good_instruction"] += 1
            self.sent.append((time.monotonic(), "good_instruction"))

    def _send_bad_instruction(self, case: Case) -> None:
        self.sent.append((time.monotonic(), case.cls))
        self.per_class[case.cls] += 1
        goal = GoalThread(self.client, case.fields["text"], case.fields.get("timeout_s", 0.0))
        deadline = time.monotonic() + 5.0
        while not (goal.done() or goal.started.is_set()) and time.monotonic() < deadline:
            time.sleep(0.005)
        shown = _short(case.fields)[:120]
        if goal.started.is_set():  # e.g. rosidl cut the text at its NUL and the rest is a valid goal
            goal.cancel.set()
            self.bad_goal_threads.append(goal)
            seen = self.node.status()["instruction"]
            self.accepted_bad.append((case.cls, f"{case.cls} {shown} ran as a goal: the node runs {seen!r}"))
            return
        if not goal.done():
            self.violations.add("goal_unanswered", f"{case.cls} {shown}: no result within 5 s")
            self.bad_goal_threads.append(goal)
            return
        self._check_rejection(case, goal, shown)

    def _check_rejection(self, case: Case, goal: GoalThread, shown: str) -> None:
        if goal.error is not None:  # the client refused it itself: named if the error says why
            if not str(goal.error).strip():
                self.violations.add("rejection_unnamed", f"{case.cls} {shown}: {goal.error!r}")
            self.rejections.setdefault(case.cls, f"client: {goal.error}")
            return
        outcome = goal.outcome
        if outcome.termination_reason != "rejected" or str(RejectReason.BAD_REQUEST) not in outcome.message:
            self.violations.add("rejection_unnamed", f"{case.cls} {shown}: ended "
                                f"{outcome.termination_reason!r} with message {outcome.message!r}")
        self.rejections.setdefault(case.cls, outcome.message)

    def _send_sets(self, case: Case) -> None:
        for _ in range(case.repeat):
            now = time.monotonic()
            self.sent.append((now, case.cls))
            if case.expect:
                sent = _short(case.fields)
                self.expected.append((now, case.expect_source or case.source, case.expect, case.cls, sent))
            if case.source:  # one bad message and two good ones
                self.per_class[case.cls] += 1
                self.per_class["good"] += 2
            else:
                self.per_class["good"] += 3
            self._paced_set(case)

    def _housekeeping(self, index: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last_housekeeping < 0.5:
            return
        if now - self._last_progress > 5.0:
            self._last_progress = now
            _log(f"case {index}/{total}, {sum(self.per_class.values())} messages, "
                 f"{self.violations.count} violations")
        if not self.spinning():
            self.violations.add("executor_stopped", f"the executor's thread ended after case {index}")
        self.probe.poll()
        _, status_at = self.client.status()
        if now - status_at > 3.0:
            self.violations.add("status_silent", f"no ~/status for {now - status_at:.1f} s")
        self._keep_a_goal_running()
        self._last_housekeeping = now

    # -------------------------------------------------------------------- phases
    def setup(self) -> None:
        if not self.node.autostart():
            raise RuntimeError(f"node did not start: {self.node.last_error}")
        ready = self.pump(20.0, lambda: self.node.inputs.observations > 2 and len(self.monitor.received) > 2)
        if not ready:
            raise RuntimeError("no observations or commands within 20 s")
        if self.start_goal("wave the arm") is None:
            raise RuntimeError(f"the first goal never started: {self.node.last_result}")

    def fuzz(self, cases: list[Case]) -> None:
        self._last_housekeeping = self._last_progress = time.monotonic()
        for index, case in enumerate(cases):
            if case.source == "goal":
                self._send_bad_instruction(case)
            else:
                self._send_sets(case)
            self._housekeeping(index, len(cases))

    def resume(self) -> bool:
        """Good input only: a new goal must be accepted and the commands move again."""
        self.pump(1.0)
        goal = self.start_goal("resume: wave the arm")
        if goal is None:
            _log(f"resume: no goal started; last result {self.node.last_result}")
            return False
        since = time.monotonic()  # also the node's runtime clock (VlaNode's default)
        moved = self.pump(5.0, lambda: self.monitor.moving_since(since) >= 10
                          and self.monitor.received_since(since) >= 10)
        if not moved:
            _log("resume: the goal started but the commands did not move")
        return moved

    def close(self) -> None:
        for goal in [*self.goals, *self.bad_goal_threads]:
            goal.cancel.set()
        self.pump(5.0, lambda: all(g.done() for g in [*self.goals, *self.bad_goal_threads]))
        self._stop.set()
        self._spin_thread.join(5.0)
        try:
            self.node.hold_and_shutdown()
        finally:
            self.executor.shutdown(timeout_sec=1.0)
            self.client.destroy()
            self.node.destroy_node()
            self.robot.destroy_node()
            import rclpy

            rclpy.shutdown(context=self.context)

    # -------------------------------------------------------------------- report
    def context_of(self, at: float) -> str:
        """'+12.34 s after <class>' for a time.monotonic() value."""
        i = bisect.bisect_right(self.sent, (at, "\uffff")) - 1
        after = self.sent[i][1] if i >= 0 else "start"
        return f"+{at - self.sent[0][0]:.2f} s, after {after}" if self.sent else f"{at:.2f}"

    def check(self) -> dict:
        limits, robot_limits = _limits(self.node)
        mon, v = self.monitor, self.violations
        check_ticks(list(mon.ticks), limits, v, self.context_of)  # tick stamps: the runtime clock, monotonic
        check_received(list(mon.received), robot_limits, v, self.context_of)
        results = check_results(list(mon.results), v)
        first = mon.results[0][0] if mon.results else None
        check_statuses(list(mon.statuses), first, v)
        check_goal_outcomes(list(self.goals), v)
        check_problems(list(mon.problems), v)
        callback_errors = self.node.runtime.stats().get("callback_errors", 0) if self.node.runtime else 0
        if callback_errors:
            v.add("callback_errors", f"the runtime counted {callback_errors} failed callbacks")
        return results

    def summary(self, seconds: float, resumed: bool, seed: int) -> dict:
        results = self.check()
        alive = self.spinning() and self.probe.answers()
        if not alive:
            self.violations.add("node_dead", "the executor stopped or get_state went unanswered")
        inputs = self.node.inputs
        stats = self.node.runtime.stats() if self.node.runtime else {}
        named, otherwise = match_named_drops(self.expected, list(self.monitor.problems))
        return {
            "benchmark": "fuzz",
            "seed": seed,
            "messages": sum(self.per_class.values()),
            "per_class": dict(sorted(self.per_class.items())),
            "dropped_per_source": dict(inputs.skipped) if inputs else {},
            "time_jumps": inputs.time_jumps if inputs else 0,
            "observations": inputs.observations if inputs else 0,
            "named_drops": named,
            "named_otherwise_examples": otherwise,
            "rejections": self.rejections,
            "goal_results": results,
            "stale_faults": stats.get("stale_faults", 0),
            "violations": self.violations.summary(),
            "bad_input_accepted": {
                "count": len(self.accepted_bad),
                "per_class": dict(collections.Counter(cls for cls, _ in self.accepted_bad)),
                "examples": [what for _, what in self.accepted_bad[:MAX_EXAMPLES]],
            },
            "node_alive": alive,
            "resumed": resumed,
            "commands": len(self.monitor.received),
            "ticks_checked": len(self.monitor.ticks),
            "commands_published": self.node.commands_published,
            "get_state_answered": self.probe.answered,
            "seconds": round(seconds, 2),
        }


def run(messages: int, seed: int = 0, rate_hz: float = 30.0) -> dict:
    """Generate the cases, fuzz a fresh node with them, and return the summary (the JSON object)."""
    from vla_ros.bench.node import _tiny_random_policy

    start = time.monotonic()
    cases = generate_cases(messages, seed)
    _log(f"{len(cases)} cases ({sum(c.messages for c in cases)} messages) from seed {seed}")
    with tempfile.TemporaryDirectory() as tmp:
        policy = _tiny_random_policy(Path(tmp) / "tiny")
    fuzz = FuzzRun(policy, rate_hz)
    try:
        fuzz.setup()
        _log("node active, goal running: fuzzing")
        fuzz.fuzz(cases)
        _log("bad phase over: good input only, a new goal")
        resumed = fuzz.resume()
        result = fuzz.summary(time.monotonic() - start, resumed, seed)
    finally:
        fuzz.close()
    result["seconds"] = round(time.monotonic() - start, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_ros.bench fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=None,
                        help=f"messages to send (default {DEFAULT_MESSAGES}; --quick: {QUICK_MESSAGES})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MESSAGES} messages, under a minute")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (the same seed, the same cases)")
    parser.add_argument("--rate", type=float, default=30.0,
                        help="sets (two frames and a joint state) per second")
    args = parser.parse_args(argv)
    messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    result = run(messages, args.seed, args.rate)
    violations = result["violations"]
    for example in violations["examples"]:
        _log(f"violation: {example}")
    for example in result["bad_input_accepted"]["examples"]:
        _log(f"bad input accepted: {example}")
    print(json.dumps(result))
    ok = violations["count"] == 0 and result["node_alive"] and result["resumed"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
