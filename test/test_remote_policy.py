"""The policy on a policy_server over DDS (ros/policy_server.py, ros/remote_policy.py): the same chunks
as in-process with every pixel and state value counted, the server's errors and silence named, and
a lost server noticed by its liveliness. Needs the generated interfaces (Jazzy build)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")

from core_doubles import ImageProbePolicy, wait_until  # noqa: E402

from vla_ros.core.policy import Observation  # noqa: E402
from vla_ros.core.policy_process import PolicyProcessError  # noqa: E402
from vla_ros.core.scripted_policy import ScriptedPolicy  # noqa: E402
from vla_ros.ros.interface_fields import load_remote_interfaces  # noqa: E402

_WHY = load_remote_interfaces()[-1]
if _WHY:
    if os.environ.get("ROS_DISTRO") == "humble":
        pytest.skip(f"no generated interfaces on Humble: {_WHY}", allow_module_level=True)
    raise ImportError(f"the remote interfaces are missing outside Humble; run `make interfaces`: {_WHY}")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from vla_ros.ros.policy_server import PolicyServer  # noqa: E402
from vla_ros.ros.remote_policy import RemotePolicy  # noqa: E402


class Server:
    """A PolicyServer node spun by its own executor thread (in this process; DDS in between)."""

    def __init__(self, context, policy, name="test_policy_server"):
        self.node = PolicyServer(name, policy=policy, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def stop(self):
        self.node.close()
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def observation(spec, stamp, seed):
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (*spec.image_size, 3), dtype=np.uint8) for cam in spec.cameras}
    return Observation(stamp, images, rng.normal(size=spec.state_dim).astype(np.float32))


LEXICON = {"slots": {"task": {"pick": ["pick", "grab"]}, "colour": {"red": ["red"]},
                     "shape": {"cube": ["cube"]}}}


def test_remote_chunks_equal_local_ones_and_carry_the_servers_timings(rclpy_context):
    from dataclasses import replace

    from vla_ros.core.scripted_policy import default_spec

    spec = replace(default_spec(), lexicon=LEXICON, action_offset_steps=1)  # every field crosses
    server = Server(rclpy_context, ImageProbePolicy(spec=spec))
    client = RemotePolicy(rclpy_context, "/test_policy_server", call_timeout_s=5.0, start_timeout_s=20.0)
    try:
        local = ImageProbePolicy(spec=spec)
        assert client.spec == local.spec
        assert client.spec.lexicon == LEXICON  # the node grounds goals against the server's model
        ctx = client.encode_instruction("pick up the red cube")
        assert ctx.num_tokens == 5 and not ctx.truncated
        local_ctx = local.encode_instruction("pick up the red cube")
        for seed in range(3):
            obs = observation(client.spec, 1000.0 + 0.1 * seed, seed)
            chunk = client.predict_chunk(obs, ctx)
            np.testing.assert_array_equal(chunk.actions, local.predict_chunk(obs, local_ctx).actions)
            assert chunk.t_obs == obs.stamp and chunk.dt == client.spec.action_period
            assert chunk.info["server_queue_s"] >= 0 and chunk.info["server_model_s"] > 0
            assert chunk.info["server_total_s"] >= chunk.info["server_model_s"]
        assert client.process_info()["state"] == "ready" and server.node.answered == 3
    finally:
        client.close()
        server.stop()


def test_a_model_error_on_the_server_is_named_and_the_server_stays(rclpy_context):
    server = Server(rclpy_context, ScriptedPolicy(raise_on=(0,)))
    client = RemotePolicy(rclpy_context, "/test_policy_server", call_timeout_s=5.0, start_timeout_s=20.0)
    try:
        ctx = client.encode_instruction("go")
        obs = observation(client.spec, 5.0, 0)
        with pytest.raises(PolicyProcessError, match="in the policy_server /test_policy_server: "
                                                     "PolicyFault: ScriptedPolicy told to fail on call 0"):
            client.predict_chunk(obs, ctx)
        assert client.predict_chunk(observation(client.spec, 5.1, 1), ctx).actions.shape == (10, 6)
    finally:
        client.close()
        server.stop()


def test_a_silent_server_times_out_and_a_lost_one_is_noticed_by_liveliness(rclpy_context):
    policy = ScriptedPolicy(hang_on=(0,))
    server = Server(rclpy_context, policy)
    client = RemotePolicy(rclpy_context, "/test_policy_server", call_timeout_s=0.5, start_timeout_s=20.0)
    try:
        ctx = client.encode_instruction("go")
        with pytest.raises(PolicyProcessError, match="did not answer within 0.5 s"):
            client.predict_chunk(observation(client.spec, 7.0, 0), ctx)
        policy.release()
        server.stop()  # the server goes away: its chunk publisher's liveliness ends
        assert wait_until(lambda: client.process_info()["state"] == "down", 10.0)
        started = time.monotonic()
        with pytest.raises(PolicyProcessError, match="is not alive"):
            client.predict_chunk(observation(client.spec, 8.0, 1), ctx)
        assert time.monotonic() - started < 0.5  # refused at once, not after the call deadline
    finally:
        client.close()


def test_no_server_is_a_clear_start_error(rclpy_context):
    with pytest.raises(PolicyProcessError, match="no policy_server at /nobody_here within 1 s"):
        RemotePolicy(rclpy_context, "/nobody_here", start_timeout_s=1.0)


def test_a_killed_server_process_is_noticed_by_liveliness_within_its_lease(rclpy_context):
    """SIGKILL: no goodbye reaches DDS, the match lasts the participant lease (20 s by default);
    the chunk topic's liveliness lease (LIVELINESS_LEASE_S) is what tells the client."""
    import os
    import signal
    import subprocess
    import sys

    server = subprocess.Popen(
        [sys.executable, "-m", "vla_ros.ros.policy_server", "--ros-args", "-r", "__node:=killed_server",
         "-p", "policy_factory:=vla_ros.core.scripted_policy:scripted_policy"],
        env=dict(os.environ), stderr=subprocess.DEVNULL)
    client = None
    try:
        client = RemotePolicy(rclpy_context, "/killed_server", call_timeout_s=5.0, start_timeout_s=30.0)
        ctx = client.encode_instruction("go")
        assert client.predict_chunk(observation(client.spec, 9.0, 0), ctx).actions.shape == (10, 6)
        server.send_signal(signal.SIGKILL)
        assert wait_until(lambda: client.process_info()["state"] == "down", 10.0)
        # the liveliness event said so (the DDS match itself may last the participant lease)
        assert "lost (liveliness)" in client.process_info()["last_failure"]
    finally:
        if client is not None:
            client.close()
        server.kill()
        server.wait()


def test_diagnostics_name_the_server_and_why_it_is_down():
    from vla_ros.ros.diagnostics import ERROR, OK, policy_status

    info = {"state": "ready", "pid": 0, "starts": 1, "failures": 0, "failures_in_a_row": 0,
            "last_failure": "", "server": "/gpu_host/policy_server"}
    ready = policy_status("vla_node", info)
    assert ready.level == OK and ready.message == "policy_server /gpu_host/policy_server ready"
    lost = "policy_server /gpu_host/policy_server lost (liveliness)"
    down = policy_status("vla_node", {**info, "state": "down", "last_failure": lost})
    assert down.level == ERROR and "lost (liveliness)" in down.message


# --- real-time chunking: the committed actions cross with the observation ----------------------------
FLOW_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                               "tiny_flow")


def flow_policy(rtc="exact"):
    from vla_ros.models import load_policy

    return load_policy(FLOW_CHECKPOINT, rtc=rtc, seed=0, threads=1)  # same seed: the same noise per call


def committed(spec, seed, n=7, delay=3):
    from vla_ros.core.policy import CommittedActions

    rng = np.random.default_rng(100 + seed)
    return CommittedActions(actions=rng.uniform(-0.5, 0.5, (n, spec.action_dim)), delay_steps=delay)


def test_committed_actions_round_trip_through_their_message_exactly():
    from vla_ros.core.policy import CommittedActions
    from vla_ros.core.scripted_policy import default_spec
    from vla_ros.ros import remote_transport

    committed_type = load_remote_interfaces()[3]
    spec, stamp = default_spec(), remote_transport.stamp_to_msg(12.5)
    sent = committed(spec, 0)
    msg = remote_transport.committed_msg(committed_type, sent, stamp)
    assert msg.header.stamp == stamp and msg.present and msg.delay_steps == 3
    got = remote_transport.committed_from(msg, spec.action_dim)
    np.testing.assert_array_equal(got.actions, sent.actions)  # float64 both ways: bit for bit
    assert got.actions.dtype == np.float64 and got.delay_steps == sent.delay_steps
    none = remote_transport.committed_msg(committed_type, None, stamp)
    assert not none.present and remote_transport.committed_from(none, 6) is None
    empty = CommittedActions(np.zeros((0, 6)), 0)  # present, no rows: not the same as none
    got = remote_transport.committed_from(remote_transport.committed_msg(committed_type, empty, stamp), 6)
    assert got.actions.shape == (0, 6) and got.delay_steps == 0
    with pytest.raises(ValueError, match="13 values are not rows of 6"):
        msg.actions = list(range(13))
        remote_transport.committed_from(msg, 6)


def test_a_remote_rtc_chunk_equals_the_local_one_and_follows_the_committed_actions(rclpy_context):
    """The flow checkpoint, exact guidance, the same seed on both sides: every chunk equals the local
    one given the same committed actions, and other committed actions give another chunk."""
    from dataclasses import replace

    server = Server(rclpy_context, flow_policy())
    client = RemotePolicy(rclpy_context, "/test_policy_server", call_timeout_s=30.0, start_timeout_s=20.0,
                          rtc="exact", rtc_max_guidance=5.0)
    try:
        assert client.server_rtc == ("exact", 5.0)
        local = flow_policy()
        ctx = client.encode_instruction("pick up the red cube")
        local_ctx = local.encode_instruction("pick up the red cube")

        # call 0 without committed actions (a goal's first chunk), then 1 and 2 with some: the same
        # noise per call on both sides, so only the committed actions can make a difference
        obs = [observation(client.spec, 2000.0 + 0.1 * i, i) for i in range(3)]
        first, second = committed(client.spec, 1), committed(client.spec, 2)
        sent = [obs[0], replace(obs[1], committed=first), replace(obs[2], committed=second)]
        remote = [client.predict_chunk(o, ctx).actions for o in sent]
        # the local reference gets the same committed actions at calls 0 and 1, and at call 2 the
        # first ones again
        given = [obs[0], replace(obs[1], committed=first), replace(obs[2], committed=first)]
        reference = [local.predict_chunk(o, local_ctx).actions for o in given]
        np.testing.assert_array_equal(remote[0], reference[0])
        np.testing.assert_array_equal(remote[1], reference[1])
        assert not np.allclose(remote[2], reference[2], atol=1e-3)  # other committed actions, other chunk
        # and it is the chunk a local policy makes from the committed actions the server was sent
        # (a fresh one replaying the same calls, so that its noise matches call for call)
        replay = flow_policy()
        replay_ctx = replay.encode_instruction("pick up the red cube")
        replayed = [replay.predict_chunk(o, replay_ctx).actions for o in sent]
        np.testing.assert_array_equal(remote[2], replayed[2])
        assert server.node.answered == 3
    finally:
        client.close()
        server.stop()


def test_rtc_is_refused_by_name_where_the_server_cannot_do_it_as_asked(rclpy_context):
    server = Server(rclpy_context, ScriptedPolicy())  # ignores committed actions
    try:
        with pytest.raises(PolicyProcessError, match=r"real_time_chunking 'cheap': the model of "
                                                     r"policy_server /test_policy_server ignores committed"):
            RemotePolicy(rclpy_context, "/test_policy_server", start_timeout_s=20.0, rtc="cheap")
        client = RemotePolicy(rclpy_context, "/test_policy_server", start_timeout_s=20.0)  # rtc off: fine
        try:
            ctx = client.encode_instruction("go")
            assert client.server_rtc == ("off", 0.0)
            assert client.predict_chunk(observation(client.spec, 3.0, 0), ctx).actions.shape == (10, 6)
        finally:
            client.close()
    finally:
        server.stop()
    server = Server(rclpy_context, flow_policy(rtc="exact"))
    try:
        with pytest.raises(PolicyProcessError, match=r"policy_server /test_policy_server does 'exact'; start "
                                                     r"it with rtc:=cheap, or set real_time_chunking exact"):
            RemotePolicy(rclpy_context, "/test_policy_server", start_timeout_s=20.0, rtc="cheap")
        with pytest.raises(PolicyProcessError, match=r"rtc_max_guidance 2: policy_server /test_policy_server "
                                                     r"caps the guidance at 5"):
            RemotePolicy(rclpy_context, "/test_policy_server", start_timeout_s=20.0, rtc="exact",
                         rtc_max_guidance=2.0)
    finally:
        server.stop()


class OldServer(PolicyServer):
    """A policy_server as it was before committed actions crossed: no real_time_chunking parameters.
    (Its code is today's otherwise, so it also shows a new server answering a client that sends no
    committed actions.)"""

    def declare_parameter(self, name, *args, **kwargs):
        from vla_ros.ros.remote_transport import RTC_PARAMETERS

        if name in RTC_PARAMETERS:
            return None
        return super().declare_parameter(name, *args, **kwargs)


def test_a_server_from_before_committed_actions_is_named_when_rtc_needs_them(rclpy_context):
    from vla_ros.core.policy import CommittedActions

    server = Server.__new__(Server)
    server.node = OldServer("test_policy_server", policy=ScriptedPolicy(), context=rclpy_context)
    server.executor = SingleThreadedExecutor(context=rclpy_context)
    server.executor.add_node(server.node)
    server.thread = threading.Thread(target=server.executor.spin, daemon=True)
    server.thread.start()
    try:
        with pytest.raises(PolicyProcessError, match=r"real_time_chunking 'exact' needs a policy_server "
                                                     r"that takes committed actions; /test_policy_server "
                                                     r"predates"):
            RemotePolicy(rclpy_context, "/test_policy_server", start_timeout_s=20.0, rtc="exact")
        client = RemotePolicy(rclpy_context, "/test_policy_server", call_timeout_s=5.0, start_timeout_s=20.0)
        try:
            assert client.server_rtc is None
            ctx = client.encode_instruction("go")
            obs = observation(client.spec, 4.0, 0)
            assert client.predict_chunk(obs, ctx).actions.shape == (10, 6)  # no committed topic at all
            with pytest.raises(PolicyProcessError, match="takes no committed actions .* and this observation "
                                                         "carries them"):
                client.predict_chunk(Observation(4.1, obs.images, obs.state,
                                                 CommittedActions(np.zeros((2, 6)), 1)), ctx)
        finally:
            client.close()
    finally:
        server.stop()


class CommittedRecorder(ScriptedPolicy):
    """A ScriptedPolicy that does real-time chunking (says so) and records each observation's
    committed actions as the server's model receives them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def real_time_chunking(self):
        return "exact", 5.0

    def predict_chunk(self, observation, context):
        self.seen.append(observation.committed)
        return super().predict_chunk(observation, context)


def test_vla_node_with_real_time_chunking_sends_the_workers_committed_actions_to_the_server(rclpy_context):
    """vla_node's runtime through DDS: the goal's first inference carries none, later ones the
    buffered actions (whole rows of the model's actions, a delay within them)."""
    from node_harness import Rig

    recorder = CommittedRecorder()
    server = Server(rclpy_context, recorder)
    client = RemotePolicy(rclpy_context, "/test_policy_server", call_timeout_s=5.0, start_timeout_s=20.0,
                          rtc="exact")
    rig = Rig(rclpy_context, policy=client, real_time_chunking="exact")
    try:
        rig.start_moving()  # configure, activate, a goal
        assert wait_until(lambda: sum(c is not None for c in recorder.seen) >= 3, 10.0), recorder.seen
        assert recorder.seen[0] is None  # the goal's first chunk: nothing buffered yet
        for committed in (c for c in recorder.seen if c is not None):
            n = len(committed.actions)
            assert committed.actions.shape == (n, 6) and 0 < n <= 10
            assert np.all(np.isfinite(committed.actions))
            assert 0 <= committed.delay_steps <= n
    finally:
        rig.close()
        client.close()
        server.stop()


def test_vla_node_with_real_time_chunking_refuses_a_server_that_ignores_committed_actions(rclpy_context):
    from node_harness import node_parameters

    from vla_ros.ros.vla_node import VlaNode

    server = Server(rclpy_context, ScriptedPolicy())
    node = VlaNode("rtc_vla", context=rclpy_context, parameter_overrides=node_parameters(
        policy_process="remote", policy_server="/test_policy_server", real_time_chunking="cheap",
        policy_start_timeout_s=20.0))
    try:
        assert not node.autostart()
        assert ("real_time_chunking 'cheap': the model of policy_server /test_policy_server ignores "
                "committed actions") in node.last_error
    finally:
        node.destroy_node()
        server.stop()
