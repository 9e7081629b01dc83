"""The input plausibility checks (vla_ros.core.input_checks), without ROS: each names what is wrong."""

from __future__ import annotations

import math

import pytest

from vla_ros.core.input_checks import (
    NS,
    TIME_JUMP_S,
    StampOrder,
    finite_problem,
    joint_names_problem,
    joint_values_problem,
    stamp_problem,
)

NOW = 1_700_000_000 * NS


@pytest.mark.parametrize(
    "sec, nanosec, words",
    [
        (-1, 0, "sec is negative (-1)"),
        (5, NS, "nanosec 1000000000 is outside"),
        (0, 0, "zero (unset)"),
        (1_700_000_010, 0, "10 s ahead"),
    ],
)
def test_bad_stamps_are_named(sec, nanosec, words):
    assert words in stamp_problem(sec, nanosec, NOW, max_lead_s=0.5)


def test_good_stamps_pass_including_allowed_lead_and_old_ones():
    assert stamp_problem(1_700_000_000, 400_000_000, NOW, max_lead_s=0.5) == ""  # 0.4 s ahead
    assert stamp_problem(1_699_999_000, 0, NOW, max_lead_s=0.5) == ""  # old: freshness decides
    assert stamp_problem(1_700_000_000, 600_000_000, NOW, max_lead_s=0.5) != ""
    assert "/clock" in stamp_problem(1_700_000_000, 0, 0, max_lead_s=0.5)  # sim time not started


def test_stamp_order_drops_late_messages_and_accepts_a_new_time_base():
    order = StampOrder()
    assert order.check(10 * NS) == ("", False)
    problem, jumped = order.check(10 * NS - NS // 10)
    assert "went back 0.1 s" in problem and not jumped
    assert order.check(10 * NS + 1) == ("", False)  # the reference stayed at the newest accepted
    back = int((TIME_JUMP_S + 0.5) * NS)
    assert order.check(10 * NS - back) == ("", True)
    assert order.check(10 * NS - back + 1) == ("", False)  # and goes on from the new base


def test_joint_names_and_lengths():
    assert joint_names_problem(["a", "b"], 2, 0, 0) == ""
    assert joint_names_problem(["a", "b"], 2, 2, 2) == ""
    assert joint_names_problem(["a", "b", "a", "b"], 4, 0, 0) == "duplicate joint name(s) ['a', 'b']"
    assert joint_names_problem(["a", "b"], 1, 0, 0) == "2 names but 1 positions"
    assert joint_names_problem(["a", "b"], 2, 1, 0) == "2 names but 1 velocity values"
    assert joint_names_problem(["a", "b"], 2, 0, 3) == "2 names but 3 effort values"


def test_joint_values_out_of_limits_or_not_finite():
    names, lower, upper = ["a", "b"], [-1.0, 0.0], [1.0, 1.0]
    assert joint_values_problem(names, [1.4, 0.5], lower, upper, margin=0.5) == ""  # inside the margin
    assert "'a' position 1.6 is outside [-1, 1]" in joint_values_problem(names, [1.6, 0.5], lower, upper, 0.5)
    assert "'b' position -0.7" in joint_values_problem(names, [0.0, -0.7], lower, upper, 0.5)
    assert joint_values_problem(names, [0.0, math.nan], lower, upper, 0.5) == "joint 'b' position is nan"
    assert finite_problem(names, [0.0, -math.inf], "velocity") == "joint 'b' velocity is -inf"
    assert finite_problem(names, [0.0, 2.0], "velocity") == ""
