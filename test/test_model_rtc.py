"""Real-time chunking in the flow head's sampler: the weights, the pull towards the committed
actions (exact and cheap guidance), and the prefix cache left exact by guided steps."""

from __future__ import annotations

import math

import pytest
import torch
from test_model_vla import random_inputs, small_config

from vla_ros.models.vla import Guide, VLAModel, guidance_scale, rtc_weights

torch.set_num_threads(1)


def test_rtc_weights_hold_the_delay_and_fade_over_the_overlap():
    w = rtc_weights(10, 3, 8)
    assert torch.equal(w[:3], torch.ones(3))
    ramp = w[3:8]
    assert torch.all(ramp > 0) and torch.all(ramp < 1) and torch.all(ramp[1:] < ramp[:-1])
    assert torch.equal(w[8:], torch.zeros(2))
    assert torch.equal(rtc_weights(10, 0, 0), torch.zeros(10))
    assert torch.equal(rtc_weights(10, 12, 12), torch.ones(10))  # clipped to the chunk


def test_guidance_scale_is_capped_and_falls_towards_the_data_end():
    assert guidance_scale(1.0, 5.0) == 5.0  # pure noise: the cap
    assert guidance_scale(0.5, 5.0) == pytest.approx(2.0)
    assert guidance_scale(0.5, 1.5) == 1.5
    assert all(math.isfinite(guidance_scale(t, 5.0)) for t in (0.0, 0.05, 0.99))


def _model_and_prefix(seed=0):
    torch.manual_seed(seed)
    cfg = small_config("flow")
    model = VLAModel(cfg).eval()
    ids, mask, images, state, noise = random_inputs(cfg, ["pick up the red cube"], seed)
    with torch.no_grad():
        prefix = model.encode_instruction(ids, mask)
    return cfg, model, prefix, images, state, noise


@pytest.mark.parametrize("exact", [True, False])
def test_guided_chunk_follows_the_committed_actions(exact):
    cfg, model, prefix, images, state, noise = _model_and_prefix()
    H, A, d = cfg.chunk_size, cfg.action_dim, 4
    target = torch.full((1, H, A), 1.5)
    guide = Guide(target=target, weights=rtc_weights(H, d, 7), exact=exact, max_guidance=5.0)
    with torch.no_grad():
        free = model.predict(prefix, images, state, noise)
        guided = model.predict(prefix, images, state, noise, guide)
    err_free = (free[0, :d] - 1.5).abs().mean().item()
    err_guided = (guided[0, :d] - 1.5).abs().mean().item()
    assert err_guided < 0.5 * err_free, (err_guided, err_free)
    # where the weight is 0 the chunk is the model's own (not pinned to the target)
    assert (guided[0, 8:] - 1.5).abs().mean().item() > err_guided


def test_guided_steps_leave_the_prefix_cache_exact():
    cfg, model, prefix, images, state, noise = _model_and_prefix(1)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in prefix.cache.layers]
    guide = Guide(target=torch.zeros(1, cfg.chunk_size, cfg.action_dim),
                  weights=rtc_weights(cfg.chunk_size, 3, 8), exact=True)
    with torch.no_grad():
        reference = model.predict(prefix, images, state, noise)
        model.predict(prefix, images, state, noise, guide)
        again = model.predict(prefix, images, state, noise)
    assert torch.equal(reference, again)
    assert prefix.cache.get_seq_length() == prefix.length
    for layer, (keys, values) in zip(prefix.cache.layers, before, strict=True):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)
        assert not layer.keys.requires_grad and layer.keys.grad_fn is None


def test_zero_weights_change_nothing():
    cfg, model, prefix, images, state, noise = _model_and_prefix(2)
    guide = Guide(target=torch.ones(1, cfg.chunk_size, cfg.action_dim), weights=torch.zeros(cfg.chunk_size))
    with torch.no_grad():
        assert torch.allclose(model.predict(prefix, images, state, noise),
                              model.predict(prefix, images, state, noise, guide), atol=1e-6)


def test_given_actions_are_kept_and_condition_the_rest():
    """Train-time RTC (rtc_train_delay): the first d actions are the committed ones exactly, the
    rest are sampled with them as context (so they differ from a free sample's), the cache stays
    exact, and more than the trained delay is refused."""
    torch.manual_seed(3)
    cfg = small_config("flow", rtc_train_delay=4)
    model = VLAModel(cfg).eval()
    ids, mask, images, state, noise = random_inputs(cfg, ["pick up the red cube"], 3)
    H, A, d = cfg.chunk_size, cfg.action_dim, 3
    target = torch.full((1, H, A), 1.5)
    with torch.no_grad():
        prefix = model.encode_instruction(ids, mask)
        free = model.predict(prefix, images, state, noise)
        given = model.predict(prefix, images, state, noise, Guide(target, rtc_weights(H, d, d), given=d))
        none_given = model.predict(prefix, images, state, noise, Guide(target, rtc_weights(H, 0, 0), given=0))
        assert torch.equal(given[0, :d], target[0, :d])
        assert not torch.allclose(given[0, d:], free[0, d:], atol=1e-4)
        assert torch.allclose(none_given, free, atol=1e-6)  # d = 0: the plain sampler
        assert torch.equal(model.predict(prefix, images, state, noise), free)  # the cache left exact
        with pytest.raises(ValueError, match="rtc_train_delay=4"):
            model.predict(prefix, images, state, noise, Guide(target, rtc_weights(H, 5, 5), given=5))


def test_per_action_flow_times_equal_one_time_per_chunk():
    """velocity() with t [B, H] all equal is the [B] call (old checkpoints sample as before)."""
    cfg, model, prefix, images, state, noise = _model_and_prefix(4)
    with torch.no_grad():
        mask = model._observe(prefix, images, state)
        t = torch.full((1,), 0.7)
        one = model._cached_velocity(noise, t, prefix.cache, mask)
        per_action = model._cached_velocity(noise, t[:, None].expand(1, cfg.chunk_size), prefix.cache, mask)
        prefix.restore()
    assert torch.equal(one, per_action)

