"""Action buffer: time-axis ordering, latency compensation, blend rules, interpolation, starvation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.blending import blend
from vla_ros.core.buffer import ActionBuffer
from vla_ros.core.policy import ActionChunk
from vla_ros.core.runtime_types import RuntimeConfig
from vla_ros.core.safety import SafetyFilter, SafetyLimits

A = 3
DT = 0.1
H = 8
RULES = ("replace", "average", "crossfade", "ensemble")


def chunk(t_obs: float, values, h: int = H, dt: float = DT) -> ActionChunk:
    values = np.asarray(values, dtype=np.float64)
    actions = np.broadcast_to(values, (h, A)).copy() if values.ndim <= 1 else values
    return ActionChunk(t_obs=t_obs, actions=actions, dt=dt)


def ramp_chunk(t_obs: float, h: int = H, dt: float = DT) -> ActionChunk:
    """actions[k] = [k, 10 k, 100 k]: each action says which index it is."""
    k = np.arange(h, dtype=np.float64)[:, None]
    return ActionChunk(t_obs=t_obs, actions=k * np.array([1.0, 10.0, 100.0]), dt=dt)


# ---------------------------------------------------------------------------- latency compensation
@settings(max_examples=200, deadline=None)
@given(t_obs=st.floats(0, 1e4), latency=st.floats(0, (H - 1) * DT - 1e-6))
def test_latency_compensation_starts_at_the_action_due_now(t_obs, latency):
    buf = ActionBuffer(A, interpolation="hold", blend_rule="replace")
    now = t_obs + latency
    result = buf.insert(ramp_chunk(t_obs), now)
    expected_first = int(np.floor((now - t_obs) / DT + 1e-9))
    assert result.accepted
    # floating point may put `now` on either side of a due time; allow that one step only
    assert result.dropped_past in (expected_first, expected_first - 1, expected_first + 1)
    first = result.dropped_past
    assert buf.action_at(now)[0] == pytest.approx(first)
    times, values = buf.snapshot()
    assert times[0] <= now < times[0] + DT + 1e-9
    assert len(times) == H - first
    np.testing.assert_allclose(values[:, 0], np.arange(first, H))


def test_a_chunk_entirely_in_the_past_is_refused_and_counted():
    buf = ActionBuffer(A)
    result = buf.insert(ramp_chunk(0.0), now=H * DT + 0.01)
    assert not result.accepted and result.dropped_past == H
    assert "past" in result.reason
    assert len(buf) == 0 and buf.actions_dropped_past == H


def test_malformed_chunks_raise_with_the_shape():
    buf = ActionBuffer(A)
    with pytest.raises(ValueError, match=r"shape \(8, 2\)"):
        buf.insert(ActionChunk(0.0, np.zeros((8, 2)), DT), 0.0)
    with pytest.raises(ValueError, match="dt"):
        buf.insert(ActionChunk(0.0, np.zeros((8, A)), 0.0), 0.0)


def test_tags_keep_chunks_of_an_ended_goal_out():
    buf = ActionBuffer(A)
    buf.reset(tag=2)
    assert not buf.insert(ramp_chunk(0.0), 0.0, tag=1).accepted
    assert buf.insert(ramp_chunk(0.0), 0.0, tag=2).accepted
    assert buf.action_at(0.05, tag=1) is None and buf.action_at(0.05, tag=2) is not None
    assert not buf.reset(-1, only_if=1) and buf.tag == 2
    assert buf.reset(-1, only_if=2) and len(buf) == 0


# ---------------------------------------------------------------------------- ordering
@settings(max_examples=150, deadline=None)
@given(
    rule=st.sampled_from(RULES),
    interpolation=st.sampled_from(["linear", "hold"]),
    steps=st.lists(
        st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.6), st.floats(-2, 2)), min_size=1, max_size=12
    ),
)
def test_due_times_stay_strictly_increasing_and_cover_now(rule, interpolation, steps):
    """Arbitrary arrival pattern: t_obs advances, each chunk lands some latency later."""
    buf = ActionBuffer(A, interpolation=interpolation, blend_rule=rule)
    t_obs = 0.0
    for advance, latency, value in steps:
        t_obs += advance
        now = t_obs + latency
        result = buf.insert(chunk(t_obs, value), now)
        times, values = buf.snapshot()
        assert np.all(np.diff(times) > 0)
        assert np.all(np.isfinite(values))
        if result.accepted:
            assert buf.action_at(now) is not None  # the action due now is there
            assert buf.remaining(now) > 0


# ---------------------------------------------------------------------------- blend rules
@settings(max_examples=150, deadline=None)
@given(
    rule=st.sampled_from(RULES),
    old=st.floats(-3, 3),
    new=st.floats(-3, 3),
    offset_steps=st.integers(1, H - 1),
    crossfade=st.integers(0, 6),
    weight=st.floats(0, 1),
    decay=st.floats(-1, 1),
)
def test_blended_actions_lie_between_old_and_new(rule, old, new, offset_steps, crossfade, weight, decay):
    buf = ActionBuffer(
        A, "hold", rule, average_new_weight=weight, crossfade_steps=crossfade, ensemble_decay=decay
    )
    buf.insert(chunk(0.0, old), 0.0)
    t1 = offset_steps * DT
    buf.insert(chunk(t1, new), t1)
    times, values = buf.snapshot()
    lo, hi = min(old, new), max(old, new)
    assert np.all(values >= lo - 1e-9) and np.all(values <= hi + 1e-9)
    beyond_old = times >= H * DT - 1e-9  # only the new chunk is due there
    np.testing.assert_allclose(values[beyond_old], new)


def test_replace_takes_the_new_chunk_on_the_overlap():
    buf = ActionBuffer(A, "hold", "replace")
    buf.insert(chunk(0.0, 1.0), 0.0)
    buf.insert(chunk(0.3, 2.0), 0.3)
    times, values = buf.snapshot()
    assert times[0] == pytest.approx(0.3)
    np.testing.assert_allclose(values, 2.0)


def test_average_uses_the_configured_weight():
    buf = ActionBuffer(A, "hold", "average", average_new_weight=0.7)
    buf.insert(chunk(0.0, 1.0), 0.0)
    buf.insert(chunk(0.3, 2.0), 0.3)
    times, values = buf.snapshot()
    overlap = times < H * DT - 1e-9
    np.testing.assert_allclose(values[overlap], 0.3 * 1.0 + 0.7 * 2.0)
    np.testing.assert_allclose(values[~overlap], 2.0)


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_crossfade_ramps_linearly_over_n_steps(steps):
    buf = ActionBuffer(A, "hold", "crossfade", crossfade_steps=steps)
    buf.insert(chunk(0.0, 0.0), 0.0)
    buf.insert(chunk(0.2, 1.0), 0.2)
    _, values = buf.snapshot()
    expected = [(i + 1) / (steps + 1) for i in range(steps)] + [1.0] * (H - steps)
    np.testing.assert_allclose(values[:, 0], expected)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-5, 5), min_size=1, max_size=6))
def test_ensemble_with_zero_decay_is_the_mean_of_all_predictions(values):
    buf = ActionBuffer(A, "hold", "ensemble", ensemble_decay=0.0)
    for v in values:  # every chunk predicts the same times
        buf.insert(chunk(0.0, v), 0.0)
    np.testing.assert_allclose(buf.action_at(0.0), np.mean(values), atol=1e-9)


def test_ensemble_weights_follow_exp_decay_oldest_first():
    decay = 0.5
    buf = ActionBuffer(A, "hold", "ensemble", ensemble_decay=decay)
    for v in (1.0, 2.0, 4.0):
        buf.insert(chunk(0.0, v), 0.0)
    w = np.exp(-decay * np.arange(3))
    np.testing.assert_allclose(buf.action_at(0.0), np.dot(w, [1.0, 2.0, 4.0]) / w.sum())


def test_blend_keeps_non_finite_actions_non_finite():
    nan = np.full((2, A), np.nan)
    merged, _ = blend(np.zeros((2, A)), np.ones(2), np.array([True, True]), nan, "average")
    assert np.all(np.isnan(merged))


# ---------------------------------------------------------------------------- sampling
def test_linear_interpolation_and_zero_order_hold():
    lin = ActionBuffer(A, "linear", "replace")
    hold = ActionBuffer(A, "hold", "replace")
    for buf in (lin, hold):
        buf.insert(ramp_chunk(0.0), 0.0)
    assert lin.action_at(0.25)[0] == pytest.approx(2.5)
    assert hold.action_at(0.25)[0] == pytest.approx(2.0)
    assert lin.action_at((H - 1) * DT + 0.05)[0] == pytest.approx(H - 1)  # last action is held


def test_starved_when_empty_or_past_the_last_action():
    buf = ActionBuffer(A)
    assert buf.action_at(0.0) is None and buf.remaining(0.0) == 0.0
    buf.insert(ramp_chunk(0.0), 0.0)
    end = H * DT
    assert buf.remaining(0.3) == pytest.approx(end - 0.3)
    assert buf.action_at(end - 1e-6) is not None
    assert buf.action_at(end + 1e-6) is None
    assert buf.remaining(end + 1.0) == 0.0
    assert buf.future_count(0.35) == H - 4


# ---------------------------------------------------------------------------- boundary steps
@settings(max_examples=120, deadline=None)
@given(
    rule=st.sampled_from(RULES),
    interpolation=st.sampled_from(["linear", "hold"]),
    jump=st.floats(-3, 3),
    slope=st.floats(-2, 2),
    arrivals=st.lists(st.floats(0.05, 0.6), min_size=1, max_size=5),
    max_velocity=st.floats(0.2, 5.0),
    rate=st.sampled_from([50.0, 100.0, 200.0]),
)
def test_no_step_at_a_chunk_boundary_exceeds_the_velocity_limit(
    rule, interpolation, jump, slope, arrivals, max_velocity, rate
):
    """Chunks that disagree (a jump between them), blended, then filtered: every tick's step is
    within max_velocity / rate, at every boundary."""
    config = RuntimeConfig(control_rate_hz=rate, max_velocity=max_velocity)
    safety = SafetyFilter(SafetyLimits.from_config(config, A, None))
    buf = ActionBuffer(A, interpolation, rule)
    k = np.arange(H)[:, None] * np.ones(A)
    previous = np.zeros(A)
    t, t_obs, offset = 0.0, 0.0, 0.0
    max_step = max_velocity / rate
    for gap in arrivals:
        buf.insert(ActionChunk(t_obs, offset + slope * DT * k, DT), t)
        end = t + gap
        while t < end:
            target = buf.action_at(t)
            if target is not None:
                out = safety.apply(target, previous)
                assert np.all(np.abs(out.positions - previous) <= max_step * (1 + 1e-9) + 1e-12)
                previous = out.positions
            t += 1.0 / rate
        t_obs, offset = t, offset + jump


@settings(max_examples=100, deadline=None)
@given(old=st.floats(-3, 3), new=st.floats(-3, 3), steps=st.integers(1, 6))
def test_crossfade_boundary_jump_is_smaller_than_replace(old, new, steps):
    def largest_step(rule: str) -> float:
        buf = ActionBuffer(A, "hold", rule, crossfade_steps=steps)
        buf.insert(chunk(0.0, old), 0.0)
        buf.insert(chunk(0.3, new), 0.3)
        _, values = buf.snapshot()
        return float(np.max(np.abs(np.diff(np.concatenate([[np.full(A, old)], values]), axis=0)), initial=0))

    overlap = 5  # the old chunk covers [0, 0.8): 0.3 .. 0.7 overlap
    assert largest_step("crossfade") <= largest_step("replace") / (min(steps, overlap) + 1) + 1e-9
