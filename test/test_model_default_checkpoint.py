"""The default checkpoint kept in the repository loads and matches the simulation's robot."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from vla_ros.core.policy import Observation
from vla_ros.models import default_checkpoint, load_policy
from vla_ros.models import policy as policy_module

torch.set_num_threads(1)


def test_default_checkpoint_is_small_and_matches_the_sim():
    try:
        path = default_checkpoint()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert sum(f.stat().st_size for f in path.iterdir()) <= 10 * 1024 * 1024
    from vla_ros.sim import TabletopEnv

    env = TabletopEnv(image_size=(64, 64), seed=0)
    policy = load_policy(path)
    assert list(policy.spec.action_names) == env.action_names
    assert list(policy.spec.state_names) == env.state_names
    assert list(policy.spec.cameras) == env.cameras
    assert policy.spec.action_period == pytest.approx(env.action_period)
    obs, info = env.reset(seed=123)
    chunk = policy.predict_chunk(Observation(0.0, obs["images"], obs["state"]),
                                 policy.encode_instruction(info["instruction"]))
    assert chunk.actions.shape == (policy.spec.chunk_size, 6) and np.all(np.isfinite(chunk.actions))
    training = policy.ckpt.training
    assert training["command"].startswith("vla_ros train") and training["finished"]


def test_default_checkpoint_is_found_in_an_installed_share_directory(tmp_path, monkeypatch):
    """A copying colcon install has no source tree: the checkpoint comes from share/vla_ros."""
    shipped = default_checkpoint()
    monkeypatch.delenv("VLA_ROS_CHECKPOINT", raising=False)
    monkeypatch.setattr(policy_module, "REPO_ROOT", tmp_path / "site-packages")  # no package.xml there
    share = tmp_path / "install" / "share" / "vla_ros" / "checkpoints" / policy_module.DEFAULT_CHECKPOINT_NAME
    shutil.copytree(shipped, share)
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'other'}:{tmp_path / 'install'}")
    assert default_checkpoint() == share
    assert load_policy().spec.chunk_size == load_policy(shipped).spec.chunk_size


def test_missing_default_checkpoint_says_where_it_looked_and_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv("VLA_ROS_CHECKPOINT", raising=False)
    monkeypatch.setattr(policy_module, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "install"))
    with pytest.raises(FileNotFoundError) as info:
        default_checkpoint()
    message = str(info.value)
    share = tmp_path / "install" / "share" / "vla_ros" / "checkpoints" / policy_module.DEFAULT_CHECKPOINT_NAME
    assert str(share) in message
    assert "VLA_ROS_CHECKPOINT" in message and "make checkpoint" in message
