"""Threads for real: the worker stops within a bound, the control loop keeps ticking whatever the
policy does (raises, hangs, is slow), and the worker runs the real model. Liveness bounds only:
no assertion here is a speed target."""

from __future__ import annotations

import numpy as np
import pytest
from core_doubles import ObservationFeeder, wait_until

from vla_ros.core.control_loop import skip_missed
from vla_ros.core.runtime import Runtime, RuntimeConfig, TerminationReason
from vla_ros.core.scripted_policy import ScriptedPolicy, default_spec
from vla_ros.core.stats import RingBuffer

LIVENESS_S = 15.0  # generous: the machine is shared; these bound hangs, they measure nothing


class Run:
    def __init__(self, policy, **config):
        self.policy = policy
        self.commands, self.results = [], []
        config = RuntimeConfig(**config)
        self.rt = Runtime(policy, config, self.commands.append, on_result=self.results.append)

    def __enter__(self):
        self.rt.start()
        self.feeder = ObservationFeeder(self.rt, self.policy.spec, rate_hz=30).__enter__()
        assert wait_until(lambda: self.feeder.sent > 0, LIVENESS_S)
        return self

    def __exit__(self, *exc):
        self.feeder.__exit__()
        if hasattr(self.policy, "release"):
            self.policy.release()
        self.rt.stop()

    def ticks_advance(self, n: int = 10) -> bool:
        """The control loop sends ``n`` more commands (liveness)."""
        start = len(self.commands)
        return wait_until(lambda: len(self.commands) >= start + n, LIVENESS_S)

    def start_goal(self, **kw):
        decision = self.rt.start_goal("put the cube in the bowl", **kw)
        assert decision.accepted, decision.reason
        return decision.goal_id


def test_worker_and_loop_stop_within_the_join_bound_mid_inference():
    policy = ScriptedPolicy(latency_s=0.3)
    with Run(policy, stop_timeout_s=5.0) as run:
        run.start_goal()
        assert wait_until(lambda: run.rt.worker.busy_since is not None, LIVENESS_S)
    assert run.rt.stop_report == {"worker_stopped": True, "loop_stopped": True, "results_stopped": True}
    assert not run.rt.worker.alive and not run.rt.loop.running
    assert [r.reason for r in run.results] == [TerminationReason.SHUTDOWN]


def test_a_goal_ending_inside_a_control_tick_has_its_result_handled_off_the_control_thread():
    """A timeout ends the goal inside tick(); the front-end's result handler (logging, status,
    statistics) runs on the runtime's result thread, and a slow handler does not stall the loop."""
    import threading
    import time

    seen = []

    def slow_handler(result):
        seen.append((threading.current_thread().name, result.reason))
        time.sleep(0.3)

    policy = ScriptedPolicy()
    run = Run(policy)
    run.rt = Runtime(policy, RuntimeConfig(), run.commands.append, on_result=slow_handler)
    with run:
        run.rt.start_goal("put the cube in the bowl", timeout_s=0.3)
        assert wait_until(lambda: seen, LIVENESS_S)
        assert run.ticks_advance(5)  # ticking on while the handler sleeps
    assert seen[0] == ("vla_ros-results", TerminationReason.TIMEOUT)
    assert run.rt.stop_report["results_stopped"]
    assert [reason for _, reason in seen] == [TerminationReason.TIMEOUT]  # nothing active at stop


def test_loop_keeps_ticking_while_the_policy_raises_and_the_worker_survives():
    policy = ScriptedPolicy(raise_always=True)
    with Run(policy) as run:
        for _ in range(2):
            goal_id = run.start_goal()
            assert wait_until(lambda g=goal_id: any(r.goal_id == g for r in run.results), LIVENESS_S)
            assert run.results[-1].reason is TerminationReason.FAULT
            assert "PolicyFault" in run.results[-1].message
            assert run.ticks_advance()
        assert run.rt.worker.alive and run.rt.stats()["inference_errors"] == 2
    assert all(np.all(np.isfinite(c.positions)) for c in run.commands)


def test_loop_keeps_ticking_while_the_policy_hangs_then_starvation_faults():
    policy = ScriptedPolicy(hang_always=True)
    with Run(policy, max_starved_s=0.3, stop_timeout_s=0.2) as run:
        run.start_goal()
        assert wait_until(policy.hanging.is_set, LIVENESS_S)
        assert run.ticks_advance(20)  # while predict_chunk is blocked
        assert wait_until(lambda: bool(run.results), LIVENESS_S)
        assert run.results[0].reason is TerminationReason.FAULT and "starved" in run.results[0].message
        assert policy.hanging.is_set() and run.ticks_advance()
        run.rt.stop()  # a hung call cannot be interrupted: stop reports it and returns
        assert run.rt.stop_report["worker_stopped"] is False and run.rt.stop_report["loop_stopped"]
    assert wait_until(lambda: not run.rt.worker.alive, LIVENESS_S)  # released by Run.__exit__


def test_loop_keeps_ticking_during_a_slow_inference():
    spec = default_spec(chunk_size=5, action_period=0.05)  # 0.25 s chunks, 0.2 s inferences:
    policy = ScriptedPolicy(spec=spec, latency_s=0.2)  # each chunk lands with 0.05 s left
    with Run(policy, max_starved_s=30.0) as run:
        run.start_goal()
        assert wait_until(lambda: run.rt.stats()["inferences"] >= 2, LIVENESS_S)
        assert wait_until(lambda: run.rt.worker.busy_since is not None, LIVENESS_S)
        assert run.ticks_advance(5)
        stats = run.rt.stats()
        assert stats["starved_ticks"] > 0  # the buffer ran dry: each inference outlasts a chunk
        assert any(c.reason == "starved" and c.held for c in run.commands)
        assert not run.results


def test_sync_execution_holds_while_it_infers():
    spec = default_spec(chunk_size=5, action_period=0.05)
    policy = ScriptedPolicy(spec=spec, latency_s=0.1)
    with Run(policy, execution="sync") as run:
        run.start_goal()
        assert wait_until(lambda: run.rt.stats()["inferences"] >= 3, LIVENESS_S)
        assert run.rt.stats()["starved_ticks"] > 0 and run.rt.stats()["actions_dropped_past"] == 0


def test_realtime_priority_request_never_stops_the_loop():
    warns = pytest.warns(RuntimeWarning, match="SCHED_FIFO") if not _can_fifo() else _nullcontext()
    with warns, Run(ScriptedPolicy(), realtime_priority=True) as run:
        assert run.ticks_advance()
    assert run.rt.stats()["priority"]


def _can_fifo() -> bool:
    import os

    try:
        param = os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, param)
        return True
    except (AttributeError, OSError):
        return False


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    ("deadline", "now", "expected"),
    [(1.0, 1.005, (1.0, 0)), (1.0, 1.01, (1.01, 1)), (1.0, 1.035, (1.03, 3)), (1.0, 0.99, (1.0, 0))],
)
def test_missed_deadlines_are_skipped_and_counted_not_burst(deadline, now, expected):
    new_deadline, skipped = skip_missed(deadline, now, 0.01)
    assert skipped == expected[1] and new_deadline == pytest.approx(expected[0])


# ------------------------------------------------------------------------------- the real model
def _tiny_random_policy(tmp_path):
    """The model helper's tiny config, random weights, saved and loaded through load_policy."""
    import torch

    from vla_ros.models import load_policy
    from vla_ros.models.checkpoint import RobotMeta, new_checkpoint, save_checkpoint
    from vla_ros.models.normalization import Normalizer
    from vla_ros.models.vla import make_config

    torch.set_num_threads(1)
    names = list(default_spec().action_names)
    torch.manual_seed(0)
    ckpt = new_checkpoint(
        make_config("tiny", cameras=["scene", "wrist"]),
        Normalizer.identity(len(names), len(names)),
        RobotMeta(state_names=names, action_names=names, cameras=["scene", "wrist"], action_period=0.1),
    )
    save_checkpoint(tmp_path / "tiny", ckpt)
    return load_policy(tmp_path / "tiny", threads=1)


def test_worker_runs_the_real_model(tmp_path):
    policy = _tiny_random_policy(tmp_path)
    with Run(policy, max_starved_s=30.0) as run:
        goal_id = run.start_goal()
        assert wait_until(lambda: run.rt.stats()["inferences"] >= 2, 60.0), run.rt.stats()
        assert wait_until(lambda: any(c.reason == "action" for c in run.commands), LIVENESS_S)
        assert run.rt.cancel_goal(goal_id)
        stats = run.rt.stats()
        assert stats["inference_errors"] == 0 and stats["latency_p50_s"] > 0
    assert run.results[-1].reason is TerminationReason.CANCELED
    actions = [c for c in run.commands if c.reason == "action"]
    assert all(np.all(np.isfinite(c.positions)) and c.positions.shape == (6,) for c in actions)


def test_a_truncated_instruction_is_named_in_the_goal_result(tmp_path):
    """The model keeps max_instruction_tokens; the rest is dropped, and the result says so."""
    policy = _tiny_random_policy(tmp_path)
    limit = policy.model.config.max_instruction_tokens
    with Run(policy, max_starved_s=30.0) as run:
        goal_id = run.start_goal()
        assert wait_until(lambda: run.rt.stats()["inferences"] >= 1, 60.0)
        assert run.rt.cancel_goal(goal_id)
        decision = run.rt.start_goal("stack the cubes " * 100)  # 1600 bytes
        assert wait_until(lambda: run.rt.stats()["inferences"] >= 2, 60.0)
        assert run.rt.cancel_goal(decision.goal_id)
        assert wait_until(lambda: len(run.results) == 2, LIVENESS_S)
    short, long = run.results[:2]
    assert "truncated" not in short.message
    assert f"instruction truncated to the model's {limit} tokens ({1601 - limit} dropped)" in long.message


def test_ring_buffer_keeps_the_last_samples_oldest_first():
    ring = RingBuffer(4)
    assert len(ring) == 0 and ring.values().size == 0
    for value in (1.0, 2.0, 3.0):
        ring.append(value)
    assert ring.values().tolist() == [1.0, 2.0, 3.0]
    for value in (4.0, 5.0, 6.0):
        ring.append(value)
    assert ring.values().tolist() == [3.0, 4.0, 5.0, 6.0] and len(ring) == 4 and ring.count == 6
    snapshot = ring.values()
    ring.append(7.0)
    assert snapshot.tolist() == [3.0, 4.0, 5.0, 6.0]  # a copy, not a view


@pytest.mark.parametrize("offset", [0, 1])
def test_rtc_hands_the_policy_the_buffered_actions_due_at_the_new_chunks_times(offset):
    """committed_actions: the buffer's actions at obs.stamp + (k + action_offset_steps) * dt, and as
    delay the actions due before now + the p95 of the recent latencies."""
    import math
    from dataclasses import replace

    from vla_ros.core.policy import ActionChunk
    from vla_ros.core.scripted_policy import default_spec, make_observation

    policy = ScriptedPolicy(spec=replace(default_spec(), action_offset_steps=offset))
    spec = policy.spec
    rt = Runtime(policy, RuntimeConfig(real_time_chunking=True), lambda _cmd: None)
    worker, dt, H = rt.worker, spec.action_period, spec.chunk_size
    actions = np.arange(H * spec.action_dim, dtype=np.float64).reshape(H, spec.action_dim)
    assert worker.buffer.insert(ActionChunk(10.0, actions, dt), 10.0, tag=worker.buffer.tag).accepted
    for latency in (0.1, 0.1, 0.25):
        worker.latencies.add(latency)
    obs = make_observation(spec, 10.0 + 3 * dt)
    now = obs.stamp + 0.01
    committed = worker.committed_actions(obs, now, spec)
    np.testing.assert_allclose(committed.actions, actions[3 + offset:])
    expected = math.ceil((0.01 + worker.latencies.percentile(95) - offset * dt) / dt)
    assert committed.delay_steps == expected and 0 < expected < H - 3
    # nothing buffered at the new chunk's times: nothing committed
    assert worker.committed_actions(make_observation(spec, 10.0 + H * dt + 1.0), now, spec) is None


@pytest.mark.parametrize("rtc", [True, False])
def test_observations_carry_the_committed_actions_only_with_real_time_chunking(rtc):
    class Recording(ScriptedPolicy):
        def predict_chunk(self, observation, context):
            self.seen.append(observation.committed)
            return super().predict_chunk(observation, context)

    policy = Recording()
    policy.seen = []
    with Run(policy, real_time_chunking=rtc, refill_margin_s=policy.spec.chunk_duration) as run:
        run.start_goal()
        assert wait_until(lambda: len(policy.seen) >= 4, LIVENESS_S)
    assert policy.seen[0] is None  # the goal's first chunk has nothing to agree with
    later = [c for c in policy.seen[1:] if c is not None]
    if rtc:
        assert later and all(c.actions.shape[1] == policy.spec.action_dim for c in later)
    else:
        assert later == []


def _pipelined_runtime(max_inflight: int):
    from vla_ros.core.scripted_policy import make_observation
    from vla_ros.sim.executor import SimulatedClock

    policy = ScriptedPolicy()  # latency 0: the simulated clock says when each chunk lands
    clock = SimulatedClock()
    config = RuntimeConfig(max_inflight=max_inflight, refill_margin_s=0.05)
    rt = Runtime(policy, config, lambda _cmd: None, clock=clock)

    def observe(t: float) -> None:
        clock.now = t
        rt.submit_observation(make_observation(policy.spec, t))

    observe(0.0)
    assert rt.start_goal("follow the script").accepted
    return rt, rt.worker, observe


def test_pipelined_inferences_start_when_the_promised_future_runs_short_and_stay_within_the_bound():
    """One chunk (1 s) takes 0.8 s: the next starts as soon as the buffer's future is shorter than
    the latency + margin, a third only once the one in flight promises too little, never more
    than max_inflight, and a chunk that lands after a newer one is dropped."""
    rt, worker, observe = _pipelined_runtime(max_inflight=2)
    first = worker.begin()
    assert first is not None and worker.begin() is None  # no latency estimate yet: one at a time
    assert worker.land(first, 0.8)
    observe(0.8)
    a = worker.begin()  # the buffer covers 0.2 s < 0.8 + 0.05
    assert a is not None and worker.in_flight == 1
    observe(0.81)
    assert worker.begin() is None  # `a` will cover until 1.8: enough for now
    observe(0.96)
    b = worker.begin()  # 1.8 - 0.96 < 0.85: a second one in flight
    assert b is not None and worker.in_flight == 2
    observe(1.2)
    assert worker.begin() is None  # max_inflight reached
    assert worker.land(b, 1.76) and not worker.land(a, 1.78)  # `a` is older than what landed
    assert worker.superseded == 1 and worker.in_flight == 0


def test_one_inference_in_flight_by_default():
    rt, worker, observe = _pipelined_runtime(max_inflight=1)
    assert worker.land(worker.begin(), 0.8)
    observe(0.8)
    assert worker.begin() is not None
    observe(0.96)
    assert worker.begin() is None and worker.in_flight == 1


def test_real_time_chunking_refuses_pipelining_by_name():
    with pytest.raises(ValueError, match="real_time_chunking needs max_inflight 1"):
        RuntimeConfig(real_time_chunking=True, max_inflight=2).validate()
