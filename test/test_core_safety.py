"""Safety filter: for any input, never an out-of-limit, too-fast or non-finite output."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vla_ros.core.runtime_types import RuntimeConfig
from vla_ros.core.safety import SafetyFilter, SafetyLimits, to_absolute

A = 6
GRIPPER = 5
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
vector = st.lists(any_float, min_size=A, max_size=A).map(np.array)


@st.composite
def limits_and_previous(draw):
    lower = np.array(draw(st.lists(st.floats(-4, 0), min_size=A, max_size=A)))
    width = np.array(draw(st.lists(st.floats(0, 4), min_size=A, max_size=A)))
    upper = lower + width
    config = RuntimeConfig(
        joint_lower=tuple(lower),
        joint_upper=tuple(upper),
        max_velocity=draw(st.floats(1e-3, 10)),
        control_rate_hz=draw(st.sampled_from([10.0, 50.0, 100.0, 500.0])),
        gripper_range=(0.0, 1.0),
    )
    assume(lower[GRIPPER] <= 1.0 and upper[GRIPPER] >= 0.0)  # the gripper range must intersect
    limits = SafetyLimits.from_config(config, A, GRIPPER)
    fraction = np.array(draw(st.lists(st.floats(0, 1), min_size=A, max_size=A)))
    previous = limits.lower + fraction * (limits.upper - limits.lower)
    return limits, previous


@settings(max_examples=400, deadline=None)
@given(lp=limits_and_previous(), target=vector)
def test_output_is_finite_within_limits_and_within_the_velocity_step(lp, target):
    limits, previous = lp
    out = SafetyFilter(limits).apply(target, previous)
    assert np.all(np.isfinite(out.positions))
    assert np.all(out.positions >= limits.lower) and np.all(out.positions <= limits.upper)
    assert 0.0 <= out.positions[GRIPPER] <= 1.0
    assert np.all(np.abs(out.positions - previous) <= limits.max_step * (1 + 1e-12) + 1e-12)
    assert out.valid == bool(np.all(np.isfinite(target)))
    if not out.valid:
        np.testing.assert_array_equal(out.positions, previous)  # hold


@settings(max_examples=200, deadline=None)
@given(lp=limits_and_previous(), target=vector, previous=vector)
def test_any_previous_still_gives_an_in_limit_finite_output(lp, target, previous):
    """Even a garbage ``previous`` (a bad measured state) cannot make the output unsafe."""
    limits, _ = lp
    for prev in (previous, None):
        out = SafetyFilter(limits).apply(target, prev)
        assert np.all(np.isfinite(out.positions))
        assert np.all(out.positions >= limits.lower) and np.all(out.positions <= limits.upper)


@settings(max_examples=200, deadline=None)
@given(lp=limits_and_previous(), fraction=st.lists(st.floats(-1, 1), min_size=A, max_size=A))
def test_a_safe_target_passes_unchanged(lp, fraction):
    limits, previous = lp
    target = np.clip(previous + np.array(fraction) * limits.max_step, limits.lower, limits.upper)
    out = SafetyFilter(limits).apply(target, previous)
    np.testing.assert_allclose(out.positions, target)
    assert out.valid and not out.clamped


def test_gripper_range_narrows_that_dimension_only():
    config = RuntimeConfig(joint_lower=(-3.0,) * A, joint_upper=(3.0,) * A, gripper_range=(0.1, 0.9))
    limits = SafetyLimits.from_config(config, A, GRIPPER)
    out = SafetyFilter(limits).apply(np.full(A, 2.5), None)
    np.testing.assert_allclose(out.positions, [2.5] * 5 + [0.9])
    assert out.clamped


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="joint_lower"):
        SafetyLimits.from_config(RuntimeConfig(joint_lower=(0.0, 1.0)), A, None)
    with pytest.raises(ValueError, match="lower > upper"):
        SafetyLimits.from_config(RuntimeConfig(joint_lower=(1.0,) * A, joint_upper=(0.0,) * A), A, None)
    with pytest.raises(ValueError, match="max_velocity"):
        RuntimeConfig(max_velocity=0.0).validate()
    with pytest.raises(ValueError, match="gripper_index"):
        SafetyLimits.from_config(RuntimeConfig(), A, 9)


def test_delta_mode_adds_the_observation_state():
    state = np.arange(A, dtype=float)
    np.testing.assert_allclose(to_absolute(np.ones((2, A)), state, "delta"), np.tile(state + 1.0, (2, 1)))
    np.testing.assert_allclose(to_absolute(np.ones((2, A)), state, "absolute"), 1.0)
    with pytest.raises(ValueError, match="reference state"):
        to_absolute(np.ones((2, A)), np.zeros(3), "delta")
