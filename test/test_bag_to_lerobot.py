"""`vla_ros bag-to-lerobot`: the project's own recorded bags convert to the same episodes the npz
dataset holds, and a bag with dropped and late camera frames loses exactly those frames, counted
per topic (the fixed-rate alignment of vla_ros/data/align.py)."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from vla_ros.data.align import align
from vla_ros.data.dataset import DatasetError, load_dataset
from vla_ros.data.lerobot import load_lerobot_dataset
from vla_ros.sim.bag import TYPESTORE
from vla_ros.sim.collect import main as collect_main
from vla_ros.tools.bag_to_lerobot import Options, convert
from vla_ros.tools.bag_to_lerobot import main as bag_main

MS = 1_000_000
T0 = 1_767_225_600 * 10**9
JOINTS = ["j1", "j2"]
CAMERA, STATE, COMMAND, INSTRUCTION = "/cam/image_raw", "/joint_states", "/cmd", "/instruction"
MISSING, LATE = (5, 12), (8, 15)  # camera frames never recorded / stamped 70 ms after their time


def test_align_takes_the_nearest_earlier_sample_within_the_tolerance():
    stamps = {"a": np.array([0, 100, 200, 300]) * MS,
              "b": np.array([0, 40, 95, 140, 260, 290, 330]) * MS}  # b has a gap around 200 ms
    result = align(stamps, fps=10, tolerance_s=0.05)
    assert result.grid_ns.tolist() == [0, 100 * MS, 200 * MS, 300 * MS]  # a's last + 50 ms ends it
    assert result.kept.tolist() == [True, True, False, True]
    assert result.indices["b"].tolist() == [0, 2, 5]  # 0 ms, 95 ms, 290 ms: never a later one
    assert result.dropped == {"a": 0, "b": 1} and result.dropped_frames == 1
    # out of order input: indices still refer to the caller's order
    shuffled = align({"a": np.array([300, 0, 200, 100]) * MS}, fps=10, tolerance_s=0.0)
    assert shuffled.indices["a"].tolist() == [1, 3, 2, 0]
    with pytest.raises(ValueError, match=r"streams with no samples: \['c'\]"):
        align({"a": np.array([0]), "c": np.array([])}, fps=10, tolerance_s=0.05)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "demos"
    assert collect_main(["--episodes", "2", "--out", str(out), "--bag", "--image-size", "32x40",
                         "--seed", "30"]) == 0
    return out


def test_sim_collect_bags_convert_to_the_episodes_of_the_dataset(collected, tmp_path, capsys):
    bags = sorted((collected / "bags").iterdir())
    assert bag_main([*map(str, bags), "--out", str(tmp_path / "lr"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 episodes" in out and "from 2 bags" in out and "dropped 0 frames" in out
    meta, episodes = load_dataset(collected)
    lr_meta, converted = load_lerobot_dataset(tmp_path / "lr")
    assert lr_meta["state_names"] == meta["state_names"] and lr_meta["cameras"] == ["scene", "wrist"]
    for ours, back in zip(episodes, converted, strict=True):
        for camera in ours.images:
            assert np.array_equal(ours.images[camera], back.images[camera])
        assert np.array_equal(ours.state, back.state) and np.array_equal(ours.action, back.action)
        np.testing.assert_allclose(back.timestamp, ours.timestamp, rtol=0, atol=1e-9)
        assert (back.instruction, back.task, back.success) == (ours.instruction, ours.task, ours.success)


def write_bad_bag(path, second_instruction_at: int | None = None, instruction: bool = True):
    """20 frames at 10 Hz: camera frames MISSING never recorded, LATE stamped 70 ms late; joint
    states at 50 Hz, 3 ms after each 20 ms tick; commands issued 2 ms before each frame, their
    header stamp 0 ("now": the log time counts). Pixel value, state and command encode the index."""
    t = TYPESTORE.types
    header = t["std_msgs/msg/Header"]
    stamp = t["builtin_interfaces/msg/Time"]
    duration = t["builtin_interfaces/msg/Duration"]

    def hdr(ns):
        return header(stamp=stamp(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")

    messages = []
    for k in range(20):
        if k in MISSING:
            continue
        ns = T0 + k * 100 * MS + (70 * MS if k in LATE else 0)
        image = np.full((6, 8, 3), k * 10, np.uint8)
        messages.append((CAMERA, "sensor_msgs/msg/Image", ns, t["sensor_msgs/msg/Image"](
            header=hdr(ns), height=6, width=8, encoding="rgb8", is_bigendian=0, step=24,
            data=image.reshape(-1))))
    for j in range(100):
        ns = T0 + j * 20 * MS + 3 * MS
        names, values = (JOINTS[::-1], [-j, j]) if j % 2 == 0 else (JOINTS, [j, -j])  # order varies
        messages.append((STATE, "sensor_msgs/msg/JointState", ns, t["sensor_msgs/msg/JointState"](
            header=hdr(ns), name=names, position=np.array(values, float), velocity=np.zeros(0),
            effort=np.zeros(0))))
    for k in range(20):
        point = t["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.array([k, -k], float), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=duration(sec=0, nanosec=100 * MS))
        messages.append((COMMAND, "trajectory_msgs/msg/JointTrajectory", T0 + k * 100 * MS - 2 * MS,
                         t["trajectory_msgs/msg/JointTrajectory"](header=hdr(0), joint_names=JOINTS,
                                                                  points=[point])))
    if instruction:
        messages.append((INSTRUCTION, "std_msgs/msg/String", T0 - 500 * MS,
                         t["std_msgs/msg/String"](data="pick up the red cube")))
    if second_instruction_at is not None:
        messages.append((INSTRUCTION, "std_msgs/msg/String", T0 + second_instruction_at * MS,
                         t["std_msgs/msg/String"](data="put it in the bowl")))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msgtype, ns, msg in sorted(messages, key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(connections[topic], ns, TYPESTORE.serialize_cdr(msg, msgtype))
    return path


def options(**overrides) -> Options:
    base = dict(fps=10, tolerance_s=0.05, cameras={"cam": CAMERA}, state_topic=STATE, action_topic=COMMAND,
                instruction_topic=INSTRUCTION, instruction=None, episode_topic=None)
    return Options(**{**base, **overrides})


def test_dropped_and_late_frames_are_dropped_and_counted(tmp_path):
    bag = write_bad_bag(tmp_path / "bad")
    report = convert([bag], tmp_path / "lr", options(), progress=False)
    assert report.dropped == {CAMERA: 4, STATE: 0, COMMAND: 0}
    assert (report.frames, report.dropped_frames, report.episodes) == (16, 4, 1)
    meta, (episode,) = load_lerobot_dataset(tmp_path / "lr")
    kept = [k for k in range(20) if k not in MISSING + LATE]
    # the grid starts at the first joint state (3 ms): each frame's camera image is the one taken at
    # its own 100 ms tick, its state the 50 Hz sample of that tick, its command the one 2 ms before
    assert episode.images["cam"][:, 0, 0, 0].tolist() == [k * 10 for k in kept]
    assert meta["state_names"] == ["j2", "j1"] and meta["action_names"] == JOINTS  # the first message's order
    assert episode.state.tolist() == [[-5 * k, 5 * k] for k in kept]  # odd samples reordered by name
    assert episode.action.tolist() == [[k, -k] for k in kept]
    assert episode.instruction == "pick up the red cube"
    assert np.array_equal(episode.timestamp, np.arange(16) / 10)  # renumbered: LeRobot frames are k / fps
    assert episode.task["source_bag"] == str(bag) and episode.task["start_ns"] == T0 + 3 * MS


def test_a_wider_tolerance_keeps_a_stale_frame_instead(tmp_path):
    bag = write_bad_bag(tmp_path / "bad")
    report = convert([bag], tmp_path / "lr", options(tolerance_s=0.11), progress=False)
    # each gap filled by the frame before (103 ms old); and at 2003 ms every stream's last sample is
    # still within 0.11 s, so the grid runs one frame further
    assert report.dropped[CAMERA] == 0 and report.frames == 21
    _, (episode,) = load_lerobot_dataset(tmp_path / "lr")
    assert episode.images["cam"][5, 0, 0, 0] == 40 and episode.images["cam"][8, 0, 0, 0] == 70


def test_episodes_split_at_each_message_of_the_episode_topic(tmp_path, capsys):
    bag = write_bad_bag(tmp_path / "bad", second_instruction_at=1000)
    assert bag_main([str(bag), "--out", str(tmp_path / "lr"), "--camera", f"cam={CAMERA}", "--state-topic",
                     STATE, "--action-topic", COMMAND, "--episode-topic", INSTRUCTION, "--quiet"]) == 0
    assert "wrote 2 episodes, 16 frames from 1 bags" in capsys.readouterr().out
    _, (first, second) = load_lerobot_dataset(tmp_path / "lr")
    assert first.instruction == "pick up the red cube" and second.instruction == "put it in the bowl"
    assert first.images["cam"][:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40, 60, 70, 90]
    assert second.images["cam"][:, 0, 0, 0].tolist() == [100, 110, 130, 140, 160, 170, 180, 190]


def test_missing_topics_and_instructions_are_named(tmp_path, capsys):
    bag = write_bad_bag(tmp_path / "bad", instruction=False)
    with pytest.raises(DatasetError, match=r"bad: no instruction for the episode .* pass --instruction"):
        convert([bag], tmp_path / "a", options(), progress=False)
    assert not (tmp_path / "a" / "meta").exists()
    flag = options(instruction_topic=None, instruction="wave")
    report = convert([bag], tmp_path / "b", flag, progress=False)
    assert report.frames == 16 and load_lerobot_dataset(tmp_path / "b")[1][0].instruction == "wave"
    with pytest.raises(DatasetError, match=r"bad: no messages on \['/nope'\]"):
        convert([bag], tmp_path / "c", options(state_topic="/nope"), progress=False)
    with pytest.raises(DatasetError, match=r"state topic /cmd is trajectory_msgs/msg/JointTrajectory"):
        convert([bag], tmp_path / "d", options(state_topic=COMMAND), progress=False)
    assert bag_main([str(bag), "--out", str(tmp_path / "e"), "--quiet"]) == 2
    assert "bag-to-lerobot:" in capsys.readouterr().err
