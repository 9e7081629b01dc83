"""The default checkpoint kept in the repository loads and matches the simulation's robot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_ros.core.policy import Observation
from vla_ros.models import default_checkpoint, load_policy

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
