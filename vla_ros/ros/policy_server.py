"""policy_server: the model on a GPU host (or any other), served over DDS to vla_node on the robot.

    ros2 run vla_ros policy_server --ros-args -p checkpoint_dir:=/path/ckpt -p device:=cuda
    ros2 launch vla_ros policy_server.launch.py checkpoint:=/path/ckpt device:=cuda

vla_node with `policy_process: remote` and `policy_server: /policy_server` drives it; the topics,
services and QoS are in `vla_ros/ros/remote_transport.py`. The server answers every complete
observation (all cameras, the joint state and, from a client that sends them, the committed actions
for real-time chunking, with one stamp) with one PolicyChunk, newest first: an
observation that arrives while the model runs replaces any older one still waiting. The
instruction is encoded once per goal (~/encode_instruction) and its prefix KV cache is used for
every observation until the next one. A model error on an observation is sent back in the chunk's
`error` field (the client faults its goal with it); the server stays up. What the model does with
committed actions (Policy.real_time_chunking()) is in the read-only parameters real_time_chunking
and real_time_chunking_max_guidance, which a client asking for real-time chunking checks at start.

Threads: one executor thread (services, observation callbacks; ros/executors.py) and one model
thread; a lock makes the policy's calls one at a time, as the Policy contract asks.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
import traceback

import message_filters
import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from vla_ros.core.policy import InstructionContext, Observation, Policy
from vla_ros.ros import interface_fields, remote_transport
from vla_ros.ros.executors import low_latency_executor
from vla_ros.ros.image_conversion import image_msg_to_rgb

PARAMETERS = (  # name, default, description
    ("checkpoint_dir", "", "Model checkpoint directory; empty = the default checkpoint"),
    ("device", "cpu", "Torch device for inference ('cpu', 'cuda', 'cuda:N')"),
    ("dtype", "float32", "Inference dtype (float32, float16, bfloat16)"),
    ("torch_threads", 1, "Torch intra-op threads"),
    ("policy_factory", "", "Instead of a checkpoint, 'module:callable' returning a Policy (e.g. "
     "vla_ros.core.scripted_policy:scripted_policy, a model-free policy to measure the transport)"),
    ("policy_factory_args", "{}", "Keyword arguments of policy_factory, as a JSON object"),
    ("rtc", "", "Real-time chunking of a flow-head checkpoint's model: exact, cheap, prefix (a model "
     "trained with --rtc-train-delay) or off; empty = the backend's default (torch exact, "
     "onnxruntime cheap). vla_node's real_time_chunking must match"),
    ("rtc_max_guidance", 5.0, "Real-time chunking: cap on the guidance weight (vla_node's must match)"),
)
# Read-only, set from the served policy (Policy.real_time_chunking()) once it is loaded.
RTC_MODE_PARAMETER, RTC_GUIDANCE_PARAMETER = remote_transport.RTC_PARAMETERS


class PolicyServer(Node):
    """Serves ``policy`` (or the model its parameters name) under this node's name."""

    def __init__(self, node_name: str = "policy_server", *, policy: Policy | None = None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, default, description in PARAMETERS:  # (rtc: `-p rtc:=off` arrives as false)
            self.declare_parameter(name, default, ParameterDescriptor(description=description,
                                                                      dynamic_typing=name == "rtc"))
        chunk_type, encode_type, describe_type, committed_type, why = (
            interface_fields.load_remote_interfaces())
        if chunk_type is None:
            raise RuntimeError(f"policy_server needs this package's generated interfaces: {why}")
        self._chunk_type = chunk_type
        self.policy = policy or self._load()
        spec = self.policy.spec
        mode, guidance = self.policy.real_time_chunking()
        self.declare_parameter(RTC_MODE_PARAMETER, str(mode), ParameterDescriptor(
            read_only=True, description="What the served model does with committed actions: off (ignores "
            "them), cheap or exact (real-time chunking); set by the server"))
        self.declare_parameter(RTC_GUIDANCE_PARAMETER, float(guidance), ParameterDescriptor(
            read_only=True, description="The served model's cap on the RTC guidance weight (0 when off)"))
        self._taken: tuple[int, bool] | None = None  # the newest observation's stamp (ns), full or plain
        self._committed_checked = (float("-inf"), False)  # (when, whether a committed publisher exists)
        self._lock = threading.Lock()  # one policy call at a time
        self._context: InstructionContext | None = None
        self._pending: tuple | None = None  # (Observation, its header stamp, completed at)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.answered = 0
        self._chunk_pub = self.create_publisher(chunk_type, "~/chunk", remote_transport.CHUNK_QOS)
        self.create_service(describe_type, "~/describe",
                            lambda _req, resp: remote_transport.describe(resp, spec))
        self.create_service(encode_type, "~/encode_instruction", self._on_encode)
        self.create_service(Trigger, "~/reset", self._on_reset)
        base = f"{self.get_fully_qualified_name()}"
        subs = [message_filters.Subscriber(self, Image, remote_transport.observation_topic(base, cam),
                                           qos_profile=remote_transport.OBSERVATION_QOS)
                for cam in spec.cameras]
        subs.append(message_filters.Subscriber(self, JointState,
                                               remote_transport.observation_topic(base, "joint_states"),
                                               qos_profile=remote_transport.OBSERVATION_QOS))
        # A client that knows ~/observation/committed sends it with every observation: then the
        # observation is complete with it (full); a client from before sends none (plain).
        self._committed_topic = remote_transport.observation_topic(base, remote_transport.COMMITTED)
        committed = message_filters.Subscriber(self, committed_type, self._committed_topic,
                                               qos_profile=remote_transport.OBSERVATION_QOS)
        self._sync = message_filters.TimeSynchronizer([*subs, committed], queue_size=4)
        self._sync.registerCallback(lambda *msgs: self._on_observation(msgs[:-1], msgs[-1]))
        self._plain_sync = message_filters.TimeSynchronizer(subs, queue_size=4)
        self._plain_sync.registerCallback(self._on_plain_observation)
        self._thread = threading.Thread(target=self._run, name="policy_server-model", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"serving {len(spec.action_names)} actions x {spec.chunk_size} every {spec.action_period:g} s "
            f"from cameras {list(spec.cameras)} at {spec.image_size[1]}x{spec.image_size[0]}")

    def _load(self) -> Policy:
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        if value("policy_factory"):
            module, _, attr = value("policy_factory").partition(":")
            factory = getattr(importlib.import_module(module), attr)
            return factory(**json.loads(value("policy_factory_args") or "{}"))
        from vla_ros.models import load_policy

        return load_policy(value("checkpoint_dir") or None, device=value("device"), dtype=value("dtype"),
                           threads=int(value("torch_threads")), rtc=_rtc_option(value("rtc")),
                           rtc_max_guidance=float(value("rtc_max_guidance")))

    # ------------------------------------------------------------------------ services
    def _on_encode(self, request, response):
        try:
            with self._lock:  # (the client resets through ~/reset at each goal start)
                context = self.policy.encode_instruction(request.instruction)
                self._context, self._pending = context, None
        except Exception as exc:
            return interface_fields.fill(response, interface_fields.ENCODE_RESPONSE, success=False,
                                         message=f"{type(exc).__name__}: {exc}")
        return interface_fields.fill(response, interface_fields.ENCODE_RESPONSE, success=True,
                                     num_tokens=context.num_tokens, truncated=context.truncated,
                                     dropped_tokens=context.dropped_tokens)

    def _on_reset(self, _request, response):
        try:
            with self._lock:
                self.policy.reset()
        except Exception as exc:
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
            return response
        response.success = True
        return response

    # ------------------------------------------------------------------------ observations
    def _on_plain_observation(self, *msgs) -> None:
        """Images and state without committed actions: from a client that sends none (one from
        before them); a client that publishes them is answered by the full synchronizer. (The graph
        is asked at most once a second: 45 us a query here, on every observation otherwise.)"""
        now = time.monotonic()
        if now - self._committed_checked[0] > 1.0:
            self._committed_checked = (now, self.count_publishers(self._committed_topic) > 0)
        if not self._committed_checked[1]:
            self._on_observation(msgs, None)

    def _on_observation(self, msgs, committed_msg) -> None:
        completed = time.monotonic()
        spec = self.policy.spec
        stamp = msgs[-1].header.stamp
        key, full = stamp.sec * 1_000_000_000 + stamp.nanosec, committed_msg is not None
        if self._taken == (key, not full):  # both synchronizers completed it (while discovery settles)
            return
        self._taken = (key, full)
        try:
            images = {cam: image_msg_to_rgb(msg) for cam, msg in zip(spec.cameras, msgs[:-1], strict=True)}
            state = remote_transport.state_from(msgs[-1], spec.state_names)
            committed = (None if committed_msg is None
                         else remote_transport.committed_from(committed_msg, spec.action_dim))
        except ValueError as exc:
            self._answer(stamp, error=f"bad observation: {exc}")
            return
        obs = Observation(stamp=stamp.sec + stamp.nanosec * 1e-9, images=images, state=state,
                          committed=committed)
        self._pending = (obs, stamp, completed)  # the stamp message is echoed exactly
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(0.1):
                continue
            self._wake.clear()
            pending, self._pending = self._pending, None
            if pending is None:
                continue
            obs, stamp, completed = pending
            started = time.monotonic()
            try:
                with self._lock:
                    if self._context is None:
                        raise RuntimeError("no instruction encoded yet (call ~/encode_instruction first)")
                    chunk = self.policy.predict_chunk(obs, self._context)
                actions = np.asarray(chunk.actions, dtype=np.float64)
            except Exception as exc:
                self.get_logger().warning(f"model failed: {type(exc).__name__}: {exc}\n"
                                          f"{traceback.format_exc()}")
                self._answer(stamp, error=f"{type(exc).__name__}: {exc}")
                continue
            self._answer(stamp, actions=actions, dt=chunk.dt, queue_s=started - completed,
                         model_s=time.monotonic() - started, completed=completed)

    def _answer(self, stamp, *, error: str = "", actions: np.ndarray | None = None, dt: float = 0.0,
                queue_s: float = 0.0, model_s: float = 0.0, completed: float | None = None) -> None:
        msg = self._chunk_type()
        msg.header.stamp = stamp
        values = dict(action_names=self.policy.spec.action_names, dt=dt, queue_s=queue_s, model_s=model_s,
                      error=error, actions=[] if actions is None else actions.reshape(-1))
        values["total_s"] = 0.0 if completed is None else time.monotonic() - completed
        interface_fields.fill(msg, interface_fields.POLICY_CHUNK, **values)
        self._chunk_pub.publish(msg)
        self.answered += 1

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5.0)


def _rtc_option(value) -> str | None:
    """The rtc parameter for load_policy: None (empty: the backend's default) or a mode; YAML reads
    an unquoted off as false."""
    if value is False:
        return "off"
    return str(value) or None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    rclpy.init(args=argv)
    try:
        node = PolicyServer()
    except Exception as exc:
        print(f"policy_server: could not start: {type(exc).__name__}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    # One callback at a time: every callback is short (the model runs in its own thread), and
    # rclpy's MultiThreadedExecutor added 70 ms p50 / 740 ms p99 to an idle ping-pong here.
    executor, executor_name = low_latency_executor()
    node.get_logger().info(f"spinning a {executor_name}")
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
