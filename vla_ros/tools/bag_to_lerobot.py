"""`vla_ros bag-to-lerobot BAG... --out DIR`: rosbag2 recordings (mcap or sqlite3) as a
LeRobotDataset v3, every stream sampled onto one fixed-rate frame grid.

    vla_ros bag-to-lerobot BAG... --out DIR [--fps 10] [--tolerance S]
        [--camera NAME=TOPIC ...] [--state-topic /joint_states]
        [--action-topic /arm_controller/joint_trajectory]
        [--instruction-topic /instruction | --instruction TEXT] [--episode-topic TOPIC]
        [--video lossless|av1] [--overwrite]

Streams: cameras (sensor_msgs Image or CompressedImage, converted to RGB with rosbags-image;
default every image topic in the bag, named by the topic's first component, /wrist/image_raw ->
wrist), the state (JointState positions, in the first message's joint order) and the action
(JointTrajectory: the first point's positions; JointState: positions; Float64MultiArray: data).
A message's time is its header stamp, or the bag's log time where it has no header or a zero
stamp (controllers often send trajectories stamped 0, "now").

Alignment (vla_ros/data/align.py): at each frame time every stream gives its nearest earlier
sample within ``--tolerance`` (default half a frame period); frames where any stream has none
are dropped and counted per topic. LeRobot frames are evenly spaced (timestamp = k / fps), so
the frames kept are numbered consecutively: a dropped frame shortens the episode by one period.

Episodes: one per bag, or with ``--episode-topic`` one per message on that topic, from its time to
the next one's (``--episode-topic /instruction`` starts an episode at each new instruction).
The instruction is the latest ``--instruction-topic`` message at or before the episode's first
frame (else its first one inside the episode), or ``--instruction``. A bag written by
`vla_ros sim-collect --bag` carries episode.json; its task record and success are kept.
Each bag is read into memory whole (one at a time).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.image import ImageError, message_to_cvimage
from tqdm import tqdm

from vla_ros.data.align import align
from vla_ros.data.dataset import DatasetError, Episode
from vla_ros.sim.bag import ACTION_TOPIC, INSTRUCTION_TOPIC, JOINT_STATES_TOPIC, TYPESTORE

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STATE_TYPES = ("sensor_msgs/msg/JointState",)
ACTION_TYPES = ("trajectory_msgs/msg/JointTrajectory", "sensor_msgs/msg/JointState",
                "std_msgs/msg/Float64MultiArray")


@dataclass
class Stream:
    topic: str
    msgtype: str
    stamps: list[int] = field(default_factory=list)
    messages: list = field(default_factory=list)


@dataclass
class Report:
    bags: int = 0
    episodes: int = 0
    frames: int = 0
    dropped_frames: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # topic -> frames dropped for want of it

    def add(self, dropped: dict[str, int], dropped_frames: int, frames: int) -> None:
        self.episodes += 1
        self.frames += frames
        self.dropped_frames += dropped_frames
        for topic, n in dropped.items():
            self.dropped[topic] = self.dropped.get(topic, 0) + n


def message_time(msg, log_ns: int) -> int:
    header = getattr(msg, "header", None)
    if header is None:
        return log_ns
    ns = header.stamp.sec * 10**9 + header.stamp.nanosec
    return ns if ns != 0 else log_ns


def read_bag(path: Path, topics: set[str], progress: bool) -> dict[str, Stream]:
    """Every message on ``topics``, deserialized, with its time; topics the bag lacks are absent."""
    streams: dict[str, Stream] = {}
    try:
        with AnyReader([path], default_typestore=TYPESTORE) as reader:
            connections = [c for c in reader.connections if c.topic in topics]
            total = sum(c.msgcount for c in connections)
            bar = tqdm(total=total, desc=path.name, unit="msg", disable=not progress, leave=False)
            for conn, log_ns, raw in reader.messages(connections=connections):
                msg = reader.deserialize(raw, conn.msgtype)
                stream = streams.setdefault(conn.topic, Stream(conn.topic, conn.msgtype))
                if stream.msgtype != conn.msgtype:
                    raise DatasetError(f"{path}: topic {conn.topic} has two types, {stream.msgtype} "
                                       f"and {conn.msgtype}")
                stream.stamps.append(message_time(msg, log_ns))
                stream.messages.append(msg)
                bar.update()
            bar.close()
    except DatasetError:
        raise
    except Exception as exc:  # rosbags raises its own per-storage errors; name the bag
        raise DatasetError(f"{path}: cannot read bag ({type(exc).__name__}: {exc})") from exc
    return streams


def image_topics(path: Path) -> dict[str, str]:
    """camera name -> topic for every image topic in a bag (/wrist/image_raw -> wrist)."""
    with AnyReader([path], default_typestore=TYPESTORE) as reader:
        topics = sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES})
    cameras = {t.strip("/").split("/")[0]: t for t in topics}
    if len(cameras) != len(topics):
        raise DatasetError(f"{path}: image topics {topics} do not have distinct first components; "
                           "name them with --camera NAME=TOPIC")
    return cameras


def positions(msg, msgtype: str, names: list[str] | None, where: str) -> tuple[np.ndarray, list[str] | None]:
    """A state/action vector in the order ``names`` (taken from this message when None)."""
    if msgtype == "std_msgs/msg/Float64MultiArray":
        return np.asarray(msg.data, dtype=np.float32), names
    if msgtype == "trajectory_msgs/msg/JointTrajectory":
        if not msg.points:
            raise DatasetError(f"{where}: JointTrajectory with no points")
        joints, values = list(msg.joint_names), np.asarray(msg.points[0].positions)
    else:
        joints, values = list(msg.name), np.asarray(msg.position)
    if len(joints) != len(values):
        raise DatasetError(f"{where}: {len(joints)} joint names but {len(values)} positions")
    if names is None:
        names = joints
    by_name = dict(zip(joints, values, strict=True))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DatasetError(f"{where}: joints {missing} missing (message has {joints})")
    return np.array([by_name[n] for n in names], dtype=np.float32), names


def episode_spans(streams: dict[str, Stream], episode_topic: str | None,
                  path: Path) -> list[tuple[int | None, int | None]]:
    """(start, end) ns of each episode; None: where the streams start or end."""
    if episode_topic is None:
        return [(None, None)]
    if episode_topic not in streams:
        raise DatasetError(f"{path}: --episode-topic {episode_topic} has no messages")
    marks = sorted(streams[episode_topic].stamps)
    ends = [m - 1 for m in marks[1:]] + [None]
    return list(zip(marks, ends, strict=True))


def instruction_at(streams: dict[str, Stream], topic: str | None, start: int, end: int) -> str | None:
    if topic is None or topic not in streams:
        return None
    stream = streams[topic]
    order = np.argsort(stream.stamps, kind="stable")
    stamps = np.asarray(stream.stamps)[order]
    i = int(np.searchsorted(stamps, start, side="right")) - 1
    if i < 0:  # none before the first frame: the first one inside the episode
        i = 0 if stamps[0] <= end else -1
    return None if i < 0 else str(stream.messages[order[i]].data)


@dataclass
class Options:
    fps: int
    tolerance_s: float
    cameras: dict[str, str] | None
    state_topic: str
    action_topic: str
    instruction_topic: str | None
    instruction: str | None
    episode_topic: str | None


def check_streams(path: Path, streams: dict[str, Stream], cameras: dict[str, str],
                  roles: dict[str, str]) -> None:
    missing = sorted({t for t in [*cameras.values(), *roles.values()] if t not in streams})
    if missing:
        raise DatasetError(f"{path}: no messages on {missing} (topics found: {sorted(streams)})")
    for role, types in (("state", STATE_TYPES), ("action", ACTION_TYPES)):
        if streams[roles[role]].msgtype not in types:
            raise DatasetError(f"{path}: {role} topic {roles[role]} is {streams[roles[role]].msgtype}; "
                               f"expected one of {list(types)}")
    for camera, topic in cameras.items():
        if streams[topic].msgtype not in IMAGE_TYPES:
            raise DatasetError(f"{path}: camera {camera} topic {topic} is {streams[topic].msgtype}, "
                               "not an image")


def rgb_frames(path: Path, stream: Stream, indices: np.ndarray) -> np.ndarray:
    frames = []
    for i in indices:
        try:
            frames.append(message_to_cvimage(stream.messages[i], "rgb8"))
        except ImageError as exc:
            raise DatasetError(f"{path}: {stream.topic} message {i}: {exc}") from exc
    return np.stack(frames)


def vectors(path: Path, stream: Stream, indices: np.ndarray,
            names: list[str] | None) -> tuple[np.ndarray, list]:
    rows = []
    for i in indices:
        where = f"{path}: {stream.topic} message {i}"
        row, names = positions(stream.messages[i], stream.msgtype, names, where)
        rows.append(row)
    return np.stack(rows), names


def bag_episodes(path: Path, opts: Options, report: Report, names: dict,
                 progress: bool) -> Iterator[Episode]:
    """The episodes of one bag; ``names`` carries the state/action joint order across bags."""
    cameras = opts.cameras or image_topics(path)
    if not cameras:
        raise DatasetError(f"{path}: no Image or CompressedImage topic; name one with --camera NAME=TOPIC")
    roles = {"state": opts.state_topic, "action": opts.action_topic}
    extra = [t for t in (opts.instruction_topic, opts.episode_topic) if t]
    wanted = {*cameras.values(), *roles.values(), *extra}
    streams = read_bag(path, wanted, progress)
    check_streams(path, streams, cameras, roles)
    sidecar = path / "episode.json"
    recorded = json.loads(sidecar.read_text()) if sidecar.is_file() and not opts.episode_topic else {}
    stamps = {t: np.asarray(streams[t].stamps, dtype=np.int64) for t in {*cameras.values(), *roles.values()}}
    for start, end in episode_spans(streams, opts.episode_topic, path):
        result = align(stamps, opts.fps, opts.tolerance_s, start, end)
        if result.frames == 0:
            raise DatasetError(f"{path}: no frame has every stream within {opts.tolerance_s} s "
                               f"(dropped per topic: {result.dropped})")
        first = int(result.grid_ns[result.kept][0])
        instruction = instruction_at(streams, opts.instruction_topic, first, int(result.grid_ns[-1])) \
            or opts.instruction
        if instruction is None:
            raise DatasetError(f"{path}: no instruction for the episode at {first} ns: no message on "
                               f"{opts.instruction_topic} before its end; pass --instruction TEXT")
        images = {c: rgb_frames(path, streams[t], result.indices[t]) for c, t in cameras.items()}
        state, names["state"] = vectors(path, streams[roles["state"]], result.indices[roles["state"]],
                                        names.get("state"))
        action, names["action"] = vectors(path, streams[roles["action"]], result.indices[roles["action"]],
                                          names.get("action"))
        report.add(result.dropped, result.dropped_frames, result.frames)
        yield Episode(images=images, state=state, action=action,
                      timestamp=np.arange(result.frames) / opts.fps, instruction=instruction,
                      task=recorded.get("task") or {"source_bag": str(path), "start_ns": first},
                      success=bool(recorded.get("success", True)))
    report.bags += 1


def convert(bags: list[Path], out: Path, opts: Options, video: str = "lossless", overwrite: bool = False,
            progress: bool = True) -> Report:
    from vla_ros.data.lerobot import LeRobotWriter

    report = Report()
    names: dict[str, list[str]] = {}
    writer = None
    try:
        for path in tqdm(bags, desc="bags", unit="bag", disable=not progress):
            for episode in bag_episodes(path, opts, report, names, progress):
                if writer is None:
                    cameras = sorted(episode.images)
                    size = episode.images[cameras[0]].shape[1:3]
                    width = episode.action.shape[1]  # Float64MultiArray commands carry no names
                    action_names = names.get("action") or [f"action_{i}" for i in range(width)]
                    writer = LeRobotWriter(out, opts.fps, cameras, size, names["state"], action_names,
                                           video=video, overwrite=overwrite)
                writer.add(episode)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise DatasetError("no episodes in the bags given")
    writer.close()
    return report


def parse_camera(text: str) -> tuple[str, str]:
    name, sep, topic = text.partition("=")
    if not sep or not name or not topic.startswith("/"):
        raise argparse.ArgumentTypeError(f"--camera {text!r}: expected NAME=/topic")
    return name, topic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros bag-to-lerobot", description=__doc__.splitlines()[0])
    p.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories (mcap or sqlite3)")
    p.add_argument("--out", type=Path, required=True, help="LeRobotDataset directory to write")
    p.add_argument("--fps", type=int, default=10, help="frame rate of the dataset (default 10)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="oldest sample a frame may use, seconds (default half a frame period)")
    p.add_argument("--camera", type=parse_camera, action="append", metavar="NAME=TOPIC",
                   help="a camera and its topic (repeat; default every image topic in the bag)")
    p.add_argument("--state-topic", default=JOINT_STATES_TOPIC,
                   help=f"JointState (default {JOINT_STATES_TOPIC})")
    p.add_argument("--action-topic", default=ACTION_TOPIC, help=f"commands (default {ACTION_TOPIC})")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--instruction-topic", default=INSTRUCTION_TOPIC,
                       help=f"std_msgs/String with the instruction (default {INSTRUCTION_TOPIC})")
    group.add_argument("--instruction", help="the instruction of every episode (instead of a topic)")
    p.add_argument("--episode-topic", help="a message on this topic starts an episode (default: one per bag)")
    p.add_argument("--video", default="lossless", help="lossless (default) or av1, as in `dataset export`")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fps <= 0:
        print("bag-to-lerobot: --fps must be > 0", file=sys.stderr)
        return 2
    tolerance = 0.5 / args.fps if args.tolerance is None else args.tolerance
    opts = Options(fps=args.fps, tolerance_s=tolerance, cameras=dict(args.camera) if args.camera else None,
                   state_topic=args.state_topic, action_topic=args.action_topic,
                   instruction_topic=None if args.instruction else args.instruction_topic,
                   instruction=args.instruction, episode_topic=args.episode_topic)
    try:
        report = convert(args.bags, args.out, opts, video=args.video, overwrite=args.overwrite,
                         progress=not args.quiet)
    except (DatasetError, FileExistsError, ValueError) as exc:
        print(f"bag-to-lerobot: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report.episodes} episodes, {report.frames} frames from {report.bags} bags to {args.out} "
          f"at {args.fps} fps; dropped {report.dropped_frames} frames (tolerance {tolerance:.3f} s), "
          f"per topic: {json.dumps(report.dropped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
