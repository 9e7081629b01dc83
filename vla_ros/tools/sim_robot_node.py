"""A simulated robot with the topics of a real ros2_control arm: the closed loop's other half.

    python -m vla_ros.tools.sim_robot_node --ros-args -p seed:=0 -p task:=pick

Publishes (names relative to the node's namespace):
  <camera>/image_raw            sensor_msgs/Image rgb8, one per simulated camera, camera_rate_hz
  <camera>/image_raw/compressed sensor_msgs/CompressedImage jpeg (publish_compressed:=true)
  /joint_states                 sensor_msgs/JointState, joint_state_rate_hz (gripper 0 open .. 1 closed)
  ~/instruction                 std_msgs/String, the current task's instruction (latched)
  ~/task_success                std_msgs/Bool, success_rate_hz (the vla_node's success_topic)
  ~/episode                     std_msgs/String JSON {seed, task, instruction, time_limit_s} (latched)
  /clock                        rosgraph_msgs/Clock, when stamp_source:=sim
  <arm_controller>/controller_state  control_msgs/JointTrajectoryControllerState with every joint
                                state: reference (the commanded target in force), feedback
                                (measured) and error, stamped like the joint states (as
                                ros2_control's JointTrajectoryController publishes it)
Accepts, like a ForwardCommandController / JointTrajectoryController pair:
  <arm_controller>/commands         std_msgs/Float64MultiArray: 5 arm targets, or 5 + gripper
  <arm_controller>/joint_trajectory trajectory_msgs/JointTrajectory (by joint name, any order)
  <gripper_controller>/commands     std_msgs/Float64MultiArray: [gripper 0..1]
Services:
  ~/reset  std_srvs/Trigger: new scene with the `seed` parameter's value (then seed += 1), task
           family from the `task` parameter ("" or "any" = random); the response message is the episode JSON.

Physics runs in real time (times real_time_factor) in its own thread, which also renders and
publishes the sensors at their rates; ROS callbacks only change the commanded target.
Commands with the wrong length or non-finite values are refused with a logged error and the
robot holds its last valid target.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np


class CommandError(ValueError):
    """A command the simulated controllers refuse (wrong size, unknown joint, NaN)."""


@dataclass
class _Segment:
    """Linear interpolation from `start` (at t0) through `times`/`points` (absolute sim times)."""

    t0: float
    start: np.ndarray
    times: np.ndarray  # [K] increasing
    points: np.ndarray  # [K, n]

    def at(self, t: float) -> np.ndarray:
        times = np.concatenate([[self.t0], self.times])
        points = np.vstack([self.start[None], self.points])
        return np.array([np.interp(t, times, points[:, j]) for j in range(points.shape[1])])


class CommandedTarget:
    """The targets the simulated controllers track: arm joints + gripper, from array or trajectory.

    Pure logic (no ROS): times are sim seconds. A JointTrajectory is followed like
    JointTrajectoryController does: from the current target to each point at its
    time_from_start, linearly; joints it does not name keep their target.
    """

    def __init__(self, arm_joints: tuple[str, ...], gripper_joint: str, initial: np.ndarray):
        self.arm_joints = tuple(arm_joints)
        self.gripper_joint = gripper_joint
        self.names = (*self.arm_joints, gripper_joint)
        self._target = np.asarray(initial, dtype=float).copy()
        self._segment: _Segment | None = None
        self.commands_received = 0

    def reset(self, initial: np.ndarray) -> None:
        self._target = np.asarray(initial, dtype=float).copy()
        self._segment = None

    def at(self, t: float) -> np.ndarray:
        if self._segment is not None:
            self._target = self._segment.at(t)
            if t >= self._segment.times[-1]:
                self._segment = None
        return self._target.copy()

    @staticmethod
    def _finite(values, what: str) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(arr)):
            raise CommandError(f"{what}: non-finite values {arr.tolist()}")
        return arr

    def set_array(self, values, t: float) -> None:
        """Float64MultiArray on <arm_controller>/commands: arm joints, optionally + gripper."""
        arr = self._finite(values, "arm command")
        n = len(self.arm_joints)
        if len(arr) not in (n, n + 1):
            raise CommandError(f"arm command has {len(arr)} values; expected {n} "
                               f"({', '.join(self.arm_joints)}) or {n + 1} (with {self.gripper_joint})")
        target = self.at(t)
        self._segment = None
        target[: len(arr)] = arr
        self._target = target
        self.commands_received += 1

    def set_gripper(self, values, t: float) -> None:
        arr = self._finite(values, "gripper command")
        if len(arr) != 1:
            raise CommandError(f"gripper command has {len(arr)} values; expected 1 ({self.gripper_joint})")
        target = self.at(t)
        target[-1] = arr[0]
        self._target = target
        if self._segment is not None:
            self._segment.start[-1] = arr[0]
            self._segment.points[:, -1] = arr[0]
        self.commands_received += 1

    def set_trajectory(self, joint_names, times_from_start, positions, t_start: float) -> None:
        """JointTrajectory: points at t_start + time_from_start; an empty one stops (holds)."""
        current = self.at(t_start)
        if len(positions) == 0:
            self._segment = None
            self._target = current
            return
        unknown = [j for j in joint_names if j not in self.names]
        if unknown:
            raise CommandError(f"joint_trajectory names unknown joints {unknown}; known: {list(self.names)}")
        index = [self.names.index(j) for j in joint_names]
        times = np.asarray(times_from_start, dtype=float) + t_start
        if np.any(np.diff(times) <= 0) or times[0] < t_start:
            raise CommandError("joint_trajectory points must have increasing, non-negative time_from_start")
        points = np.repeat(current[None], len(positions), axis=0)
        for k, p in enumerate(positions):
            p = self._finite(p, f"joint_trajectory point {k}")
            if len(p) != len(index):
                raise CommandError(f"joint_trajectory point {k} has {len(p)} positions for "
                                   f"{len(index)} joint_names")
            points[k, index] = p
        if len(joint_names) < len(self.names):  # unnamed joints keep their targets throughout
            rest = [i for i in range(len(self.names)) if i not in index]
            points[:, rest] = current[rest]
        self._segment = _Segment(t_start, current, times, points)
        self.commands_received += 1


def _stamp(msg_stamp, seconds: float) -> None:
    sec = int(np.floor(seconds))
    msg_stamp.sec, msg_stamp.nanosec = sec, min(int(round((seconds - sec) * 1e9)), 999_999_999)


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=argv if argv is not None else sys.argv)
    node = SimRobotNode()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


def _node_class():
    # rclpy is imported lazily so the pure CommandedTarget above is importable without ROS.
    from control_msgs.msg import JointTrajectoryControllerState
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Bool, Float64MultiArray, String
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory

    from vla_ros.sim.executor import CAMERA_RATE_HZ, JOINT_STATE_RATE_HZ, SUCCESS_RATE_HZ

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

    class SimRobotNodeImpl(Node):
        def __init__(self, **kwargs):
            super().__init__("sim_robot", **kwargs)
            p = self.declare_parameter
            self.seed = p("seed", 0).value
            self.task = p("task", "").value
            image_size = list(p("image_size", [64, 64]).value)
            self.camera_rate_hz = float(p("camera_rate_hz", CAMERA_RATE_HZ).value)
            self.joint_state_rate_hz = float(p("joint_state_rate_hz", JOINT_STATE_RATE_HZ).value)
            self.success_rate_hz = float(p("success_rate_hz", SUCCESS_RATE_HZ).value)
            self.physics_rate_hz = float(p("physics_rate_hz", 100.0).value)
            self.real_time_factor = float(p("real_time_factor", 1.0).value)
            self.stamp_source = p("stamp_source", "wall").value
            self.publish_compressed = bool(p("publish_compressed", False).value)
            self.publish_raw = bool(p("publish_raw", True).value)
            arm_ctrl = p("arm_controller", "/arm_controller").value.rstrip("/")
            gripper_ctrl = p("gripper_controller", "/gripper_controller").value.rstrip("/")
            self.joint_states_topic = p("joint_states_topic", "/joint_states").value
            self._validate(image_size)
            self.image_size = tuple(int(v) for v in image_size)

            self._lock = threading.Lock()  # guards target, sim_clock and episode: sim thread vs callbacks
            self._stop = threading.Event()
            self._ready = threading.Event()
            self._reset_requests: list[tuple[threading.Event, dict]] = []
            self.sim_clock = 0.0  # seconds simulated since start-up, never reset (for /clock, stamps)
            self.episode: dict = {}
            self.target: CommandedTarget | None = None
            self._startup_error: BaseException | None = None
            # The simulation (and its GL context, which is bound to one thread) lives in one thread.
            self._thread = threading.Thread(target=self._sim_main, name="sim_physics", daemon=True)
            self._thread.start()
            self._ready.wait(60.0)
            if self._startup_error is not None or not self._ready.is_set():
                self._stop.set()
                raise RuntimeError(f"sim_robot: simulation did not start: {self._startup_error}")

            # Reliable, shallow: matches reliable and best-effort subscribers alike (a best-effort
            # publisher would be invisible to reliable ones); depth 2 keeps latency low.
            sensor_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
            self.pub_images = {c: self.create_publisher(Image, f"{c}/image_raw", sensor_qos)
                               for c in self.cameras} if self.publish_raw else {}
            self.pub_compressed = {
                c: self.create_publisher(CompressedImage, f"{c}/image_raw/compressed", sensor_qos)
                for c in self.cameras} if self.publish_compressed else {}
            self.pub_joints = self.create_publisher(JointState, self.joint_states_topic, 10)
            self.pub_controller_state = self.create_publisher(
                JointTrajectoryControllerState, f"{arm_ctrl}/controller_state", 10)
            self.pub_success = self.create_publisher(Bool, "~/task_success", 10)
            self.pub_instruction = self.create_publisher(String, "~/instruction", latched)
            self.pub_episode = self.create_publisher(String, "~/episode", latched)
            self.pub_clock = (self.create_publisher(Clock, "/clock", 10) if self.stamp_source == "sim"
                              else None)
            self.create_subscription(Float64MultiArray, f"{arm_ctrl}/commands", self._on_array, 10)
            self.create_subscription(JointTrajectory, f"{arm_ctrl}/joint_trajectory", self._on_trajectory, 10)
            self.create_subscription(Float64MultiArray, f"{gripper_ctrl}/commands", self._on_gripper, 10)
            self.create_service(Trigger, "~/reset", self._on_reset)
            self._publish_episode()
            self._publishing = True
            self.get_logger().info(f"sim robot up: {json.dumps(self.episode)}")

        # ------------------------------------------------------------------ parameters
        def _validate(self, image_size) -> None:
            problems = []
            if len(image_size) != 2 or min(image_size) < 8:
                problems.append(f"image_size = {image_size} (valid: [height, width], each >= 8)")
            for name in ("camera_rate_hz", "joint_state_rate_hz", "success_rate_hz", "physics_rate_hz",
                         "real_time_factor"):
                if not getattr(self, name) > 0:
                    problems.append(f"{name} = {getattr(self, name)} (valid: > 0)")
            if self.stamp_source not in ("wall", "sim"):
                problems.append(f"stamp_source = {self.stamp_source!r} (valid: wall or sim)")
            if problems:
                raise ValueError("sim_robot: invalid parameters: " + "; ".join(problems))

        # ------------------------------------------------------------------ episodes (sim thread)
        def _reset_env(self, env) -> None:
            from rclpy.parameter import Parameter

            seed = int(self.get_parameter("seed").value)
            task = self.get_parameter("task").value
            task = None if task in ("", "any") else task
            obs, info = env.reset(seed=seed, task=task)
            episode = {"seed": seed, "task": info.get("task", {}), "instruction": info["instruction"],
                       "time_limit_s": round(env.max_steps * env.action_period, 6)}
            with self._lock:
                if self.target is None:
                    names = tuple(env.state_names)
                    self.target = CommandedTarget(names[:-1], names[-1], obs["state"])
                self.target.reset(obs["state"])
                self.episode = episode
            self.set_parameters([Parameter("seed", value=seed + 1)])

        def _publish_episode(self) -> None:
            self.pub_instruction.publish(String(data=self.episode["instruction"]))
            self.pub_episode.publish(String(data=json.dumps(self.episode)))

        def _on_reset(self, request, response):
            done, result = threading.Event(), {}
            with self._lock:
                self._reset_requests.append((done, result))
            if not done.wait(30.0):
                response.success, response.message = False, "reset failed: the simulation did not respond"
                return response
            if "error" in result:
                response.success, response.message = False, f"reset failed: {result['error']}"
                return response
            self._publish_episode()
            response.success, response.message = True, json.dumps(self.episode)
            self.get_logger().info(f"reset: {response.message}")
            return response

        # ------------------------------------------------------------------ commands
        def _apply(self, fn, *args) -> None:
            with self._lock:
                try:
                    fn(*args, self.sim_clock)
                except CommandError as exc:
                    self.get_logger().error(f"command refused, holding: {exc}", throttle_duration_sec=1.0)

        def _on_array(self, msg) -> None:
            self._apply(self.target.set_array, list(msg.data))

        def _on_gripper(self, msg) -> None:
            self._apply(self.target.set_gripper, list(msg.data))

        def _on_trajectory(self, msg) -> None:
            times = [pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9 for pt in msg.points]
            positions = [list(pt.positions) for pt in msg.points]
            # Points count from arrival (ros2_control's rule for a zero header stamp); senders here
            # stamp with their own clock, which need not be the simulation's.
            self._apply(self.target.set_trajectory, list(msg.joint_names), times, positions)

        # ------------------------------------------------------------------ sim thread
        def _sim_main(self) -> None:
            try:
                from vla_ros.sim import TabletopEnv

                env = TabletopEnv(image_size=self.image_size, seed=None)
                self.cameras = list(env.cameras)
                self._reset_env(env)
                env.observe()  # create the renderer (and its GL context) in this thread
            except BaseException as exc:  # reported by __init__, which raises it by name
                self._startup_error = exc
                self._ready.set()
                return
            self._ready.set()
            try:
                self._sim_loop(env)
            finally:
                env.close()

        def _sim_loop(self, env) -> None:
            # A thread with its own deadlines instead of rclpy timers: physics must keep real time
            # even while the executor is busy with callbacks; it is the robot, not a ROS client.
            while not getattr(self, "_publishing", False) and not self._stop.is_set():
                time.sleep(0.01)
            timestep = float(env.model.opt.timestep)
            periods = {"physics": 1 / self.physics_rate_hz, "camera": 1 / self.camera_rate_hz,
                       "joints": 1 / self.joint_state_rate_hz, "success": 1 / self.success_rate_hz}
            last = time.monotonic()
            due = dict.fromkeys(periods, last)
            owed = 0.0  # simulated seconds owed to real time, paid in whole physics steps
            while not self._stop.is_set():
                now = time.monotonic()
                # Cap what one iteration pays so a stalled process does not teleport the arm.
                owed += min(now - last, 0.1) * self.real_time_factor
                last = now
                steps = int(owed / timestep)
                owed -= steps * timestep
                with self._lock:
                    requests, self._reset_requests = self._reset_requests, []
                    target = self.target.at(self.sim_clock)
                for done, result in requests:
                    try:
                        self._reset_env(env)
                    except Exception as exc:  # a bad seed/task parameter: report, keep the old scene
                        result["error"] = str(exc)
                    done.set()
                if requests:
                    continue
                env.set_target(target)
                env.advance(steps * timestep)
                with self._lock:
                    self.sim_clock += steps * timestep
                stamp = self.sim_clock if self.stamp_source == "sim" else time.time()
                if self.pub_clock is not None:
                    self._publish_clock(stamp)
                if now >= due["camera"]:
                    self._publish_images(env.observe()["images"], stamp)
                if now >= due["joints"]:
                    self._publish_joints(env.joint_state(), target, stamp)
                if now >= due["success"]:
                    self.pub_success.publish(Bool(data=bool(env.success())))
                for key, period in periods.items():
                    if now >= due[key]:
                        due[key] = max(due[key] + period, now)  # skip missed frames, no bursts
                self._stop.wait(max(0.0, min(due.values()) - time.monotonic()))

        def _publish_clock(self, stamp: float) -> None:
            msg = Clock()
            _stamp(msg.clock, stamp)
            self.pub_clock.publish(msg)

        def _publish_images(self, images: dict, stamp: float) -> None:
            for camera, rgb in images.items():
                if camera in self.pub_images:
                    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                                step=rgb.shape[1] * 3)
                    _stamp(msg.header.stamp, stamp)
                    msg.header.frame_id = f"{camera}_camera"
                    msg.data = np.ascontiguousarray(rgb).tobytes()
                    self.pub_images[camera].publish(msg)
                if camera in self.pub_compressed:
                    import cv2

                    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                    msg = CompressedImage(format="jpeg", data=jpeg.tobytes())
                    _stamp(msg.header.stamp, stamp)
                    msg.header.frame_id = f"{camera}_camera"
                    self.pub_compressed[camera].publish(msg)

        def _publish_joints(self, state: np.ndarray, target: np.ndarray, stamp: float) -> None:
            names, measured = list(self.target.names), [float(v) for v in state]
            msg = JointState(name=names, position=measured)
            _stamp(msg.header.stamp, stamp)
            self.pub_joints.publish(msg)
            controller = JointTrajectoryControllerState(joint_names=names)
            _stamp(controller.header.stamp, stamp)
            controller.reference.positions = [float(v) for v in target]
            controller.feedback.positions = measured
            controller.error.positions = [float(r - m) for r, m in zip(target, state, strict=True)]
            self.pub_controller_state.publish(controller)

        def shutdown(self) -> None:
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=2.0)

    return SimRobotNodeImpl


def SimRobotNode(**kwargs):  # noqa: N802 - a constructor, named as the class it builds
    return _node_class()(**kwargs)


if __name__ == "__main__":
    sys.exit(main())
