"""What `vla_ros demo`, `vla_ros eval-ros` and the closed-loop tests share: bring up the simulated
stack (launch/sim_demo.launch.py in its own process group) and drive episodes through the ROS
interfaces only, as any client of a real robot would.

`SimStack` starts the launch file in a child process (there is no `ros2 launch` in the pip
runtime, so the child runs launch's LaunchService itself) and stops it without leaving anything
behind: SIGINT to the whole process group, then SIGTERM, then SIGKILL.

`EpisodeClient` is a plain rclpy node. Per episode it re-arms vla_node (lifecycle deactivate,
sim reset with a chosen seed, activate: a reset teleports the arm, and an active controller would
otherwise keep holding its last command from the previous episode), sends the instruction through
vla_ros.tools.goal_client (the ExecuteInstruction action when the interfaces are built, else
~/instruction and ~/status) and waits for the result. It also records what the plot needs:
commanded and measured joints from the sim's controller_state, on the message stamps (receive
times arrive in bursts), chunk arrivals (a change of the status' latest inference latency) and
scene frames.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
VLA_NODE = "/vla_node"
SIM_NODE = "/sim_robot"

# Runs a launch file with LaunchService (what `ros2 launch FILE k:=v ...` does).
_LAUNCH_RUNNER = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
path, args = sys.argv[1], dict(a.split(":=", 1) for a in sys.argv[2:])
ls = LaunchService()
ls.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(path), launch_arguments=list(args.items()))]))
sys.exit(ls.run())
"""


def launch_file(name: str = "sim_demo.launch.py") -> Path:
    """The installed launch file (ament share directory), else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("vla_ros")) / "launch" / name
        if path.is_file():
            return path
    except Exception:  # not on AMENT_PREFIX_PATH: fall back to the repository
        pass
    return REPO_ROOT / "launch" / name


def ament_environment() -> dict[str, str]:
    """os.environ, plus the development ament layout where no prefix on AMENT_PREFIX_PATH has
    vla_ros (e.g. a shell that did not source scripts/env.sh), so launch_ros finds its executables."""
    env = dict(os.environ)
    prefix = REPO_ROOT / "build" / "ament_prefix"
    paths = env.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    marker = Path("share", "ament_index", "resource_index", "packages", "vla_ros")
    if not any(p and (Path(p) / marker).is_file() for p in paths):
        subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "ament_layout.py"), str(prefix)],
                       check=True, capture_output=True)
        env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), *[p for p in paths if p]])
    return env


class SimStack:
    """launch/sim_demo.launch.py in a child process group; a context manager that always cleans up."""

    def __init__(self, launch_args: dict[str, str] | None = None, log_path: str | Path | None = None,
                 name: str = "sim_demo.launch.py"):
        self.launch_args = {k: str(v) for k, v in (launch_args or {}).items()}
        self.log_path = Path(log_path) if log_path else None
        self.name = name
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> SimStack:
        args = [f"{k}:={v}" for k, v in self.launch_args.items()]
        cmd = [sys.executable, "-c", _LAUNCH_RUNNER, str(launch_file(self.name)), *args]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        # Own session: one killpg reaches launch and every node it started, and a Ctrl-C in the
        # terminal goes to us only, so we decide the order of shutdown.
        self.proc = subprocess.Popen(cmd, env=ament_environment(), start_new_session=True,
                                     stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGINT the group (nodes hold the arm and exit), then SIGTERM, then SIGKILL; returns rc."""
        proc = self.proc
        if proc is None:
            return None
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None and not process_group_alive(proc.pid):
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and (proc.poll() is None or process_group_alive(proc.pid)):
                time.sleep(0.1)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.poll()

    def __enter__(self) -> SimStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still "exists"; look for members that are not zombies.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# ---------------------------------------------------------------------------------------- client
@dataclass
class EpisodeResult:
    seed: int
    instruction: str
    success: bool  # the simulation reported the task done while the goal ran
    reason: str  # the node's termination reason ("completed", "timeout", "fault", "rejected", ...)
    episode_time_s: float  # goal accepted -> goal ended (wall clock)
    steps: int
    commands: int  # command messages received while the goal ran
    control_rate_hz: float  # commands / episode time
    latency_p50_s: float
    latency_p95_s: float
    chunks: int
    message: str = ""
    interface: str = ""  # what carried the goal: "action" or "topic"
    # goal accepted -> the status first reports a chunk (the wait for the first inference, to within
    # a status period); NaN when none came
    first_chunk_s: float = float("nan")

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float):
                return round(v, 4) if np.isfinite(v) else None  # strict JSON has no NaN
            return v
        return {k: clean(v) for k, v in self.__dict__.items()}


@dataclass
class Trace:
    """What happened during one episode, for the plot and the video (times: s since the goal)."""

    t0: float = 0.0
    commands: list[tuple[float, list[float]]] = field(default_factory=list)
    joints: list[tuple[float, list[float]]] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)
    success_time: float | None = None


class EpisodeClient:
    """Drives episodes of the simulated stack through its ROS interfaces (see module doc)."""

    def __init__(self, node_name: str = "vla_ros_episode_client", record_frames: bool = False,
                 command_topic: str = "/arm_controller/commands", interface: str = "auto"):
        import rclpy
        from control_msgs.msg import JointTrajectoryControllerState
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, Float64MultiArray, String
        from std_srvs.srv import Trigger

        from vla_ros.tools.goal_client import InstructionClient

        self.node = rclpy.create_node(node_name)
        self._lock = threading.Lock()
        self.status: dict = {}
        self.status_time = 0.0
        self.success = False
        self.instruction = ""
        self.record_frames = record_frames
        self.trace: Trace | None = None
        self._last_latency: float | None = None
        self._commands_in_goal = 0
        self._chunks_in_goal = 0
        self._first_chunk_at = float("nan")
        # controller_state while recording: (received, stamp, reference, feedback)
        self._stamped: list[tuple[float, float, list[float], list[float]]] = []
        self.goals = InstructionClient(self.node, VLA_NODE, interface)
        self.goals.status_listeners.append(self._on_status)
        self.node.create_subscription(Bool, f"{SIM_NODE}/task_success", self._on_success, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, f"{SIM_NODE}/instruction", self._on_instruction, latched)
        self.node.create_subscription(Float64MultiArray, command_topic, self._on_command, 50)
        controller = command_topic.rsplit("/", 1)[0]
        self.node.create_subscription(JointTrajectoryControllerState, f"{controller}/controller_state",
                                      self._on_controller_state, 50)
        if record_frames:
            self.node.create_subscription(Image, "/scene/image_raw", self._on_frame, 10)
        self.reset_client = self.node.create_client(Trigger, f"{SIM_NODE}/reset")
        self.sim_params = self.node.create_client(SetParameters, f"{SIM_NODE}/set_parameters")
        self.change_state = self.node.create_client(ChangeState, f"{VLA_NODE}/change_state")
        self.get_state = self.node.create_client(GetState, f"{VLA_NODE}/get_state")
        # Single-threaded: every callback here is short, and rclpy's MultiThreadedExecutor both added
        # tens of ms per delivery on this machine (bench remote) and left its failed callback tasks
        # unchecked at shutdown ("The following exception was never retrieved" on stderr).
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, name="episode_client", daemon=True)
        self._spin.start()

    # ------------------------------------------------------------------ subscriptions
    def _on_status(self, fields: dict) -> None:
        now = time.monotonic()
        with self._lock:
            self.status, self.status_time = fields, now
            latency = fields.get("inference_latency_s")
            # The status carries the newest inference latency; a new value means a new chunk.
            new_chunk = bool(latency) and latency != self._last_latency and fields.get("goal_active")
            if new_chunk:
                self._chunks_in_goal += 1
                if self._chunks_in_goal == 1:
                    self._first_chunk_at = now
                if self.trace is not None:
                    self.trace.chunk_times.append(now - self.trace.t0)
            self._last_latency = latency

    def _on_success(self, msg) -> None:
        with self._lock:
            self.success = bool(msg.data)
            if msg.data and self.trace is not None and self.trace.success_time is None:
                self.trace.success_time = time.monotonic() - self.trace.t0

    def _on_instruction(self, msg) -> None:
        with self._lock:
            self.instruction = msg.data

    def _on_command(self, msg) -> None:
        with self._lock:
            self._commands_in_goal += 1

    def _on_controller_state(self, msg) -> None:
        if self.trace is not None:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            with self._lock:
                self._stamped.append((time.monotonic(), stamp, list(msg.reference.positions),
                                      list(msg.feedback.positions)))

    def _on_frame(self, msg) -> None:
        if self.trace is not None:
            rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
            with self._lock:
                self.trace.frames.append((time.monotonic() - self.trace.t0, rgb))

    # ------------------------------------------------------------------ helpers
    def _wait(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def _call(self, client, request, what: str, timeout_s: float = 30.0):
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"{what}: service {client.srv_name} not available after {timeout_s:.0f} s")
        future = client.call_async(request)
        self._wait(future.done, timeout_s, what)
        return future.result()

    def running_stack_nodes(self, discovery_s: float = 1.5) -> list[str]:
        """sim_robot / vla_node already on this ROS domain (a second stack would mix with them)."""
        time.sleep(discovery_s)
        names = {f"{ns.rstrip('/')}/{name}" for name, ns in self.node.get_node_names_and_namespaces()}
        return sorted(names & {VLA_NODE, SIM_NODE})

    def wait_ready(self, timeout_s: float = 180.0, alive=lambda: True) -> None:
        """Until vla_node reports an active, idle runtime and the sim has published its task."""
        def ready():
            if not alive():
                raise RuntimeError("the simulated stack exited during start-up")
            with self._lock:
                fresh = time.monotonic() - self.status_time < 2.0
                return fresh and self.status.get("state") == "idle" and bool(self.instruction)
        self._wait(ready, timeout_s, "vla_node to become active (model loading) and the sim to start")

    def _transition(self, transition_id: int, label: str) -> None:
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.id = transition_id
        if not self._call(self.change_state, request, f"vla_node {label}").success:
            raise RuntimeError(f"vla_node refused the lifecycle transition {label}")

    def reset_episode(self, seed: int, task: str = "", rearm: bool = True) -> dict:
        """Re-arm vla_node around a sim reset to `seed`; returns the episode (instruction, task...).

        ``rearm=False`` resets only the sim and leaves vla_node active (its previous goal has ended)."""
        from lifecycle_msgs.msg import Transition
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        if rearm:
            self._transition(Transition.TRANSITION_DEACTIVATE, "deactivate")
        request = SetParameters.Request(parameters=[
            Parameter(name="seed", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER,
                                                        integer_value=seed)),
            Parameter(name="task", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                        string_value=task))])
        results = self._call(self.sim_params, request, "set the sim's seed").results
        if not all(r.successful for r in results):
            raise RuntimeError(f"sim_robot refused seed={seed} task={task!r}: {[r.reason for r in results]}")
        response = self._call(self.reset_client, Trigger.Request(), "reset the sim")
        if not response.success:
            raise RuntimeError(f"sim_robot reset failed: {response.message}")
        episode = json.loads(response.message)
        with self._lock:
            self.success = False
        if rearm:
            self._transition(Transition.TRANSITION_ACTIVATE, "activate")
        return episode

    # ------------------------------------------------------------------ one goal
    def run_goal(self, instruction: str, timeout_s: float, seed: int = -1,
                 record: bool = False, accept_timeout_s: float = 20.0) -> tuple[EpisodeResult, Trace | None]:
        """Send `instruction`, wait for the goal to end; the sim's success is the ground truth."""
        with self._lock:
            self.success = False
            self._commands_in_goal = 0
            self._chunks_in_goal = 0
            self._first_chunk_at = float("nan")
            self._last_latency = None
            self.trace = Trace(t0=time.monotonic()) if record else None
            self._stamped = []
        if not self.goals.wait_for_node(accept_timeout_s):
            raise TimeoutError(f"{VLA_NODE} is not reachable (no status or action server)")
        deadline = time.monotonic() + accept_timeout_s
        while True:  # "no fresh observation" right after activation is worth a retry
            with self._lock:
                self._commands_in_goal = 0
            # The topic carries no timeout: the stack's launch sets vla_node's goal_timeout_s to it.
            outcome = self.goals.run(instruction, timeout_s if self.goals.interface == "action" else 0.0,
                                     result_timeout_s=timeout_s + 30.0)
            if outcome.termination_reason != "rejected" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        t_end = time.monotonic()
        t_start = outcome.sent_at if np.isfinite(outcome.sent_at) else t_end
        with self._lock:
            status = dict(self.status)
            success = self.success or outcome.termination_reason == "completed"
            trace, self.trace = self.trace, None
            stamped, self._stamped = self._stamped, []
            commands = self._commands_in_goal
            chunks = self._chunks_in_goal
            first_chunk_s = self._first_chunk_at - t_start
        duration = max(t_end - t_start, 1e-9)
        if trace is not None:  # times relative to the goal's acceptance
            shift = t_start - trace.t0
            if stamped:  # stamps onto this clock: the smallest receive delay is the best estimate
                offset = min(received - stamp for received, stamp, _, _ in stamped)
                trace.commands = [(stamp + offset - t_start, ref) for _, stamp, ref, _ in stamped]
                trace.joints = [(stamp + offset - t_start, fb) for _, stamp, _, fb in stamped]
            trace.chunk_times = [t - shift for t in trace.chunk_times]
            trace.frames = [(t - shift, f) for t, f in trace.frames]
            trace.success_time = None if trace.success_time is None else trace.success_time - shift
            trace.t0 = t_start
        return EpisodeResult(
            seed=seed, instruction=instruction, success=bool(success), reason=outcome.termination_reason,
            episode_time_s=duration, steps=outcome.steps, commands=commands,
            control_rate_hz=commands / duration,
            latency_p50_s=float(status.get("inference_latency_p50_s", float("nan"))),
            latency_p95_s=float(status.get("inference_latency_p95_s", float("nan"))),
            chunks=chunks, message=outcome.message, interface=outcome.interface,
            first_chunk_s=first_chunk_s), trace

    def close(self) -> None:
        # Join the spin thread before anything is destroyed: Executor.shutdown does not wait for a
        # spin() in another thread, which then used a destroyed guard condition (seen once in five).
        self.executor.shutdown(timeout_sec=2.0)
        self._spin.join(5.0)
        self.goals.destroy()
        self.node.destroy_node()


def refuse_second_stack(client: EpisodeClient) -> None:
    """Raise if a sim_robot / vla_node already runs on this ROS domain (they would mix with ours)."""
    running = client.running_stack_nodes()
    if running:
        domain = os.environ.get("ROS_DOMAIN_ID", "0")
        raise RuntimeError(f"{', '.join(running)} already running on ROS_DOMAIN_ID={domain}; a second "
                           "simulated stack would mix with it: stop it, or set another ROS_DOMAIN_ID")


def summarize(results: Sequence[EpisodeResult]) -> dict:
    """success_rate, mean episode time (all, and successful only), latency and control rate."""
    n = len(results)
    ok = [r for r in results if r.success]
    # None, not NaN, for "no such episodes": the summary is printed as strict JSON.
    def mean(values):
        values = [v for v in values if np.isfinite(v)]
        return round(float(np.mean(values)), 4) if values else None

    return {
        "episodes": n,
        "successes": len(ok),
        "success_rate": len(ok) / n if n else None,
        "mean_episode_time_s": mean([r.episode_time_s for r in results]),
        "mean_success_time_s": mean([r.episode_time_s for r in ok]),
        "mean_success_first_chunk_s": mean([r.first_chunk_s for r in ok]),
        "control_rate_hz": mean([r.control_rate_hz for r in results]),
        "latency_p50_s": mean([r.latency_p50_s for r in results]),
        "latency_p95_s": mean([r.latency_p95_s for r in results]),
        "reasons": {k: sum(r.reason == k for r in results) for k in sorted({r.reason for r in results})},
        "interface": ",".join(sorted({r.interface for r in results})),
    }
