"""`vla_ros bag-replay`: bags written with rosbags come back over real DDS, same content and order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402
from rosidl_runtime_py.utilities import get_message  # noqa: E402

from vla_ros.tools.bag_replay import BagReplayError, BagSource, parse_remaps  # noqa: E402

STORE = get_typestore(Stores.ROS2_JAZZY)
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
SPACING_NS = 40_000_000  # 40 ms between recorded messages


def _header(stamp_ns: int, frame: str):
    T = STORE.types
    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                    frame_id=frame)


def _recorded_messages(n: int, rng: np.random.Generator):
    """(topic, msgtype, bag time ns, rosbags message, expected content) in time order."""
    T = STORE.types
    t0 = 1_700_000_000_000_000_000
    out = []
    for i in range(n):
        t = t0 + i * SPACING_NS
        kind = i % 3
        if kind == 0:
            pixels = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
            msg = T["sensor_msgs/msg/Image"](header=_header(t, "scene"), height=6, width=8, encoding="rgb8",
                                             is_bigendian=0, step=24, data=pixels.reshape(-1))
            out.append(("/scene/image_raw", "sensor_msgs/msg/Image", t, msg, ("image", t, pixels.tobytes())))
        elif kind == 1:
            pos = rng.normal(size=6)
            msg = T["sensor_msgs/msg/JointState"](header=_header(t, ""), name=JOINTS, position=pos,
                                                  velocity=np.zeros(0), effort=np.zeros(0))
            out.append(("/joint_states", "sensor_msgs/msg/JointState", t, msg, ("joints", t, tuple(pos))))
        else:
            text = f"pick up the red cube #{i} ✓"
            msg = T["std_msgs/msg/String"](data=text)
            out.append(("/instruction", "std_msgs/msg/String", t, msg, ("text", t, text)))
    return out


def _write_bag(path: Path, records, plugin: StoragePlugin) -> None:
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, stamp, msg, _ in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=STORE)
            writer.write(conns[topic], stamp, STORE.serialize_cdr(msg, msgtype))


def _content(msg, recv_stamp_ns=None):
    if hasattr(msg, "encoding"):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert (msg.height, msg.width, msg.encoding, msg.step) == (6, 8, "rgb8", 24)
        return ("image", stamp, bytes(msg.data))
    if hasattr(msg, "position"):
        assert list(msg.name) == JOINTS
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return ("joints", stamp, tuple(msg.position))
    return ("text", None, msg.data)


class _Listener:
    """Subscribes to the replayed topics and keeps (arrival order, content)."""

    def __init__(self, topics: dict[str, str]):
        self.node = rclpy.create_node("bag_replay_test_listener")
        self.received: list[tuple[str, tuple]] = []
        self.arrivals: list[float] = []  # monotonic time of each entry in `received`
        self._lock = threading.Lock()
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msgtype in topics.items():
            self.node.create_subscription(get_message(msgtype), topic,
                                          lambda m, t=topic: self._on(t, m), qos)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on(self, topic, msg):
        with self._lock:
            self.received.append((topic, _content(msg)))
            self.arrivals.append(time.monotonic())

    def wait_for(self, n: int, timeout_s: float) -> list:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.received) < n:
            time.sleep(0.05)
        with self._lock:
            return list(self.received)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def _replay_cmd(bag: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vla_ros.cli", "bag-replay", str(bag), "--wait-subscribers", "1", *extra]


def _expected(records, remap=None):
    remap = remap or {}
    text_stamp = lambda c: (c[0], None, c[2]) if c[0] == "text" else c  # noqa: E731
    return [(remap.get(topic, topic), text_stamp(content)) for topic, _, _, _, content in records]


@pytest.mark.parametrize("plugin", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def test_replay_delivers_identical_content_in_recorded_order(tmp_path, ros, plugin):
    records = _recorded_messages(24, np.random.default_rng(0))
    bag = tmp_path / "bag"
    _write_bag(bag, records, plugin)
    remap = {"/scene/image_raw": "/replayed/scene"}
    topics = {remap.get(t, t): ty for t, ty, *_ in records}
    listener = _Listener(topics)
    try:
        proc = subprocess.run(_replay_cmd(bag, "--rate", "2", "--remap", "/scene/image_raw:=/replayed/scene"),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        received = listener.wait_for(len(records), 10.0)
        arrivals = list(listener.arrivals)
    finally:
        listener.close()
    expected = _expected(records, remap)
    # Content and order per topic. Across topics the listener's executor may take messages that
    # wait at once in its own order (seen in CI under load), so the global order is checked on the
    # source the player iterates, and the timing by the span: the replay is paced, not dumped.
    assert sorted(received, key=repr) == sorted(expected, key=repr)
    for topic in topics:
        assert [c for t, c in received if t == topic] == [c for t, c in expected if t == topic], topic
    source = BagSource(bag)
    try:
        in_bag_order = [(t, stamp) for t, stamp, _ in source.messages()]
        assert in_bag_order == [(t, stamp) for t, _, stamp, _, _ in records]
    finally:
        source.close()
    nominal = (len(records) - 1) * SPACING_NS * 1e-9 / 2  # --rate 2
    span = arrivals[-1] - arrivals[0]
    assert span > 0.5 * nominal, f"{len(records)} messages within {span:.3f} s"
    assert "published 24 messages" in proc.stdout


def test_loop_repeats_the_bag_and_ctrl_c_exits_cleanly(tmp_path, ros):
    records = _recorded_messages(6, np.random.default_rng(1))
    bag = tmp_path / "bag"
    _write_bag(bag, records, StoragePlugin.MCAP)
    listener = _Listener({t: ty for t, ty, *_ in records})
    proc = subprocess.Popen(_replay_cmd(bag, "--loop", "--rate", "4"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        received = listener.wait_for(3 * len(records), 30.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
    # Passes follow each other back to back, so only the order within a topic is defined there.
    per_topic = lambda items, n: [c for t, c in items if t == topic][:n]  # noqa: E731
    for topic in {t for t, *_ in records}:
        expected = per_topic(_expected(records), None)
        assert per_topic(received, 3 * len(expected)) == expected * 3, topic
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_bad_bag_and_options_are_refused_by_name(tmp_path):
    with pytest.raises(BagReplayError, match="no such bag"):
        BagSource(tmp_path / "missing")
    with pytest.raises(BagReplayError, match="FROM:=TO"):
        parse_remaps(["/a=/b"])
    records = _recorded_messages(3, np.random.default_rng(2))
    _write_bag(tmp_path / "bag", records, StoragePlugin.MCAP)
    with pytest.raises(BagReplayError, match=r"\['/nope'\] are not in the bag"):
        BagSource(tmp_path / "bag", topics=["/nope"])
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "vla_ros.cli", "bag-replay", str(tmp_path / "bag"),
                           "--rate", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "--rate must be > 0" in proc.stderr
