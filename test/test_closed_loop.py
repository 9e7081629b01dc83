"""The closed loop through ROS 2: launch/sim_demo.launch.py (sim robot + vla_node with the default
checkpoint, separate processes, DDS between them); instructions in, the simulated task done. Twice:
the model in vla_node's worker process (the default), and in a policy_server, a third process
reached over DDS (policy_process: remote).

A handful of seeded episodes; the full figure is `vla_ros eval-ros --episodes 100`. The scenes are
the first ones (from seed 1000) that the same checkpoint solves without ROS (`vla_ros eval`'s
closed loop: the same Runtime on a simulated clock), so the test asks "what the model does
offline, it does through ROS": at least 2 of 3 must succeed through ROS (real-time timing
differs from the offline lock-step), and every episode
must end the way a correct stack ends one: "completed" exactly when the simulation saw success,
otherwise the time limit, never a fault.

The question only has an answer for a competent policy: a policy that solves few scenes offline
succeeds or fails on a scene by chance, and a few milliseconds of real-time jitter decide which
(seen with a checkpoint solving 15% offline: 0 of 3 of its solved seeds through ROS, while the
same stack completes every seeded episode with the scripted expert as its policy). The shipped
checkpoint solves 9 of the 10 candidate seeds offline; one solving fewer than MIN_OFFLINE_RATE of
them has regressed and fails the success test (it does not skip). The ROS loop itself is always
checked, with the expert, by test_closed_loop_expert.py.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")

from vla_ros.tools.sim_session import EpisodeClient, SimStack, process_group_alive  # noqa: E402

FIRST_SEED, CANDIDATES, EPISODES = 1000, 10, 3
MIN_OFFLINE_RATE = 0.8
TIME_LIMIT_S = 10.0  # the simulation's episode limit (TabletopEnv max_steps * action_period)


def _seeds_solved_offline(checkpoint) -> list[int]:
    """The candidate seeds the checkpoint solves without ROS, through the same executor (the core
    Runtime on a simulated clock, as `vla_ros eval` runs it)."""
    from vla_ros.models.policy import load_policy
    from vla_ros.sim import TabletopEnv
    from vla_ros.sim.executor import run_episode, sim_robot_runtime_config

    policy = load_policy(checkpoint, threads=1)
    spec = policy.spec
    env = TabletopEnv(image_size=spec.image_size, action_period=spec.action_period, seed=0, max_steps=100)
    config = sim_robot_runtime_config(spec)
    solved = []
    try:
        for seed in range(FIRST_SEED, FIRST_SEED + CANDIDATES):
            if run_episode(policy, env, config, seed, time_limit_s=TIME_LIMIT_S).success:
                solved.append(seed)
    finally:
        env.close()
    return solved


@functools.cache
def _solved(checkpoint: str) -> tuple[int, ...]:
    return tuple(_seeds_solved_offline(checkpoint))


@pytest.fixture(scope="module", params=["child", "remote"])
def stack(request, tmp_path_factory):
    """The stack with the model in vla_node's worker process (child, the default) or in a third
    process, a policy_server over DDS (remote; needs the generated interfaces)."""
    from vla_ros.models import default_checkpoint
    from vla_ros.ros.interface_fields import load_remote_interfaces

    where = request.param
    if where == "remote" and load_remote_interfaces()[0] is None:
        why = load_remote_interfaces()[-1]
        if os.environ.get("ROS_DISTRO") != "humble":
            pytest.fail(f"the generated interfaces are missing outside Humble; run `make interfaces`: {why}")
        pytest.skip(f"policy_process remote needs the generated interfaces (none on Humble): {why}")
    try:
        checkpoint = default_checkpoint()
    except FileNotFoundError as exc:
        pytest.skip(f"needs the default checkpoint ({exc})")
    solved = list(_solved(str(checkpoint)))
    competent = len(solved) >= MIN_OFFLINE_RATE * CANDIDATES
    seeds = solved[:EPISODES] if competent else [FIRST_SEED]
    log = tmp_path_factory.mktemp("closed_loop") / "launch.log"
    sim_stack = SimStack({"checkpoint": checkpoint, "seed": seeds[0], "goal_timeout_s": TIME_LIMIT_S,
                          "status_rate_hz": 20.0, "vla_overrides": json.dumps({"policy_process": where})},
                         log_path=log)
    sim_stack.start()
    rclpy.init()
    client = EpisodeClient("closed_loop_test_client")
    try:
        client.wait_ready(240.0, alive=sim_stack.alive)
    except Exception:
        client.close()
        rclpy.shutdown()
        sim_stack.stop()
        pytest.fail(f"stack did not come up; log tail:\n{sim_stack.log_tail()}")
    yield sim_stack, client, seeds, solved, where
    client.close()
    rclpy.shutdown()
    rc = sim_stack.stop()
    assert not process_group_alive(sim_stack.proc.pid), "processes of the launch survived its shutdown"
    assert rc is not None


def _run(stack) -> list:
    sim_stack, client, seeds = stack[:3]
    results = []
    for seed in seeds:
        episode = client.reset_episode(seed)
        result, _ = client.run_goal(episode["instruction"], TIME_LIMIT_S, seed=seed)
        results.append(result)
        assert result.reason in ("completed", "timeout"), (result, sim_stack.log_tail())
        assert (result.reason == "completed") == result.success, result
        assert result.commands > 0
    return results


def test_the_model_runs_outside_vla_node(stack):
    """child: in vla_node's worker process; remote: in the policy_server process. Either way torch
    is loaded there and not in vla_node."""
    from vla_ros.bench.soak import find_process, find_worker

    sim_stack, where = stack[0], stack[4]
    node = find_process(sim_stack.proc.pid, "vla_node")
    assert node is not None and "libtorch" not in _maps(node)
    worker = find_worker(node)
    if where == "child":
        assert worker is not None and "libtorch" in _maps(worker)
    else:
        server = find_process(sim_stack.proc.pid, "policy_server")
        assert worker is None and server is not None and "libtorch" in _maps(server)


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def test_model_episodes_end_as_a_correct_stack_ends_them(stack):
    """Whatever the checkpoint's skill: instruction in, commands out, completed iff success."""
    _run(stack)


def test_instructions_in_tasks_done_within_the_time_limit(stack):
    solved = stack[3]
    last = FIRST_SEED + CANDIDATES - 1
    # The shipped checkpoint solves 9/10 of these seeds offline (`make checkpoint`); below the bar
    # the checkpoint has regressed, which fails here rather than skipping.
    assert len(solved) >= MIN_OFFLINE_RATE * CANDIDATES, (
        f"the default checkpoint solves {len(solved)}/{CANDIDATES} of seeds {FIRST_SEED}..{last} without "
        f"ROS (< {MIN_OFFLINE_RATE:.0%}): it has regressed")
    results = _run(stack)
    successes = [r for r in results if r.success]
    assert len(successes) >= 2, [r.to_dict() for r in results]
    for r in successes:
        assert r.episode_time_s < TIME_LIMIT_S + 0.5, r  # status period + DDS slack over the limit


def test_stack_stops_cleanly_and_leaves_no_process():
    """A second, short-lived stack: SIGINT to the group stops every node; nothing survives."""
    from vla_ros.models import default_checkpoint

    try:
        checkpoint = default_checkpoint()
    except FileNotFoundError as exc:
        pytest.skip(f"needs the default checkpoint ({exc})")
    sim_stack = SimStack({"checkpoint": checkpoint, "seed": 0}).start()
    time.sleep(3.0)
    assert sim_stack.alive()
    pgid = sim_stack.proc.pid
    sim_stack.stop()
    assert not process_group_alive(pgid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
