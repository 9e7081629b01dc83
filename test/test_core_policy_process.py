"""The policy in its own process (core/policy_process.py): same chunks as in-process, images intact,
and every way the worker can fail (killed, hung, garbage, failing to start) ends the goal in a named
FAULT with the arm holding, and the next goal runs on a restarted worker."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from core_doubles import ImageProbePolicy, ObservationFeeder, wait_until

from vla_ros.core.policy import Observation
from vla_ros.core.policy_process import ChildProcessPolicy, PolicyProcessError
from vla_ros.core.runtime import Runtime, RuntimeConfig, TerminationReason
from vla_ros.core.scripted_policy import make_observation

SCRIPTED = "vla_ros.core.scripted_policy:ScriptedPolicy"


def random_observation(spec, stamp: float, size: tuple[int, int], seed: int) -> Observation:
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (*size, 3), dtype=np.uint8) for cam in spec.cameras}
    return Observation(stamp, images, rng.normal(size=spec.state_dim).astype(np.float32))


def test_the_child_returns_the_local_chunks_and_gets_every_image_byte():
    child = ChildProcessPolicy("core_doubles:ImageProbePolicy")
    local = ImageProbePolicy()
    try:
        assert child.spec == local.spec
        text = "pick up the red cube"
        ctx, local_ctx = child.encode_instruction(text), local.encode_instruction(text)
        assert ctx.num_tokens == local_ctx.num_tokens == 5
        # 64x64 then 224x224 (the shared memory grows) then 64x64 again
        for seed, size in enumerate([(64, 64), (224, 224), (64, 64)]):
            obs = random_observation(child.spec, 10.0 + seed, size, seed)
            chunk, expected = child.predict_chunk(obs, ctx), local.predict_chunk(obs, local_ctx)
            np.testing.assert_array_equal(chunk.actions, expected.actions)
            assert chunk.t_obs == obs.stamp and chunk.dt == expected.dt
            sent = {cam: hashlib.sha256(img.tobytes()).hexdigest() for cam, img in obs.images.items()}
            assert chunk.info["images"] == sent
            np.testing.assert_array_equal(np.float32(chunk.info["state"]), obs.state)
    finally:
        child.close()
    assert child.process_info()["state"] == "closed" and child.process_info()["pid"] == 0


def test_an_exception_in_the_child_policy_is_reported_and_the_worker_stays():
    child = ChildProcessPolicy(SCRIPTED, {"raise_on": (0,)})
    try:
        ctx = child.encode_instruction("go")
        obs = make_observation(child.spec, 1.0)
        with pytest.raises(PolicyProcessError, match="PolicyFault: ScriptedPolicy told to fail on call 0"):
            child.predict_chunk(obs, ctx)
        pid = child.process_info()["pid"]
        assert child.predict_chunk(obs, ctx).actions.shape == (10, 6)
        assert child.process_info()["pid"] == pid and child.process_info()["failures"] == 0
    finally:
        child.close()


def test_the_child_says_what_its_policy_does_with_committed_actions():
    """Policy.real_time_chunking() of the child's policy, from its ready message."""
    flow_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                            "tiny_flow")
    child = ChildProcessPolicy("vla_ros.models.policy:load_policy",
                               {"checkpoint_dir": flow_dir, "rtc": "cheap", "rtc_max_guidance": 2.0})
    try:
        assert child.real_time_chunking() == ("cheap", 2.0)
    finally:
        child.close()
    assert child.real_time_chunking() == ("off", 0.0)  # none runs
    scripted = ChildProcessPolicy(SCRIPTED)
    try:
        assert scripted.real_time_chunking() == ("off", 0.0)
    finally:
        scripted.close()


def test_a_factory_that_fails_names_its_cause():
    with pytest.raises(PolicyProcessError, match="could not start.*no_such_module"):
        ChildProcessPolicy("no_such_module:make")
    missing = "CheckpointError: /nonexistent/checkpoint: checkpoint directory does not exist"
    with pytest.raises(PolicyProcessError, match=missing):
        ChildProcessPolicy("vla_ros.models.policy:load_policy", {"checkpoint_dir": "/nonexistent/checkpoint"})


class Rig:
    """A threaded Runtime on the wall clock, its policy in a child process, a 30 Hz camera."""

    def __init__(self, **child_options):
        self.policy = ChildProcessPolicy(SCRIPTED, child_options.pop("kwargs", {}), **child_options)
        self.commands, self.results = [], []
        config = RuntimeConfig(control_rate_hz=50.0, max_starved_s=5.0, observation_max_age_s=1.0)
        self.rt = Runtime(self.policy, config, self.commands.append, on_result=self.results.append)
        self.feeder = ObservationFeeder(self.rt, self.policy.spec)

    def __enter__(self):
        self.feeder.__enter__()
        self.rt.start()
        assert wait_until(lambda: self.rt.feedback().state != "waiting", 5.0)
        return self

    def __exit__(self, *exc):
        self.rt.stop()
        self.feeder.__exit__()
        self.policy.close()

    def goal(self):
        assert wait_until(lambda: self.policy.process_info()["state"] in ("ready", "given up"), 10.0)
        decision = self.rt.start_goal("wave the arm")
        assert decision.accepted, decision
        return decision.goal_id

    def result(self, goal_id, timeout=10.0):
        ended = wait_until(lambda: any(r.goal_id == goal_id for r in self.results), timeout)
        assert ended, f"goal {goal_id} did not end"
        return next(r for r in self.results if r.goal_id == goal_id)

    def assert_holds_after(self, start: int):
        assert wait_until(lambda: len(self.commands) > start + 10, 5.0)
        after = self.commands[start:]
        assert all(c.held for c in after)
        assert np.all(np.array([c.positions for c in after]) == after[0].positions)


def test_a_killed_worker_faults_the_goal_the_arm_holds_and_the_next_goal_runs_on_a_new_one():
    with Rig(kwargs={"latency_s": 0.02}) as rig:
        goal = rig.goal()
        assert wait_until(lambda: rig.rt.stats()["inferences"] >= 3, 10.0)
        pid = rig.policy.process_info()["pid"]
        os.kill(pid, signal.SIGKILL)
        result = rig.result(goal)
        assert result.reason is TerminationReason.FAULT
        assert f"policy process (pid {pid}) died during predict: killed by signal SIGKILL" in result.message
        rig.assert_holds_after(len(rig.commands))
        assert all(np.all(np.isfinite(c.positions)) for c in rig.commands)
        # restarted before the next goal, which runs; until the new worker is ready goals are refused
        if rig.policy.process_info()["state"] != "ready":
            refused = rig.rt.start_goal("wave the arm")
            assert not refused.accepted and "model not ready: its worker process is" in refused.reason
        goal = rig.goal()
        inferences = rig.rt.stats()["inferences"]
        assert wait_until(lambda: rig.rt.stats()["inferences"] > inferences + 3, 10.0)
        info = rig.policy.process_info()
        assert info["pid"] not in (0, pid) and info["starts"] == 2 and info["failures_in_a_row"] == 0
        assert rig.commands[-1].reason == "action"
        rig.rt.cancel_goal(goal)


def test_a_hung_worker_is_killed_at_the_deadline_and_after_repeated_failures_stays_down():
    with Rig(kwargs={"hang_always": True}, call_timeout_s=0.3, max_restarts=1, backoff_s=0.05) as rig:
        first = rig.result(rig.goal())
        assert first.reason is TerminationReason.FAULT
        assert "did not answer predict within 0.3 s; killed it" in first.message
        rig.assert_holds_after(len(rig.commands))
        assert rig.policy.process_info()["starts"] == 2  # restarted at once after the first failure
        second = rig.result(rig.goal())
        assert "did not answer predict" in second.message
        info = rig.policy.process_info()  # two failures in a row > max_restarts = 1: no more restarts
        assert info["state"] == "given up" and info["starts"] == 2
        refused = rig.rt.start_goal("wave the arm")
        assert not refused.accepted and "worker process is given up after: policy process" in refused.reason
        assert all(np.all(np.isfinite(c.positions)) for c in rig.commands)


@pytest.mark.parametrize("garbage, words", [("nan_on", "non-finite"), ("wrong_shape_on", "shape (10, 5)")])
def test_garbage_from_the_worker_faults_the_goal_and_never_reaches_the_arm(garbage, words):
    with Rig(kwargs={garbage: (1,)}) as rig:
        result = rig.result(rig.goal())
        assert result.reason is TerminationReason.FAULT and words in result.message, result.message
        assert all(np.all(np.isfinite(c.positions)) for c in rig.commands)
        rig.assert_holds_after(len(rig.commands))
        assert rig.policy.process_info()["failures"] == 0  # the process is fine; the goal is not


def test_the_control_process_imports_no_torch_and_the_worker_dies_with_it():
    """The default checkpoint in a child: torch is loaded there, not here; killing this process
    (SIGKILL: no clean-up runs) ends the worker too."""
    script = textwrap.dedent("""
        import os, sys
        from vla_ros.core.policy_process import ChildProcessPolicy
        from vla_ros.core.scripted_policy import make_observation
        policy = ChildProcessPolicy("vla_ros.models.policy:load_policy", {"threads": 1})
        chunk = policy.predict_chunk(make_observation(policy.spec, 0.0), policy.encode_instruction("pick it"))
        pid = policy.process_info()["pid"]
        child_maps = open(f"/proc/{pid}/maps").read()
        print("torch_here", "torch" in sys.modules, "torch_there", "libtorch" in child_maps,
              "shape", chunk.actions.shape, "child", pid, flush=True)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    words = proc.stdout.split()
    assert words[:4] == ["torch_here", "False", "torch_there", "True"], proc.stdout
    child = int(words[-1])
    assert wait_until(lambda: not _alive(child), 10.0), "the worker outlived its parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_restarts_back_off_doubling_after_the_first():
    """Failure 1: restarted at once; failure 2: after backoff_s; failure 3: after twice that. While
    the restart waits, the process is "down" (the runtime refuses goals)."""
    policy = ChildProcessPolicy(SCRIPTED, {"hang_always": True}, call_timeout_s=0.2, max_restarts=3,
                                backoff_s=0.3)
    try:
        obs, down_s = make_observation(policy.spec, 0.0), []
        for _ in range(3):
            ctx = policy.encode_instruction("go")
            with pytest.raises(PolicyProcessError, match="did not answer predict"):
                policy.predict_chunk(obs, ctx)
            failed = time.monotonic()
            states = {policy.process_info()["state"]}
            assert wait_until(lambda: policy.process_info()["state"] == "ready", 10.0)
            down_s.append(time.monotonic() - failed)
            states.add(policy.process_info()["state"])
        assert down_s[1] >= 0.3 and down_s[2] >= 0.6, down_s
        assert "down" in states or "starting" in states
        assert policy.process_info()["starts"] == 4 and policy.process_info()["failures_in_a_row"] == 3
    finally:
        policy.close()
