"""The Runtime facade driven step by step on a fake clock: goals, faults, holds, every command safe."""

from __future__ import annotations

import numpy as np
import pytest
from core_doubles import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.runtime import Runtime, RuntimeConfig, TerminationReason
from vla_ros.core.scripted_policy import ScriptedPolicy, default_spec, make_observation

RATE = 50.0
PERIOD = 1.0 / RATE


class Harness:
    """A runtime on a fake clock; ``run`` does what the threads would: observe, infer, tick.

    A policy built with ``sleep=harness.busy`` spends its latency ticking the control loop (and
    the camera), as the real threads would while the worker is busy."""

    def __init__(self, policy=None, no_policy: bool = False, latency_s: float = 0.0, **config):
        self.clock = FakeClock()
        if policy is None and not no_policy:
            policy = ScriptedPolicy(latency_s=latency_s, sleep=self.busy)
        self.policy = policy
        self.spec = self.policy.spec if self.policy else default_spec()
        self.commands, self.results = [], []
        config.setdefault("control_rate_hz", RATE)
        self.config = RuntimeConfig(**config)
        self.rt = Runtime(self.policy, self.config, self.commands.append, self.clock, self.results.append)
        self.state = np.zeros(self.spec.state_dim, np.float32)

    def observe(self):
        self.rt.submit_observation(make_observation(self.spec, self.clock(), self.state))

    def run(self, seconds: float, infer: bool = True, observe: bool = True):
        end = self.clock() + seconds - 1e-9
        while self.clock() < end:
            if observe:
                self.observe()
            if infer:
                self.rt.infer_once()
            self.rt.tick()
            self.clock.advance(PERIOD)

    def busy(self, seconds: float):
        """The worker is busy for ``seconds``: the loop and the camera go on meanwhile."""
        for _ in range(int(round(seconds / PERIOD))):
            self.clock.advance(PERIOD)
            self.observe()
            self.rt.tick()

    def start(self, instruction="pick up the red cube", **kw):
        self.observe()
        return self.rt.start_goal(instruction, **kw)


# ------------------------------------------------------------------------------- readiness
def test_goals_are_rejected_with_a_reason_when_not_ready():
    h = Harness(no_policy=True)
    h.observe()  # accepted even without a policy; no spec yet to check it against
    assert h.rt.start_goal("x").reason.startswith("no model")

    h = Harness()
    assert h.rt.start_goal("x").reason.startswith("no fresh observation")  # none yet
    h.observe()
    h.clock.advance(h.config.observation_max_age_s + 0.01)
    decision = h.rt.start_goal("x")
    assert not decision.accepted and "s old" in decision.reason
    h.observe()
    h.rt.set_estop(True)
    assert h.rt.start_goal("x").reason.startswith("e-stop latched")
    h.rt.set_estop(False)
    assert h.rt.start_goal("x").accepted
    assert not h.results  # rejected goals get no result


def test_bad_observations_raise_and_are_not_used():
    h = Harness()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        h.rt.submit_observation(make_observation(h.spec, h.clock(), np.zeros(3)))
    with pytest.raises(ValueError, match="non-finite"):
        h.rt.submit_observation(make_observation(h.spec, h.clock(), np.full(6, np.nan)))
    assert h.rt.start_goal("x").reason.startswith("no fresh observation")


# ------------------------------------------------------------------------------- happy path
def test_a_goal_tracks_the_policy_and_completes():
    h = Harness()
    decision = h.start()
    assert decision.accepted and h.rt.feedback().state == "waiting"
    h.run(2.0)
    fb = h.rt.feedback()
    assert fb.state == "running" and fb.goal_id == decision.goal_id and fb.buffered > 0
    assert fb.step == pytest.approx(2.0 / h.spec.action_period, abs=1)
    last = h.commands[-1]
    assert last.reason == "action" and not last.held
    expected = h.policy.fn(last.stamp)
    np.testing.assert_allclose(last.positions, expected, atol=0.05)  # linear interp of a slow sine
    assert h.rt.complete_goal(decision.goal_id)
    assert [(r.reason, r.success) for r in h.results] == [(TerminationReason.COMPLETED, True)]
    h.run(0.1)
    assert h.commands[-1].reason == "idle" and h.commands[-1].held
    np.testing.assert_allclose(h.commands[-1].positions, last.positions, atol=0.1)


def test_max_steps_counts_action_periods():
    h = Harness()
    h.start(max_steps=7)
    h.run(2.0)
    assert h.results[0].reason is TerminationReason.MAX_STEPS and h.results[0].steps == 7


def test_async_refills_in_time_and_drops_what_was_executed_meanwhile():
    """Latency 40% of a 1 s chunk: no starvation after the first chunk; each later chunk lands
    0.4 s (4 actions) after its observation while the robot kept moving, so 4 are dropped."""
    h = Harness(latency_s=0.4)
    h.start()
    h.run(5.0)
    stats = h.rt.stats()
    assert stats["inferences"] >= 5 and stats["inference_errors"] == 0
    assert stats["starved_ticks"] == 0 and stats["waiting_ticks"] == 20  # the first inference
    later = stats["inferences"] - 1  # 0.4 s late: action 4 is due (3 if the 0.02 s sums round down)
    assert 3 * later <= stats["actions_dropped_past"] <= 4 * later


def test_sync_mode_holds_while_it_infers_and_runs_each_chunk_from_its_first_action():
    """The robot holds during each inference (the execution clock stops), so nothing is dropped."""
    h = Harness(latency_s=0.4, execution="sync")
    h.start()
    h.run(5.0)
    stats = h.rt.stats()
    assert stats["inferences"] >= 3 and stats["actions_dropped_past"] == 0
    assert stats["starved_ticks"] >= 20 * (stats["inferences"] - 1) - 1


# ------------------------------------------------------------------------------- faults and holds
def test_estop_holds_from_the_next_tick_and_ends_the_goal():
    h = Harness()
    h.start()
    h.run(1.0)
    before = h.commands[-1].positions
    h.rt.set_estop(True)
    assert h.results[-1].reason is TerminationReason.ESTOP
    h.run(0.5)
    estop_commands = h.commands[-25:]
    assert all(c.reason == "estop" and c.held for c in estop_commands)
    for c in estop_commands:
        np.testing.assert_array_equal(c.positions, before)
    assert h.rt.feedback().state == "estop"


def test_non_finite_actions_hold_and_fault():
    def fn(t):
        return np.full(6, np.nan) if t > 100.5 else np.zeros(6)

    h = Harness(ScriptedPolicy(fn=fn))
    h.start()
    h.run(1.5)
    assert h.results[-1].reason is TerminationReason.FAULT and "non-finite" in h.results[-1].message
    assert all(np.all(np.isfinite(c.positions)) for c in h.commands)
    assert any(c.reason == "invalid_action" and c.held for c in h.commands)


@pytest.mark.parametrize("kind", ["predict", "encode"])
def test_policy_exceptions_abort_the_goal_and_the_next_goal_works(kind):
    policy = ScriptedPolicy(raise_on=(0,)) if kind == "predict" else ScriptedPolicy(encode_raises=True)
    h = Harness(policy)
    h.start()
    h.run(0.2)
    assert h.results[-1].reason is TerminationReason.FAULT and "PolicyFault" in h.results[-1].message
    assert h.rt.stats()["inference_errors"] == 1
    policy.encode_raises = False
    h.start()
    h.run(0.5)
    assert h.commands[-1].reason == "action"


def test_stale_observations_beyond_the_grace_fault_the_goal():
    h = Harness(observation_max_age_s=0.2, stale_grace_s=0.3)
    h.start()
    h.run(0.3)
    h.run(0.4, observe=False)  # 0.4 s without observations: within max age + grace
    assert not h.results
    h.run(0.2, observe=False)
    assert h.results[-1].reason is TerminationReason.FAULT and "stale" in h.results[-1].message


@pytest.mark.parametrize("policy_name", ["hold_last", "hold_measured"])
def test_starvation_policies(policy_name):
    h = Harness(starvation_policy=policy_name, max_starved_s=5.0)
    h.start()
    h.run(0.5)
    last_action = h.commands[-1].positions.copy()
    h.state = np.full(6, 0.3, np.float32)  # the arm is measured somewhere else
    h.run(2.0, infer=False)  # the chunk (1 s) runs out: starved
    starved = [c for c in h.commands if c.reason == "starved"]
    assert starved and all(c.held for c in starved)
    if policy_name == "hold_measured":
        np.testing.assert_allclose(starved[-1].positions, 0.3)  # reached at the velocity limit
    else:
        np.testing.assert_array_equal(starved[0].positions, starved[-1].positions)
        assert not np.allclose(starved[-1].positions, 0.3)
    assert h.rt.stats()["starved_ticks"] == len(starved)
    assert last_action.shape == (6,)


def test_starvation_beyond_the_bound_faults():
    h = Harness(max_starved_s=0.3)
    h.start()
    h.run(0.2)
    h.run(1.5, infer=False)
    assert h.results[-1].reason is TerminationReason.FAULT and "starved" in h.results[-1].message


def test_dry_run_sends_holds_and_reports_the_proposal():
    h = Harness(dry_run=True)
    h.state = np.full(6, 0.2, np.float32)
    h.start()
    h.run(1.0)
    dry = [c for c in h.commands if c.reason == "dry_run"]
    assert dry and all(c.held and c.proposed is not None for c in dry)
    for c in dry:
        np.testing.assert_allclose(c.positions, 0.2, atol=1e-6)
    assert not np.allclose(dry[-1].proposed, 0.2)


def test_delta_actions_are_added_to_the_observed_state():
    spec = default_spec()
    spec = type(spec)(**{**spec.__dict__, "action_mode": "delta"})
    h = Harness(ScriptedPolicy(spec=spec, fn=lambda t: np.full(6, 0.05)), max_velocity=100.0)
    h.state = np.full(6, 0.5, np.float32)
    h.start()
    h.run(0.5)
    np.testing.assert_allclose(h.commands[-1].positions, 0.55, atol=1e-6)


def test_set_policy_refuses_while_a_goal_runs():
    h = Harness()
    h.start()
    with pytest.raises(RuntimeError, match="goal is active"):
        h.rt.set_policy(ScriptedPolicy())


# ------------------------------------------------------------------------------- every command safe
@settings(max_examples=40, deadline=None)
@given(
    blend=st.sampled_from(["replace", "average", "crossfade", "ensemble"]),
    interpolation=st.sampled_from(["linear", "hold"]),
    amplitude=st.floats(0.0, 5.0),
    jump_every=st.floats(0.05, 1.0),
    latency=st.floats(0.0, 0.8),
    max_velocity=st.floats(0.1, 4.0),
    nan_at=st.one_of(st.none(), st.floats(0.0, 2.0)),
)
def test_every_command_is_finite_in_limits_and_velocity_bounded(
    blend, interpolation, amplitude, jump_every, latency, max_velocity, nan_at
):
    def fn(t):  # a discontinuous, sometimes wild trajectory
        if nan_at is not None and t > nan_at:
            return np.full(6, np.nan)
        return amplitude * np.sign(np.sin(np.pi * t / jump_every + np.arange(6)))

    lower, upper = (-1.0, -2.0, -0.5, -1.5, -3.0, 0.0), (1.0, 2.0, 0.5, 1.5, 3.0, 1.0)
    h = Harness(
        no_policy=True, blend=blend, interpolation=interpolation, max_velocity=max_velocity,
        joint_lower=lower, joint_upper=upper, max_starved_s=5.0,
    )  # fmt: skip
    h.policy = ScriptedPolicy(fn=lambda t: fn(t - 100.0), latency_s=latency, sleep=h.busy)
    h.rt.set_policy(h.policy)
    h.spec = h.policy.spec
    h.start()
    h.run(2.0)
    previous = None
    for c in h.commands:
        assert np.all(np.isfinite(c.positions))
        assert np.all(c.positions >= lower) and np.all(c.positions <= upper)
        if previous is not None:
            assert np.all(np.abs(c.positions - previous) <= max_velocity * PERIOD * (1 + 1e-9) + 1e-12)
        previous = c.positions
    assert len(h.results) <= 1


@pytest.mark.parametrize("max_velocity", [100.0, 0.2])
def test_action_commands_carry_future_points_through_the_same_safety_chain(max_velocity):
    """future_points > 0 (the node's trajectory buffer mode): each action command carries the next
    buffered actions, filtered as the loop would send them: inside the limits and, point to point,
    no faster than max_velocity over the gap. Safe points pass unchanged."""
    upper = 0.3
    h = Harness(future_points=5, max_velocity=max_velocity, joint_lower=-upper, joint_upper=upper)
    h.start()
    h.run(0.5)
    actions = [c for c in h.commands if c.reason == "action"]
    assert actions and all(0 < len(c.future) <= 5 for c in actions)
    command = actions[-1]
    ahead, raw = h.rt.future_actions(command.stamp)
    times = [t for t, _ in command.future]
    np.testing.assert_allclose(times, ahead[: len(times)])
    previous, previous_t = command.positions, 0.0
    for (t, point), target in zip(command.future, raw, strict=False):
        assert np.all(np.abs(point) <= upper + 1e-12)
        assert np.all(np.abs(point - previous) <= max_velocity * (t - previous_t) * (1 + 1e-9) + 1e-12)
        if max_velocity == 100.0:
            np.testing.assert_array_equal(point, np.clip(target, -upper, upper))
        previous, previous_t = point, t
    if max_velocity == 0.2:
        pairs = zip(command.future, raw, strict=False)
        assert any(not np.allclose(p, np.clip(r, -upper, upper)) for (_, p), r in pairs)  # clamped
    held = [c for c in h.commands if c.held]
    assert all(c.future == () for c in held)


def test_future_actions_are_relative_to_now_even_after_a_hold():
    h = Harness(latency_s=0.4, execution="sync")  # sync: the robot holds during each inference
    h.start()
    assert h.rt.future_actions()[0].size == 0  # nothing buffered yet
    h.run(1.9)
    ahead, positions = h.rt.future_actions()
    assert h.rt.stats()["execution_time_lag_s"] > 0.3  # the execution clock stood still meanwhile
    assert ahead.size and np.all(ahead > 0) and np.all(np.diff(ahead) > 0) and ahead[-1] <= 1.0 + 1e-9
    assert positions.shape == (ahead.size, 6)
    h.rt.cancel_goal()
    assert h.rt.future_actions()[0].size == 0


@pytest.mark.parametrize("offset", [0, 1])
def test_actions_run_when_their_data_timed_them_and_the_first_chunk_ramps_from_the_hold(offset):
    """PolicySpec.action_offset_steps o: action k of a chunk is due at t_obs + (k + o) * dt. The
    ScriptedPolicy's action k is its trajectory at that time, so through the first chunk, after its
    first period, every command is the trajectory at the command's own time (placing the chunk o
    periods early would be off by up to 0.06 rad here). The first chunk starts from the held
    position: with o = 1 the commands ramp to its first action over one period, as the data's
    frames did; with o = 0 its first action is due at once."""
    from dataclasses import replace

    h = Harness(policy=None, no_policy=True)
    h.policy = ScriptedPolicy(spec=replace(default_spec(), action_offset_steps=offset))
    h.spec, fn, dt = h.policy.spec, h.policy.fn, h.policy.spec.action_period
    h.rt.set_policy(h.policy)
    t_goal = h.clock() + 0.2
    held = fn(t_goal) + 0.02  # the robot holds near the trajectory's start
    h.state = held.astype(np.float32)
    h.run(0.2, infer=False)
    assert h.start().accepted and h.clock() == pytest.approx(t_goal)
    h.run(3.0)
    moving = [c for c in h.commands if c.reason == "action"]
    assert moving[0].stamp == pytest.approx(t_goal) and h.rt.stats()["starved_ticks"] == 0
    first_chunk = [c for c in moving if t_goal + dt - 1e-9 <= c.stamp <= t_goal + 0.8]
    errors = [np.abs(c.positions - fn(c.stamp)).max() for c in first_chunk]
    assert len(errors) == 36 and max(errors) < 2e-3, max(errors)
    ramp = np.array([c.positions for c in moving[:6]])
    held = h.state.astype(np.float64)
    if offset:
        a0 = fn(t_goal + dt)
        np.testing.assert_allclose(ramp, held + np.arange(6)[:, None] / 5 * (a0 - held), atol=1e-6)
    else:
        np.testing.assert_allclose(ramp[0], fn(t_goal), atol=1e-6)
