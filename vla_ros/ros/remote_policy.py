"""``RemotePolicy``: a ``Policy`` whose model runs in a policy_server node, reached over DDS.

vla_node uses it with ``policy_process: remote``. It owns a small node of its own (``<vla_node>_policy``)
spun by its own executor thread (``ros/executors.py``), so the calls below can wait for their answers
from the inference thread, or from vla_node's configure, without depending on vla_node's executor.
What crosses and with which QoS: ``vla_ros/ros/remote_transport.py``.

Failures, reported as ``PolicyProcessError`` (the inference worker faults the goal; the arm holds):
no server within the start timeout; no answer within ``call_timeout_s``; the server's liveliness
lost (it died or the network went: noticed within ``LIVELINESS_LEASE_S`` without a call in
flight, and a call in flight fails at once); an error the server reports. ``process_info()``
says ``ready`` only while the server is alive, so vla_node refuses goals while it is not.
The measured round trip is what the inference worker records as the inference latency, so the
runtime's latency compensation sees the network.

Real-time chunking: an observation's committed actions go to a server that takes them (it has the
read-only parameter real_time_chunking), exactly as the worker computed them. ``rtc`` (vla_node's
real_time_chunking) other than "off" is checked at start against what the server's model does: a
server from before committed actions, a model that ignores them (a regression head, rtc off
there) or another mode or guidance cap is a PolicyProcessError naming both sides.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from vla_ros.core.policy import ActionChunk, InstructionContext, Observation, Policy
from vla_ros.core.policy_process import PolicyProcessError
from vla_ros.ros import interface_fields, remote_transport
from vla_ros.ros.executors import low_latency_executor


class RemotePolicy(Policy):
    def __init__(self, context, server: str, *, node_name: str = "vla_node_policy",
                 call_timeout_s: float = 2.0, start_timeout_s: float = 120.0, rtc: str = "off",
                 rtc_max_guidance: float = 5.0) -> None:
        chunk_type, encode_type, describe_type, committed_type, why = (
            interface_fields.load_remote_interfaces())
        if chunk_type is None:
            raise PolicyProcessError(f"policy_process 'remote' needs the generated interfaces: {why}")
        self.server = server.rstrip("/") or "/policy_server"
        self.call_timeout_s = float(call_timeout_s)
        self._node = rclpy.create_node(node_name, context=context)
        self._executor, self.executor_name = low_latency_executor(context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name="vla_ros-remote-policy", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()  # guards the pending request and its reply
        self._waiting_for: int | None = None  # stamp (ns) of the observation in flight
        self._reply = None
        self._replied = threading.Event()
        self._lost = False  # the chunk publisher's liveliness ended (alive again when it returns)
        self.failures = 0
        self.last_failure = ""
        self._closed = False
        node = self._node
        self._encode = node.create_client(encode_type, f"{self.server}/encode_instruction")
        self._reset = node.create_client(Trigger, f"{self.server}/reset")
        describe = node.create_client(describe_type, f"{self.server}/describe")
        try:
            if not describe.wait_for_service(timeout_sec=start_timeout_s):
                raise PolicyProcessError(f"no policy_server at {self.server} within {start_timeout_s:g} s "
                                         f"(is it running, in ROS_DOMAIN_ID "
                                         f"{context.get_domain_id()}?)")
            self.spec = remote_transport.spec_from(self._call(describe, describe_type.Request(), "describe",
                                                               start_timeout_s))
            # what the server's model does with committed actions; None: a server from before them
            self.server_rtc = self._server_rtc(start_timeout_s)
            self._check_rtc(rtc, float(rtc_max_guidance))
            self._committed_type = committed_type
            self._committed_pub = None if self.server_rtc is None else node.create_publisher(
                committed_type, remote_transport.observation_topic(self.server, remote_transport.COMMITTED),
                remote_transport.OBSERVATION_QOS)
            self._image_pubs = {cam: node.create_publisher(Image, remote_transport.observation_topic(
                self.server, cam), remote_transport.OBSERVATION_QOS) for cam in self.spec.cameras}
            self._state_pub = node.create_publisher(JointState, remote_transport.observation_topic(
                self.server, "joint_states"), remote_transport.OBSERVATION_QOS)
            events = _liveliness_callbacks(self._on_liveliness)
            self._chunk_topic = f"{self.server}/chunk"
            node.create_subscription(chunk_type, self._chunk_topic, self._on_chunk,
                                     remote_transport.CHUNK_QOS, event_callbacks=events)
            if not self._wait_matched(start_timeout_s):
                raise PolicyProcessError(f"policy_server {self.server} answers describe but its topics "
                                         f"were not matched within {start_timeout_s:g} s")
        except BaseException:
            self.close()
            raise

    # --- Policy interface -----------------------------------------------------------------------
    def encode_instruction(self, text: str) -> InstructionContext:
        request = self._encode.srv_type.Request()
        interface_fields.fill(request, interface_fields.ENCODE_REQUEST, instruction=text)
        response = self._call(self._encode, request, "encode_instruction", self.call_timeout_s)
        fields = interface_fields.read(response, interface_fields.ENCODE_RESPONSE)
        if not fields["success"]:
            raise PolicyProcessError(f"policy_server {self.server} could not encode the instruction: "
                                     f"{fields['message']}")
        return InstructionContext(text=text, num_tokens=fields["num_tokens"], truncated=fields["truncated"],
                                  dropped_tokens=fields["dropped_tokens"], cache=self.server)

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        if not self.alive():
            why = self.last_failure or "no chunk publisher"
            self._fail(f"policy_server {self.server} is not alive ({why})")
        if observation.committed is not None and self._committed_pub is None:
            self._fail(f"policy_server {self.server} takes no committed actions (it predates real-time "
                       f"chunking over the network), and this observation carries them")
        stamp = remote_transport.stamp_to_msg(observation.stamp)
        key = stamp.sec * 1_000_000_000 + stamp.nanosec
        with self._lock:
            self._waiting_for, self._reply = key, None
            self._replied.clear()
        for cam, pub in self._image_pubs.items():
            pub.publish(remote_transport.image_msg(observation.images[cam], stamp))
        if self._committed_pub is not None:
            self._committed_pub.publish(remote_transport.committed_msg(self._committed_type,
                                                                       observation.committed, stamp))
        state = remote_transport.joint_state_msg(self.spec.state_names, observation.state, stamp)
        self._state_pub.publish(state)
        if not self._replied.wait(self.call_timeout_s):
            self._fail(f"policy_server {self.server} did not answer within {self.call_timeout_s:g} s")
        with self._lock:
            reply, self._waiting_for = self._reply, None
        if reply == "lost":
            self._fail(f"policy_server {self.server} lost (liveliness) during the call")
        fields = interface_fields.read(reply, interface_fields.POLICY_CHUNK)
        if fields["error"]:
            raise PolicyProcessError(f"in the policy_server {self.server}: {fields['error']}")
        names = tuple(fields["action_names"])
        actions = np.asarray(fields["actions"], dtype=np.float64).reshape(-1, max(len(names), 1))
        info = {"server_queue_s": fields["queue_s"], "server_model_s": fields["model_s"],
                "server_total_s": fields["total_s"]}
        return ActionChunk(t_obs=observation.stamp, actions=actions, dt=fields["dt"], info=info)

    def reset(self) -> None:
        response = self._call(self._reset, Trigger.Request(), "reset", self.call_timeout_s)
        if not response.success:
            raise PolicyProcessError(f"policy_server {self.server} reset failed: {response.message}")

    def process_info(self) -> dict[str, Any]:
        state = "closed" if self._closed else ("ready" if self.alive() else "down")
        return {"state": state, "pid": 0, "starts": 1, "failures": self.failures,
                "failures_in_a_row": 0 if state == "ready" else self.failures,
                "last_failure": self.last_failure, "server": self.server}

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(timeout_sec=1.0)
        self._thread.join(2.0)
        self._node.destroy_node()

    # --- plumbing ---------------------------------------------------------------------------------
    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # the context shut down under the spin (node shutdown)
            self._executor.spin()

    def _call(self, client, request, what: str, timeout_s: float):
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            client.remove_pending_request(future)
            self._fail(f"policy_server {self.server} did not answer {what} within {timeout_s:g} s")
        return future.result()

    def _server_rtc(self, timeout_s: float) -> tuple[str, float] | None:
        """The server's (real_time_chunking, real_time_chunking_max_guidance) parameters; None when it
        has none (a server from before committed actions)."""
        client = self._node.create_client(GetParameters, f"{self.server}/get_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                self._fail(f"policy_server {self.server} has no parameter service (get_parameters)")
            request = GetParameters.Request(names=list(remote_transport.RTC_PARAMETERS))
            values = self._call(client, request, "get_parameters", timeout_s).values
        finally:
            self._node.destroy_client(client)
        if len(values) != 2 or values[0].type != ParameterType.PARAMETER_STRING:
            return None
        return values[0].string_value, values[1].double_value

    def _check_rtc(self, rtc: str, max_guidance: float) -> None:
        """Real-time chunking asked for here (``rtc`` not "off") must be what the server's model does."""
        if rtc == "off":
            return
        asked = f"real_time_chunking {rtc!r}"
        if self.server_rtc is None:
            self._fail(f"{asked} needs a policy_server that takes committed actions; {self.server} predates "
                       f"them (no parameter real_time_chunking): update it, or set real_time_chunking off")
        mode, guidance = self.server_rtc
        if mode == "off":
            self._fail(f"{asked}: the model of policy_server {self.server} ignores committed actions (its "
                       f"real_time_chunking is 'off': a regression head, or the server's rtc off); serve a "
                       f"flow-head checkpoint, or set real_time_chunking off")
        if mode != rtc:
            self._fail(f"{asked}: policy_server {self.server} does {mode!r}; start it with rtc:={rtc}, or "
                       f"set real_time_chunking {mode}")
        if guidance != max_guidance:
            self._fail(f"rtc_max_guidance {max_guidance:g}: policy_server {self.server} caps the guidance at "
                       f"{guidance:g}; start it with rtc_max_guidance:={max_guidance:g}, or set "
                       f"rtc_max_guidance {guidance:g}")

    def _wait_matched(self, timeout_s: float) -> bool:
        """Until the server's chunk publisher and its observation subscriptions are matched (discovery
        takes a moment after describe answered; an observation sent before would be lost)."""
        def matched() -> bool:
            pubs = [*self._image_pubs.values(), self._state_pub]
            if self._committed_pub is not None:
                pubs.append(self._committed_pub)
            return self.alive() and all(pub.get_subscription_count() > 0 for pub in pubs)

        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not matched():
            time.sleep(0.02)
        return matched()

    def _on_chunk(self, msg) -> None:
        with self._lock:
            if self._waiting_for is not None and remote_transport.stamp_of(msg) == self._waiting_for:
                self._reply = msg
                self._replied.set()

    def alive(self) -> bool:
        """The server's chunk publisher is matched and its liveliness has not run out.

        (Liveliness is first asserted with the first chunk, so before it only the match counts; a
        killed server's match lasts DDS's participant lease, 20 s by default, its liveliness 1 s.)"""
        return not self._closed and not self._lost and self._node.count_publishers(self._chunk_topic) > 0

    def _on_liveliness(self, event) -> None:
        self._lost = event.alive_count == 0 and event.not_alive_count > 0
        if self._lost:
            self.last_failure = f"policy_server {self.server} lost (liveliness)"
            with self._lock:
                if self._waiting_for is not None:
                    self._reply = "lost"
                    self._replied.set()

    def _fail(self, message: str):
        self.failures += 1
        self.last_failure = message
        raise PolicyProcessError(message)


def _liveliness_callbacks(callback):
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks  # Jazzy
    except ImportError:
        from rclpy.qos_event import SubscriptionEventCallbacks  # Humble
    return SubscriptionEventCallbacks(liveliness=callback)
