"""Episodes as rosbag2 recordings (mcap), written and read with `rosbags` (no rclpy needed).

One bag per episode. Every frame ``k`` of an episode is written at the same stamp
``start + timestamp[k]`` (header stamp and bag log time agree, in nanoseconds):

    /<camera>/image_raw              sensor_msgs/msg/Image       rgb8, frame_id "<camera>_camera"
    /joint_states                    sensor_msgs/msg/JointState  state; gripper 0 open .. 1 closed
    /arm_controller/joint_trajectory trajectory_msgs/msg/JointTrajectory
                                     the action issued at the frame: one point, all 6 joints,
                                     time_from_start = the action period
    /instruction                     std_msgs/msg/String         once, at the first frame's stamp

The default start (2026-01-01T00:00:00Z) keeps bags byte-for-byte reproducible for a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vla_ros.data.dataset import Episode

DEFAULT_START_NS = 1_767_225_600 * 10**9
JOINT_STATES_TOPIC = "/joint_states"
ACTION_TOPIC = "/arm_controller/joint_trajectory"
INSTRUCTION_TOPIC = "/instruction"
IMAGE_MSG = "sensor_msgs/msg/Image"
JOINT_STATE_MSG = "sensor_msgs/msg/JointState"
TRAJECTORY_MSG = "trajectory_msgs/msg/JointTrajectory"
STRING_MSG = "std_msgs/msg/String"

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


def image_topic(camera: str) -> str:
    return f"/{camera}/image_raw"


def _types():
    t = TYPESTORE.types
    return (t["builtin_interfaces/msg/Time"], t["builtin_interfaces/msg/Duration"],
            t["std_msgs/msg/Header"])


def _stamp(ns: int):
    time_cls, _, _ = _types()
    return time_cls(sec=ns // 10**9, nanosec=ns % 10**9)


def write_episode_bag(path: str | Path, episode: Episode, state_names: list[str],
                      action_names: list[str], action_period: float | None = None,
                      start_ns: int = DEFAULT_START_NS) -> Path:
    """Write ``episode`` as a rosbag2 directory at ``path`` (must not exist)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"bag {path} exists; remove it first")
    t = TYPESTORE.types
    _, duration_cls, header_cls = _types()
    if action_period is None:
        action_period = float(np.median(np.diff(episode.timestamp))) if len(episode) > 1 else 0.1
    period_ns = int(round(action_period * 1e9))
    cameras = sorted(episode.images)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c: writer.add_connection(image_topic(c), IMAGE_MSG, typestore=TYPESTORE) for c in cameras}
        joints = writer.add_connection(JOINT_STATES_TOPIC, JOINT_STATE_MSG, typestore=TYPESTORE)
        actions = writer.add_connection(ACTION_TOPIC, TRAJECTORY_MSG, typestore=TYPESTORE)
        instruction = writer.add_connection(INSTRUCTION_TOPIC, STRING_MSG, typestore=TYPESTORE)
        for k in range(len(episode)):
            ns = start_ns + int(round(float(episode.timestamp[k]) * 1e9))
            if k == 0:
                msg = t[STRING_MSG](data=episode.instruction)
                writer.write(instruction, ns, TYPESTORE.serialize_cdr(msg, STRING_MSG))
            for c in cameras:
                img = np.ascontiguousarray(episode.images[c][k])
                h, w = img.shape[:2]
                msg = t[IMAGE_MSG](header=header_cls(stamp=_stamp(ns), frame_id=f"{c}_camera"),
                                   height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
                                   data=img.reshape(-1))
                writer.write(conns[c], ns, TYPESTORE.serialize_cdr(msg, IMAGE_MSG))
            msg = t[JOINT_STATE_MSG](header=header_cls(stamp=_stamp(ns), frame_id=""),
                                     name=list(state_names),
                                     position=episode.state[k].astype(np.float64),
                                     velocity=np.zeros(0), effort=np.zeros(0))
            writer.write(joints, ns, TYPESTORE.serialize_cdr(msg, JOINT_STATE_MSG))
            point = t["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=episode.action[k].astype(np.float64), velocities=np.zeros(0),
                accelerations=np.zeros(0), effort=np.zeros(0),
                time_from_start=duration_cls(sec=period_ns // 10**9, nanosec=period_ns % 10**9))
            msg = t[TRAJECTORY_MSG](header=header_cls(stamp=_stamp(ns), frame_id=""),
                                    joint_names=list(action_names), points=[point])
            writer.write(actions, ns, TYPESTORE.serialize_cdr(msg, TRAJECTORY_MSG))
    (path / "episode.json").write_text(json.dumps({"instruction": episode.instruction,
                                                   "task": episode.task, "success": episode.success,
                                                   "start_ns": start_ns}, indent=2))
    return path


def read_episode_bag(path: str | Path) -> tuple[Episode, dict[str, list[int]]]:
    """Read a bag written by :func:`write_episode_bag` back into an Episode, plus each
    topic's header stamps (ns; log times for the instruction) for checking alignment."""
    path = Path(path)
    images: dict[str, list[np.ndarray]] = {}
    states, actions, stamps_state = [], [], []
    stamps: dict[str, list[int]] = {}
    instruction = ""
    with AnyReader([path], default_typestore=TYPESTORE) as reader:
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            topic = conn.topic
            if conn.msgtype == STRING_MSG:
                instruction = msg.data
                stamps.setdefault(topic, []).append(log_ns)
                continue
            ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            if ns != log_ns:
                raise ValueError(f"{path}: {topic} header stamp {ns} differs from bag time {log_ns}")
            stamps.setdefault(topic, []).append(ns)
            if conn.msgtype == IMAGE_MSG:
                camera = topic.strip("/").split("/")[0]
                images.setdefault(camera, []).append(
                    np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, 3))
            elif conn.msgtype == JOINT_STATE_MSG:
                states.append(np.asarray(msg.position, dtype=np.float32))
                stamps_state.append(ns)
            elif conn.msgtype == TRAJECTORY_MSG:
                actions.append(np.asarray(msg.points[0].positions, dtype=np.float32))
    meta_path = path / "episode.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    start = meta.get("start_ns", stamps_state[0] if stamps_state else 0)
    episode = Episode(images={c: np.stack(v) for c, v in images.items()}, state=np.stack(states),
                      action=np.stack(actions),
                      timestamp=(np.array(stamps_state, dtype=np.int64) - start) / 1e9,
                      instruction=instruction, task=meta.get("task", {}),
                      success=bool(meta.get("success", True)))
    return episode, stamps
