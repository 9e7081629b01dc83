"""sim-collect datasets and rosbag2 recordings read back with the same content."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.data.dataset import load_dataset
from vla_ros.sim import TabletopEnv
from vla_ros.sim.bag import (
    ACTION_TOPIC,
    DEFAULT_START_NS,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    image_topic,
    read_episode_bag,
    write_episode_bag,
)
from vla_ros.sim.collect import main as collect_main
from vla_ros.sim.collect import record_expert_episode
from vla_ros.sim.render import main as render_main


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "dataset"
    assert collect_main(["--episodes", "3", "--out", str(out), "--bag", "--image-size", "32x40",
                         "--seed", "20"]) == 0
    return out


def test_dataset_loads_back_with_frames_and_episodes(collected):
    meta, episodes = load_dataset(collected)
    assert meta["episodes"] == len(episodes) == 3
    assert meta["frames"] == sum(len(e) for e in episodes)
    assert meta["image_size"] == [32, 40] and meta["fps"] == pytest.approx(10.0)
    assert [e.task["family"] for e in episodes] == ["pick", "place", "pick"]  # families alternate
    for ep in episodes:
        assert ep.success and ep.task["instruction"] == ep.instruction
        assert ep.images["scene"].shape == (len(ep), 32, 40, 3)
        assert ep.state.shape == ep.action.shape == (len(ep), 6)
        np.testing.assert_allclose(np.diff(ep.timestamp), 0.1, atol=1e-9)


def test_images_on_disk_read_the_same_frames_when_asked_and_name_a_vanished_file(collected, tmp_path):
    import shutil

    from vla_ros.data.dataset import DatasetError, ImagesOnDisk

    _, eager = load_dataset(collected)
    copy = shutil.copytree(collected, tmp_path / "copy", ignore=shutil.ignore_patterns("bags"))
    _, lazy = load_dataset(copy, images_on_disk=True)
    for a, b in zip(eager, lazy, strict=True):
        assert isinstance(b.images, ImagesOnDisk) and sorted(b.images) == sorted(a.images)
        for camera in a.images:
            np.testing.assert_array_equal(a.images[camera], b.images[camera])
        np.testing.assert_array_equal(a.state, b.state)
    (copy / "episode_000001.npz").unlink()
    with pytest.raises(DatasetError, match="episode_000001.npz: cannot read image_scene"):
        lazy[1].images["scene"]


def test_dataset_matches_a_fresh_expert_rollout(collected):
    _, episodes = load_dataset(collected)
    env = TabletopEnv(image_size=(32, 40))
    try:
        again = record_expert_episode(env, seed=episodes[1].task["seed"], task="place")
    finally:
        env.close()
    np.testing.assert_array_equal(again.action, episodes[1].action)
    np.testing.assert_array_equal(again.images["wrist"], episodes[1].images["wrist"])


def test_bag_reads_back_identical_content_and_stamps(collected):
    _, episodes = load_dataset(collected)
    for i, ep in enumerate(episodes):
        back, stamps = read_episode_bag(collected / "bags" / f"episode_{i:06d}")
        assert back.instruction == ep.instruction and back.task == ep.task
        for cam in ("scene", "wrist"):
            np.testing.assert_array_equal(back.images[cam], ep.images[cam])
        np.testing.assert_array_equal(back.state, ep.state)
        np.testing.assert_array_equal(back.action, ep.action)
        expected = [DEFAULT_START_NS + round(t * 1e9) for t in ep.timestamp]
        for topic in (image_topic("scene"), image_topic("wrist"), JOINT_STATES_TOPIC, ACTION_TOPIC):
            assert stamps[topic] == expected, topic
        assert stamps[INSTRUCTION_TOPIC] == expected[:1]


def test_bag_is_mcap_with_documented_topics(collected):
    bag = collected / "bags" / "episode_000000"
    assert list(bag.glob("*.mcap"))
    metadata = (bag / "metadata.yaml").read_text()
    for topic, msgtype in [("/scene/image_raw", "sensor_msgs/msg/Image"),
                           ("/joint_states", "sensor_msgs/msg/JointState"),
                           ("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory"),
                           ("/instruction", "std_msgs/msg/String")]:
        assert topic in metadata and msgtype in metadata


def test_existing_dataset_is_not_overwritten(collected, capsys):
    before = (collected / "meta.json").read_text()
    assert collect_main(["--episodes", "1", "--out", str(collected)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (collected / "meta.json").read_text() == before


def test_overwrite_replaces_dataset_and_its_bags(tmp_path):
    out = tmp_path / "ds"
    assert collect_main(["--episodes", "2", "--out", str(out), "--bag", "--image-size", "16"]) == 0
    assert collect_main(["--episodes", "1", "--out", str(out), "--overwrite", "--task", "place",
                         "--image-size", "16"]) == 0
    meta, episodes = load_dataset(out)
    assert meta["episodes"] == 1 and episodes[0].task["family"] == "place"
    assert not (out / "bags").exists()


def test_bag_writer_refuses_an_existing_path(tmp_path, collected):
    _, episodes = load_dataset(collected)
    write_episode_bag(tmp_path / "b", episodes[0], ["a"] * 6, ["a"] * 6)
    with pytest.raises(FileExistsError):
        write_episode_bag(tmp_path / "b", episodes[0], ["a"] * 6, ["a"] * 6)


def test_collect_rejects_bad_choices(tmp_path, capsys):
    with pytest.raises(SystemExit):
        collect_main(["--episodes", "1", "--out", str(tmp_path / "x"), "--task", "stack"])
    assert "invalid choice" in capsys.readouterr().err
    assert collect_main(["--episodes", "1", "--out", str(tmp_path / "y"), "--num-objects", "10"]) == 2
    assert "impossible" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_render_writes_video_and_views(tmp_path):
    import imageio.v2 as imageio

    assert render_main(["--out", str(tmp_path), "--task", "pick", "--seed", "2", "--scale", "2",
                        "--format", "gif"]) == 0
    views = imageio.imread(tmp_path / "views.png")
    assert views.shape == (28 + 128, 256, 3)
    assert len(imageio.mimread(tmp_path / "episode.gif")) > 30
