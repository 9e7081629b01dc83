"""The built-in model as a core Policy: spec, chunk timing, instruction LRU, bad observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_ros.core.policy import Observation, Policy
from vla_ros.models.checkpoint import RobotMeta, new_checkpoint, save_checkpoint
from vla_ros.models.normalization import Normalizer
from vla_ros.models.policy import VLAPolicy, load_policy
from vla_ros.models.vla import make_config

torch.set_num_threads(1)
NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> VLAPolicy:
    torch.manual_seed(0)
    cfg = make_config("tiny", image_size=32, pooled_grid=2, lm_layers=2, chunk_size=8)
    ckpt = new_checkpoint(cfg, Normalizer.identity(6, 6), RobotMeta(NAMES, NAMES, ["scene", "wrist"], 0.05))
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt"), ckpt)
    return load_policy(path, context_cache_size=2)


def obs(size=32, stamp=3.0):
    rng = np.random.default_rng(0)
    return Observation(
        stamp,
        {c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in ("scene", "wrist")},
        np.zeros(6, np.float32),
    )


def test_spec_comes_from_the_checkpoint(policy):
    assert isinstance(policy, Policy)
    s = policy.spec
    assert s.action_names == tuple(NAMES) and s.state_names == tuple(NAMES)
    assert s.chunk_size == 8 and s.action_period == 0.05 and s.cameras == ("scene", "wrist")
    assert s.image_size == (32, 32) and s.gripper_index == 5 and s.action_mode == "absolute"


def test_chunk_is_stamped_with_the_observation(policy):
    ctx = policy.encode_instruction("pick the green ball")
    chunk = policy.predict_chunk(obs(stamp=7.25), ctx)
    assert chunk.t_obs == 7.25 and chunk.dt == 0.05 and chunk.actions.shape == (8, 6)
    assert chunk.actions.dtype == np.float64
    np.testing.assert_allclose(chunk.due_times(), 7.25 + 0.05 * np.arange(8))
    # other image sizes are resized, and the context is left as it was
    before = ctx.cache.cache.get_seq_length()
    policy.predict_chunk(obs(size=48), ctx)
    assert ctx.cache.cache.get_seq_length() == before


def test_repeated_instruction_is_served_from_the_lru(policy):
    a = policy.encode_instruction("put the red cube in the bowl")
    hits = policy.context_hits
    assert policy.encode_instruction("put the red cube in the bowl") is a
    assert policy.context_hits == hits + 1
    policy.encode_instruction("one")
    policy.encode_instruction("two")  # capacity 2: the red-cube context is evicted
    assert policy.encode_instruction("put the red cube in the bowl") is not a


def test_overlong_instruction_is_truncated_and_reported(policy):
    ctx = policy.encode_instruction("é" * 400)
    assert ctx.truncated and ctx.num_tokens == policy.model.config.max_instruction_tokens
    assert ctx.dropped_tokens == 801 - ctx.num_tokens


def test_bad_observations_raise_clear_errors(policy):
    ctx = policy.encode_instruction("pick")
    good = obs()
    with pytest.raises(ValueError, match="'wrist'"):
        policy.predict_chunk(Observation(0.0, {"scene": good.images["scene"]}, good.state), ctx)
    with pytest.raises(ValueError, match="uint8"):
        policy.predict_chunk(
            Observation(0.0, {**good.images, "scene": np.zeros((32, 32), np.uint8)}, good.state), ctx
        )
    with pytest.raises(ValueError, match="state must be 6"):
        policy.predict_chunk(Observation(0.0, good.images, np.zeros(5)), ctx)
    with pytest.raises(ValueError, match="finite"):
        policy.predict_chunk(Observation(0.0, good.images, np.full(6, np.nan)), ctx)


def test_prefix_rtc_keeps_the_committed_actions_and_needs_a_model_trained_for_it(tmp_path):
    """real_time_chunking 'prefix': a flow model trained with rtc_train_delay gets the actions due
    before its chunk lands and keeps them (in the robot's units, through the normalisation); one
    trained without is refused by name."""
    from vla_ros.core.policy import CommittedActions
    from vla_ros.models.checkpoint import load_checkpoint

    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    norm = Normalizer.fit(rng.normal(size=(50, 6)), rng.normal(size=(50, 6)))
    meta = RobotMeta(NAMES, NAMES, ["scene", "wrist"], 0.05)
    trained = tmp_path / "trained"
    cfg = make_config("tiny", image_size=32, pooled_grid=2, lm_layers=2, chunk_size=8, head="flow",
                      flow_steps=3, rtc_train_delay=3)
    save_checkpoint(trained, new_checkpoint(cfg, norm, meta))
    policy = load_policy(trained, rtc="prefix")
    committed = np.random.default_rng(3).normal(size=(6, 6))
    o = obs()
    ctx = policy.encode_instruction("pick up the red cube")
    free = policy.predict_chunk(o, ctx).actions
    o.committed = CommittedActions(actions=committed, delay_steps=5)  # more than trained: 3 given
    chunk = policy.predict_chunk(o, ctx).actions
    np.testing.assert_allclose(chunk[:3], committed[:3], atol=1e-5)
    assert not np.allclose(chunk[:3], free[:3], atol=1e-2)
    plain = tmp_path / "plain"
    save_checkpoint(plain, new_checkpoint(make_config("tiny", image_size=32, pooled_grid=2, lm_layers=2,
                                                      chunk_size=8, head="flow"), norm, meta))
    with pytest.raises(ValueError, match="rtc 'prefix'.*trained without"):
        VLAPolicy(load_checkpoint(plain), rtc="prefix")


def test_the_policy_says_what_it_does_with_committed_actions(policy):
    """Policy.real_time_chunking(): the regression head ignores them whatever ``rtc`` says; the flow
    head guides with its mode and cap (a policy_server publishes this for its clients)."""
    from pathlib import Path

    assert policy.model.config.head == "regression" and policy.rtc == "exact"
    assert policy.real_time_chunking() == ("off", 0.0)
    flow_dir = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny_flow"
    assert load_policy(flow_dir, rtc="cheap", rtc_max_guidance=2.0).real_time_chunking() == ("cheap", 2.0)
    assert load_policy(flow_dir, rtc="off").real_time_chunking() == ("off", 0.0)
