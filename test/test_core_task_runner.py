"""Goal lifecycle: exactly one terminal result per goal, cancel from every state, preempt/reject."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.runtime_types import RuntimeConfig, TerminationReason
from vla_ros.core.task_runner import TaskRunner

PERIOD = 0.02  # control tick
DT = 0.1  # action period


def make_runner(**config):
    results = []
    runner = TaskRunner(RuntimeConfig(**config), DT, on_result=results.append)
    return runner, results


operation = st.one_of(
    st.tuples(
        st.just("start"), st.sampled_from(["pick", "place", ""]), st.floats(0, 0.5), st.integers(0, 12)
    ),
    st.tuples(st.just("cancel"), st.one_of(st.none(), st.integers(0, 8))),
    st.tuples(st.just("complete"), st.one_of(st.none(), st.integers(0, 8))),
    st.tuples(st.just("fault"), st.one_of(st.none(), st.integers(0, 8))),
    st.tuples(st.just("estop"),),
    st.tuples(st.just("shutdown"),),
    st.tuples(st.just("tick"), st.booleans(), st.booleans(), st.integers(1, 30)),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(operation, max_size=40), goal_policy=st.sampled_from(["preempt", "reject"]))
def test_every_accepted_goal_gets_exactly_one_terminal_result(ops, goal_policy):
    runner, results = make_runner(goal_policy=goal_policy, max_starved_s=0.3)
    now, accepted = 0.0, []
    for op in ops:
        kind = op[0]
        if kind == "start":
            decision = runner.start_goal(op[1], now, timeout_s=op[2], max_steps=op[3])
            if decision.accepted:
                accepted.append(decision.goal_id)
            else:
                assert decision.goal_id == -1 and decision.reason
        elif kind == "cancel":
            runner.finish(now, TerminationReason.CANCELED, "cancel", op[1])
        elif kind == "complete":
            runner.finish(now, TerminationReason.COMPLETED, "done", op[1])
        elif kind == "fault":
            runner.fault(now, "boom", op[1])
        elif kind == "estop":
            runner.finish(now, TerminationReason.ESTOP, "e-stop")
        elif kind == "shutdown":
            runner.finish(now, TerminationReason.SHUTDOWN, "bye")
        else:
            for _ in range(op[3]):
                now += PERIOD
                runner.on_tick(now, PERIOD, executing=op[1], starved=op[2])
        ids = [r.goal_id for r in results]
        assert len(ids) == len(set(ids)), "a goal ended twice"
        active = runner.active_id
        assert (active in accepted and active not in ids) or active == -1
        assert set(ids) | ({active} - {-1}) == set(accepted), "an accepted goal vanished without a result"
    for r in results:
        assert r.success == (r.reason is TerminationReason.COMPLETED)
        assert r.duration_s >= 0 and r.steps >= 0


def _drive_to(runner: TaskRunner, state: str, now: float) -> int:
    """Put a fresh goal in ``state``: waiting (no chunk yet), running, starved."""
    goal_id = runner.start_goal("pick the red cube", now).goal_id
    if state in ("running", "starved"):
        runner.mark_first_chunk(goal_id, now)
        runner.on_tick(now + PERIOD, PERIOD, executing=True, starved=False)
    if state == "starved":
        runner.on_tick(now + 2 * PERIOD, PERIOD, executing=False, starved=True)
    return goal_id


@pytest.mark.parametrize("state", ["waiting", "running", "starved"])
def test_cancel_from_each_active_state_ends_the_goal_canceled(state):
    runner, results = make_runner()
    goal_id = _drive_to(runner, state, 1.0)
    assert runner.finish(2.0, TerminationReason.CANCELED, "user", goal_id)
    assert [(r.goal_id, r.reason) for r in results] == [(goal_id, TerminationReason.CANCELED)]
    assert runner.active() is None


@pytest.mark.parametrize(
    "ending", [TerminationReason.COMPLETED, TerminationReason.FAULT, TerminationReason.ESTOP, None]
)
def test_cancel_when_idle_or_after_the_end_does_nothing(ending):
    runner, results = make_runner()
    if ending is not None:
        goal_id = _drive_to(runner, "running", 0.0)
        runner.finish(0.5, ending, "ended")
    assert not runner.finish(1.0, TerminationReason.CANCELED, "late cancel")
    assert not runner.finish(1.0, TerminationReason.CANCELED, "late cancel", goal_id=1)
    assert [r.reason for r in results] == ([] if ending is None else [ending])
    if ending is not None:
        assert results[0].goal_id == goal_id


def test_cancel_of_another_goal_id_leaves_the_active_one():
    runner, results = make_runner()
    goal_id = _drive_to(runner, "running", 0.0)
    assert not runner.finish(0.1, TerminationReason.CANCELED, "wrong id", goal_id + 7)
    assert runner.active_id == goal_id and not results


def test_preempt_policy_ends_the_old_goal_preempted():
    runner, results = make_runner(goal_policy="preempt")
    first = runner.start_goal("a", 0.0).goal_id
    decision = runner.start_goal("b", 0.1)
    assert decision.accepted and decision.goal_id != first
    assert [(r.goal_id, r.reason) for r in results] == [(first, TerminationReason.PREEMPTED)]
    assert runner.active_id == decision.goal_id


def test_reject_policy_keeps_the_old_goal():
    runner, results = make_runner(goal_policy="reject")
    first = runner.start_goal("a", 0.0).goal_id
    decision = runner.start_goal("b", 0.1)
    assert not decision.accepted and "busy" in decision.reason
    assert runner.active_id == first and not results


def test_not_ready_and_bad_requests_are_rejected_with_the_reason():
    runner, _ = make_runner()
    assert runner.start_goal("a", 0.0, not_ready="no model: none").reason == "no model: none"
    assert "empty" in runner.start_goal("   ", 0.0).reason
    assert ">= 0" in runner.start_goal("a", 0.0, timeout_s=-1).reason
    assert runner.active() is None


def test_timeout_max_steps_and_starvation_end_goals():
    runner, results = make_runner(max_starved_s=0.1)
    runner.start_goal("timeout", 0.0, timeout_s=0.5)
    t = 0.0
    while runner.active() is not None:
        t += PERIOD
        runner.on_tick(t, PERIOD, executing=True, starved=False)
    assert results[-1].reason is TerminationReason.TIMEOUT and results[-1].duration_s == pytest.approx(0.5)

    runner.start_goal("steps", t, max_steps=3)
    while runner.active() is not None:
        t += PERIOD
        runner.on_tick(t, PERIOD, executing=True, starved=False)
    assert results[-1].reason is TerminationReason.MAX_STEPS and results[-1].steps == 3
    assert results[-1].duration_s == pytest.approx(3 * DT)

    runner.start_goal("starve", t)
    for _ in range(20):
        t += PERIOD
        runner.on_tick(t, PERIOD, executing=False, starved=True)
    assert results[-1].reason is TerminationReason.FAULT and "starved" in results[-1].message
    assert runner.fault_count == 1


def test_racing_threads_still_give_one_result():
    runner, results = make_runner()
    for _ in range(50):
        goal_id = runner.start_goal("race", 0.0).goal_id
        barrier = threading.Barrier(4)

        def end(reason, goal_id=goal_id, barrier=barrier):
            barrier.wait()
            runner.finish(1.0, reason, "race", goal_id)

        reasons = [TerminationReason.CANCELED, TerminationReason.FAULT, TerminationReason.COMPLETED,
                   TerminationReason.ESTOP]  # fmt: skip
        threads = [threading.Thread(target=end, args=(r,)) for r in reasons]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert [r.goal_id for r in results].count(goal_id) == 1


def test_a_fault_result_carries_its_context_once():
    """fault_context (the node's silent or skipped inputs) is appended to a fault's message, unless
    the message already says it; other endings are left as they are."""
    runner, results = make_runner()
    runner.fault_context = lambda: "no messages from wrist"
    assert runner.start_goal("pick", 0.0, 0.0, 0, "").accepted
    runner.fault(0.5, "observations stale")
    assert results[-1].message == "observations stale; no messages from wrist"
    assert runner.start_goal("pick", 1.0, 0.0, 0, "").accepted
    runner.fault(1.5, "stale: no messages from wrist")
    assert results[-1].message == "stale: no messages from wrist"
    assert runner.start_goal("pick", 2.0, 0.0, 0, "").accepted
    runner.finish(2.5, TerminationReason.CANCELED, "canceled on request")
    assert results[-1].message == "canceled on request"
