"""Record live ROS topics into an MCAP rosbag2 with `rosbags` (no rosbag2 in this runtime).

    python -m vla_ros.tools.bag_record OUT_DIR --topics /joint_states /scene/image_raw ... [--duration S]

Used by `vla_ros demo` / eval and the parity tests to keep a closed-loop run (observations and
the commands the node sent) for replay. Subscriptions are raw (rclpy hands over the CDR bytes
DDS received), so nothing is decoded or re-encoded: the bag holds exactly what was on the wire.
Each message is stamped with its receive time (wall clock, ns), like `ros2 bag record`.

`RecorderProcess` runs it as a process of its own, as `ros2 bag record` would be: recording in a
process that is also busy (the demo's client, plotting, the goal loop) stamped messages up to 1 s
late, so a replay with the node's default freshness limits faulted "observations stale".
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys.store import Typestore

# Topics and types of a closed-loop run of the simulated robot (sim_robot_node + vla_node).
CLOSED_LOOP_TOPICS: dict[str, str] = {
    "/scene/image_raw": "sensor_msgs/msg/Image",
    "/wrist/image_raw": "sensor_msgs/msg/Image",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/arm_controller/commands": "std_msgs/msg/Float64MultiArray",
    "/arm_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
    "/gripper_controller/commands": "std_msgs/msg/Float64MultiArray",
    "/sim_robot/instruction": "std_msgs/msg/String",
    "/sim_robot/task_success": "std_msgs/msg/Bool",
}


class BagRecordError(ValueError):
    """A topic or type that cannot be recorded; the message names it."""


def _typestore_with(msgtypes: Iterable[str]) -> Typestore:
    """The Jazzy typestore plus any installed type it lacks, read from its .msg file."""
    from rosbags.typesys import get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    pending = [t for t in msgtypes if t not in store.fielddefs]
    while pending:
        msgtype = pending.pop()
        if msgtype in store.fielddefs:
            continue
        store.register(get_types_from_msg(_installed_msg_text(msgtype), msgtype))
        # Nested types the new definition uses must be known too (for the MCAP schema).
        pending += [n for n in _referenced_types(store.fielddefs[msgtype]) if n not in store.fielddefs]
    return store


def _referenced_types(fielddef) -> list[str]:
    from rosbags.interfaces import Nodetype

    names = []
    for _, (kind, ref) in fielddef[1]:
        if kind == Nodetype.NAME:
            names.append(ref)
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) and ref[0][0] == Nodetype.NAME:
            names.append(ref[0][1])
    return names


def _installed_msg_text(msgtype: str) -> str:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    package, _, name = msgtype.split("/")
    try:
        path = Path(get_package_share_directory(package)) / "msg" / f"{name}.msg"
        return path.read_text()
    except (PackageNotFoundError, OSError) as exc:
        raise BagRecordError(f"cannot record {msgtype}: its definition is not installed ({exc})") from exc


class BagRecorder:
    """Subscribes (raw) to `topics` on `node` and writes every message to an MCAP bag.

    Thread-safe: callbacks may arrive from a multi-threaded executor; one lock guards the writer.
    """

    def __init__(self, node, path: str | Path, topics: Mapping[str, str], depth: int = 100):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosidl_runtime_py.utilities import get_message

        self.path = Path(path)
        if self.path.exists():
            raise BagRecordError(f"{self.path}: exists; rosbag2 writers need a new directory")
        self.typestore = _typestore_with(topics.values())
        self.node = node
        self.counts: dict[str, int] = dict.fromkeys(topics, 0)
        self._lock = threading.Lock()
        self._closed = False
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {}
        self._subs = []
        for topic, msgtype in topics.items():
            # A best-effort subscription also hears reliable publishers; a reliable one would not
            # hear best-effort (sensor-data) publishers, so only use reliable when all are reliable.
            # Latched (transient-local) topics, e.g. an instruction, need a transient-local
            # subscription to get the message sent before we joined, and keep that in the bag.
            publishers = node.get_publishers_info_by_topic(topic)
            best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in publishers)
            latched = bool(publishers) and all(
                i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in publishers)
            reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
            durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
            qos = QoSProfile(depth=depth, reliability=reliability, durability=durability)
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore,
                offered_qos_profiles=[_bag_qos(best_effort, latched)])
            self._subs.append(node.create_subscription(
                get_message(msgtype), topic, lambda raw, t=topic: self._on_message(t, raw), qos, raw=True))

    def _on_message(self, topic: str, raw: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            self._writer.write(self._connections[topic], time.time_ns(), raw)
            self.counts[topic] += 1

    def close(self) -> dict[str, int]:
        """Stop recording and finish the bag; returns messages written per topic.

        The subscriptions stay (their callbacks now return at once) and go with the node:
        destroying them while an executor spins races it ("cannot use Destroyable because
        destruction was requested")."""
        with self._lock:
            if self._closed:
                return self.counts
            self._closed = True
            self._writer.close()
        return self.counts


def _bag_qos(best_effort: bool, latched: bool):
    """The offered QoS stored in the bag's metadata (bag-replay re-latches transient-local topics)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    infinite = QosTime(0x7FFFFFFF, 0xFFFFFFFF)
    return Qos(QosHistory.KEEP_LAST, 1 if latched else 10,
               QosReliability.BEST_EFFORT if best_effort else QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               infinite, infinite, QosLiveliness.AUTOMATIC, infinite, False)


def discover_types(node, topics: Iterable[str], timeout_s: float = 5.0) -> dict[str, str]:
    """Topic -> type from the ROS graph, waiting for discovery; a topic never seen is an error."""
    wanted = list(topics)
    deadline = time.monotonic() + timeout_s
    found: dict[str, str] = {}
    while True:
        found = {name: types[0] for name, types in node.get_topic_names_and_types() if name in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise BagRecordError(f"topics {missing} have no publisher after {timeout_s:.0f} s; pass their types "
                             "as TOPIC:TYPE (e.g. /joint_states:sensor_msgs/msg/JointState)")
    return found


def wait_for_publishers(node, topics: Iterable[str], timeout_s: float = 5.0, settle_s: float = 1.0) -> None:
    """Give discovery time: until every topic has a publisher, or the set of those that do has not
    grown for ``settle_s`` (some topics, e.g. an unused output, never get one), at most ``timeout_s``.
    Each subscription's QoS is chosen from its publishers (BagRecorder), so they must be known."""
    wanted = list(topics)
    deadline = time.monotonic() + timeout_s
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sum(1 for topic in wanted if node.count_publishers(topic))
        if count == len(wanted):
            return
        if count != seen:
            seen, since = count, time.monotonic()
        elif count > 0 and time.monotonic() - since >= settle_s:
            return
        time.sleep(0.05)


class RecorderProcess:
    """`python -m vla_ros.tools.bag_record OUT` as a child process: started, ready, stopped, counted."""

    def __init__(self, out: str | Path, topics: Iterable[str] | None = None, ready_timeout_s: float = 30.0):
        cmd = [sys.executable, "-m", "vla_ros.tools.bag_record", str(out)]
        if topics is not None:
            cmd += ["--topics", *topics]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()  # "bag-record: recording ..." once subscribed (or an error)
        if "recording" not in line:
            rest = self._stop(ready_timeout_s)
            raise RuntimeError(f"bag recorder did not start: {line}{rest}".strip())

    def close(self, timeout_s: float = 15.0) -> dict[str, int]:
        """Stop recording (SIGTERM), finish the bag; messages written per topic."""
        output = self._stop(timeout_s)
        counts: dict[str, int] = {}
        for line in output.splitlines():
            if line.startswith("bag-record: ") and "=" in line:
                for item in line[len("bag-record: "):].split(", "):
                    topic, _, n = item.rpartition("=")
                    counts[topic] = int(n)
        return counts

    def _stop(self, timeout_s: float) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            output, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        return output or ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_ros.tools.bag_record",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="new bag directory")
    p.add_argument("--topics", nargs="*", default=None,
                   help="TOPIC or TOPIC:TYPE; default: the closed-loop topics of the simulated robot")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0 = until Ctrl-C)")
    args = p.parse_args(argv)
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("bag_record")
    try:
        if args.topics is None:
            topics = dict(CLOSED_LOOP_TOPICS)
        else:
            typed = dict(t.split(":", 1) for t in args.topics if ":" in t)
            untyped = [t for t in args.topics if ":" not in t]
            topics = {**typed, **(discover_types(node, untyped) if untyped else {})}
        wait_for_publishers(node, topics)
        recorder = BagRecorder(node, args.out, topics)
    except BagRecordError as exc:
        print(f"bag-record: {exc}", file=sys.stderr)
        node.destroy_node()
        rclpy.shutdown()
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print(f"bag-record: recording {len(topics)} topics into {args.out}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait(args.duration if args.duration > 0 else None)
    counts = recorder.close()
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    print("bag-record: " + ", ".join(f"{t}={n}" for t, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
