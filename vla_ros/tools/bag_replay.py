"""`vla_ros bag-replay BAG`: publish a rosbag2 (mcap or sqlite3) into live ROS topics.

Usage::

    vla_ros bag-replay BAG [--rate F] [--loop] [--remap /a:=/b ...] [--topics /x /y ...]
                           [--start-offset S] [--clock] [--wait-subscribers N]

Messages keep their recorded relative timing, divided by ``--rate``; ``--loop`` starts over
at the end; ``--remap`` renames topics on the way out; Ctrl-C stops cleanly.

Why rosbags and not rosbag2_py / `ros2 bag play`: the ROS 2 runtime here (a pip wheel) ships
no rosbag2 and no storage plugins, while `rosbags` is pure Python and reads both storage
formats. Why raw CDR instead of decoding: a rosbag2 message is already the CDR bytes DDS
sends, and rclpy publishes bytes as-is (Publisher.publish(bytes) -> publish_raw), so replay is
byte-exact and costs no per-field Python work (a 640x480 image decoded and rebuilt field by
field in Python would take longer than its frame period). Types are still checked: each
topic's type must be importable here (rosidl get_message), or replay refuses it by name.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.highlevel import AnyReader


class BagReplayError(ValueError):
    """A bag or option that cannot be replayed; the message names what and where."""


@dataclass(frozen=True)
class ReplayTopic:
    topic: str  # as recorded
    out_topic: str  # after remapping
    msgtype: str  # e.g. "sensor_msgs/msg/Image"
    count: int
    transient_local: bool = False


@dataclass
class ReplayStats:
    published: int = 0
    loops: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    max_lateness_s: float = 0.0  # worst delay of a publish behind its scaled recorded time


def parse_remaps(remaps: Sequence[str]) -> dict[str, str]:
    """["/a:=/b", ...] -> {"/a": "/b"}; a malformed rule is an error naming it."""
    mapping = {}
    for rule in remaps:
        src, sep, dst = rule.partition(":=")
        if not sep or not src or not dst:
            raise BagReplayError(f"--remap {rule!r}: expected FROM:=TO, e.g. /camera/image:=/scene/image")
        mapping[src] = dst
    return mapping


def _is_transient_local(connection) -> bool:
    # rosbag2 stores the publisher's offered QoS: a YAML string (bag v8) or a list (v9).
    qos = getattr(connection.ext, "offered_qos_profiles", "") or ""
    if isinstance(qos, str):
        return "durability: 1" in qos or "transient_local" in qos.lower()
    return any("TRANSIENT_LOCAL" in str(getattr(q, "durability", "")).upper() for q in qos)


class BagSource:
    """An open bag and the connections selected for replay."""

    def __init__(self, path: str | Path, topics: Sequence[str] | None = None,
                 remaps: dict[str, str] | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise BagReplayError(f"{self.path}: no such bag (a rosbag2 directory or .mcap/.db3 file)")
        try:
            self.reader = AnyReader([self.path])
            self.reader.open()
        except Exception as exc:  # rosbags raises several unrelated types for unreadable bags
            raise BagReplayError(f"{self.path}: cannot open as a rosbag2 ({exc})") from exc
        remaps = remaps or {}
        available = {c.topic for c in self.reader.connections}
        if topics:
            missing = sorted(set(topics) - available)
            if missing:
                self.close()
                raise BagReplayError(f"{self.path}: topics {missing} are not in the bag "
                                     f"(it has {sorted(available)})")
        self.connections = [c for c in self.reader.connections if not topics or c.topic in topics]
        bad = [f"{c.topic} ({c.ext.serialization_format})" for c in self.connections
               if getattr(c.ext, "serialization_format", "cdr") != "cdr"]
        if bad:
            self.close()
            raise BagReplayError(f"{self.path}: only CDR (ROS 2) messages can be replayed; {bad} are not "
                                 "(convert ROS 1 bags with `rosbags-convert` first)")
        counts: dict[str, int] = {}
        for c in self.connections:
            counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
        self.topics = {c.topic: ReplayTopic(c.topic, remaps.get(c.topic, c.topic), c.msgtype,
                                            counts[c.topic], _is_transient_local(c))
                       for c in self.connections}
        self.start_ns = self.reader.start_time
        self.end_ns = self.reader.end_time

    def messages(self, start_offset_s: float = 0.0) -> Iterator[tuple[str, int, bytes]]:
        """(recorded topic, bag time ns, raw CDR bytes) in bag-time order."""
        start = self.start_ns + int(start_offset_s * 1e9)
        for connection, stamp, raw in self.reader.messages(connections=self.connections, start=start):
            yield connection.topic, stamp, bytes(raw)

    def close(self) -> None:
        self.reader.close()


def _message_class(msgtype: str):
    from rosidl_runtime_py.utilities import get_message

    try:
        return get_message(msgtype)
    except (AttributeError, ModuleNotFoundError, ValueError) as exc:
        raise BagReplayError(f"message type {msgtype} is not installed in this ROS environment "
                             f"({exc})") from exc


class BagPlayer:
    """Publishes a BagSource on `node` with the recorded timing scaled by `rate`."""

    def __init__(self, node, source: BagSource, rate: float = 1.0, loop: bool = False,
                 publish_clock: bool = False, start_offset_s: float = 0.0):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        if not rate > 0:
            raise BagReplayError(f"--rate must be > 0, got {rate}")
        self.node, self.source, self.rate, self.loop = node, source, rate, loop
        self.start_offset_s = start_offset_s
        self.stats = ReplayStats()
        self.publishers = {}
        for topic in source.topics.values():
            # Reliable so both reliable and best-effort subscribers receive; depth 100 so a
            # burst (several cameras at one instant) is not dropped before DDS sends it.
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=(DurabilityPolicy.TRANSIENT_LOCAL if topic.transient_local
                                         else DurabilityPolicy.VOLATILE))
            self.publishers[topic.topic] = node.create_publisher(_message_class(topic.msgtype),
                                                                 topic.out_topic, qos)
        self.clock_pub = None
        if publish_clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = node.create_publisher(Clock, "/clock", 10)

    def wait_for_subscribers(self, minimum: int, timeout_s: float) -> bool:
        """Wait until every publisher has >= `minimum` subscribers (DDS discovery takes time)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() >= minimum for p in self.publishers.values()):
                return True
            time.sleep(0.05)
        return False

    def _publish_clock(self, stamp_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.clock_pub.publish(msg)

    def play(self, stop: threading.Event | None = None) -> ReplayStats:
        """Publish until the bag ends (or forever with loop) or `stop` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            t0_wall = time.monotonic()
            t0_bag = None
            for topic, stamp, raw in self.source.messages(self.start_offset_s):
                if t0_bag is None:
                    t0_bag = stamp
                due = t0_wall + (stamp - t0_bag) * 1e-9 / self.rate
                # Event.wait instead of sleep: Ctrl-C / stop() interrupts a long gap at once.
                if stop.wait(max(0.0, due - time.monotonic())):
                    return self.stats
                self.stats.max_lateness_s = max(self.stats.max_lateness_s, time.monotonic() - due)
                if self.clock_pub is not None:
                    self._publish_clock(stamp)
                self.publishers[topic].publish(raw)
                self.stats.published += 1
                self.stats.per_topic[topic] = self.stats.per_topic.get(topic, 0) + 1
            self.stats.loops += 1
            if not self.loop or t0_bag is None:
                break
        self.flush()
        return self.stats

    def flush(self, timeout_s: float = 2.0) -> None:
        """Wait until reliable subscribers acknowledged everything (else the last messages of a
        bag can die with the process)."""
        from rclpy.duration import Duration

        for pub in self.publishers.values():
            pub.wait_for_all_acked(Duration(seconds=timeout_s))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros bag-replay", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="rosbag2 directory, or a single .mcap / .db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    p.add_argument("--loop", action="store_true", help="start over when the bag ends")
    p.add_argument("--remap", nargs="*", default=[], metavar="FROM:=TO", help="rename topics on output")
    p.add_argument("--topics", nargs="*", default=None, help="replay only these recorded topics")
    p.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                   help="skip the first S seconds of the bag")
    p.add_argument("--clock", action="store_true", help="publish /clock with the bag time (use_sim_time)")
    p.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                   help="before playing, wait up to 10 s for N subscribers on every topic")
    p.add_argument("--node-name", default="bag_replay")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        source = BagSource(args.bag, args.topics, parse_remaps(args.remap))
    except BagReplayError as exc:
        print(f"bag-replay: {exc}", file=sys.stderr)
        return 2
    import rclpy

    rclpy.init()
    node = rclpy.create_node(args.node_name)
    stop = threading.Event()
    try:
        player = BagPlayer(node, source, args.rate, args.loop, args.clock, args.start_offset)
        for t in source.topics.values():
            arrow = f" -> {t.out_topic}" if t.out_topic != t.topic else ""
            print(f"  {t.topic}{arrow}  [{t.msgtype}]  {t.count} msgs")
        if args.wait_subscribers and not player.wait_for_subscribers(args.wait_subscribers, 10.0):
            print(f"bag-replay: fewer than {args.wait_subscribers} subscribers after 10 s; playing anyway",
                  file=sys.stderr)
        duration = (source.end_ns - source.start_ns) * 1e-9
        print(f"bag-replay: {args.bag}: {duration:.2f} s of messages at rate {args.rate}"
              + (" (looping)" if args.loop else ""))
        stats = player.play(stop)
        print(f"bag-replay: published {stats.published} messages, {stats.loops} pass(es), "
              f"max lateness {stats.max_lateness_s * 1e3:.1f} ms")
    except BagReplayError as exc:
        print(f"bag-replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stop.set()
        print("bag-replay: interrupted", file=sys.stderr)
        return 130
    finally:
        source.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
