"""The offline executor (vla_ros/sim/executor.py): vla_node's Runtime on a simulated clock against
the simulator, as `vla_ros eval` runs it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from vla_ros.core.policy import ActionChunk, Observation
from vla_ros.core.runtime_types import TerminationReason
from vla_ros.ros import params
from vla_ros.sim import TabletopEnv
from vla_ros.sim.executor import run_episode, sim_robot_runtime_config
from vla_ros.sim.expert import ExpertPolicy

REPO = Path(__file__).resolve().parents[1]
SEEDS = (1000, 1001, 1002)  # test_closed_loop_expert.py's scenes: one pick, two place


@pytest.fixture(scope="module")
def env():
    env = TabletopEnv(image_size=(64, 64), action_period=0.1, seed=0, max_steps=100)
    yield env
    env.close()


class ExpertForEnv(ExpertPolicy):
    """The expert, told its task by the environment it runs in (the ROS test gets it from the sim node)."""

    def __init__(self, env):
        super().__init__()
        self.env = env

    def encode_instruction(self, text):
        self.set_task(self.env.task)
        return super().encode_instruction(text)


class Late(ExpertForEnv):
    """Records the stamps of the observations it was asked about."""

    def __init__(self, env):
        super().__init__(env)
        self.asked: list[float] = []

    def predict_chunk(self, observation: Observation, context) -> ActionChunk:
        self.asked.append(observation.stamp)
        return super().predict_chunk(observation, context)


def test_the_sim_config_is_what_vla_node_builds_from_config_sim_robot_yaml():
    values = yaml.safe_load((REPO / "config" / "sim_robot.yaml").read_text())["/**"]["ros__parameters"]
    cameras = values.pop("cameras")
    spec = ExpertPolicy().spec
    from_node = dataclasses.asdict(params.runtime_config(params.validate(values, cameras), spec))
    ours = dataclasses.asdict(sim_robot_runtime_config(spec))
    # the offline executor calls Runtime.tick itself: it has no control thread to schedule
    for key in ("realtime_priority", "realtime_priority_level"):
        from_node.pop(key), ours.pop(key)
    assert ours == from_node


def test_the_expert_completes_every_scene_through_the_runtime(env):
    policy = ExpertForEnv(env)
    config = sim_robot_runtime_config(policy.spec)
    outcomes = [run_episode(policy, env, config, seed) for seed in SEEDS]
    assert [o.result.reason for o in outcomes] == [TerminationReason.COMPLETED] * len(SEEDS)
    for o in outcomes:
        assert o.success and 2.0 < o.sim_s < 10.0  # simulated seconds (the plans take 4-6 s), not wall time
        assert o.inferences >= 2 and o.starved_ticks == 0
        assert o.commands >= o.sim_s * config.control_rate_hz - 1  # a command every tick


@pytest.mark.parametrize("latency", [0.0, 0.3])
def test_a_chunk_lands_its_latency_after_the_inference_began(env, latency):
    policy = Late(env)
    config = sim_robot_runtime_config(policy.spec)
    outcome = run_episode(policy, env, config, SEEDS[0], latency=latency, time_limit_s=2.0)
    assert outcome.result.reason == TerminationReason.TIMEOUT  # the plan takes 4 s
    assert outcome.latency_p50_s == pytest.approx(latency, abs=1e-9)
    # the first inference begins on the goal's first tick; until its chunk lands the arm holds
    # (all on the simulated clock: the latency is set, not measured, so this is exact)
    period = config.control_period
    assert latency <= outcome.first_action_s <= latency + period + 1e-9
    assert len(policy.asked) >= 2


def test_a_time_limit_too_short_for_the_task_ends_in_timeout_not_success(env):
    policy = ExpertForEnv(env)
    config = sim_robot_runtime_config(policy.spec)
    outcome = run_episode(policy, env, config, SEEDS[1], time_limit_s=1.0)
    assert outcome.result.reason == TerminationReason.TIMEOUT and not outcome.success
    assert outcome.sim_s == pytest.approx(1.0, abs=0.05)


def test_a_bad_latency_is_refused_by_name(env):
    policy = ExpertForEnv(env)
    with pytest.raises(ValueError, match="latency"):
        run_episode(policy, env, sim_robot_runtime_config(policy.spec), SEEDS[0], latency=-1)


def test_pipelined_inference_keeps_the_arm_fed_at_80_percent_of_a_chunk_where_one_at_a_time_starves(env):
    """0.8 s of simulated latency on 1 s chunks: one inference in flight leaves the buffer dry for
    part of every chunk; with up to 8 in flight (the latency is waiting) it never runs dry."""
    policy = ExpertForEnv(env)
    base = dataclasses.replace(sim_robot_runtime_config(policy.spec), max_starved_s=5.0)
    starved = {}
    for k in (1, 8):
        config = dataclasses.replace(base, max_inflight=k)
        outcome = run_episode(policy, env, config, SEEDS[0], latency=0.8, time_limit_s=4.0)
        starved[k] = outcome.starved_ticks
    assert starved[1] > 20 and starved[8] == 0, starved


def test_the_trace_records_every_landing_and_the_plan_around_it(env):
    from vla_ros.sim.executor import EpisodeTrace

    policy = ExpertForEnv(env)
    config = sim_robot_runtime_config(policy.spec)
    trace = EpisodeTrace()
    outcome = run_episode(policy, env, config, SEEDS[0], latency=0.3, time_limit_s=3.0, trace=trace)
    stamps, positions = trace.arrays()
    assert len(stamps) == outcome.commands and positions.shape[1] == policy.spec.action_dim
    assert len(trace.landings) == outcome.inferences and trace.landings == sorted(trace.landings)
    assert 0 < len(trace.plans) < len(trace.landings)  # the first chunk lands on an empty buffer
    for before, after in trace.plans:
        assert before.shape == after.shape and (before[0] == after[0]).all()  # the tick already sent
