"""What crosses between vla_node (policy_process: remote) and a policy_server, in one place.

Names, relative to the server node (default /policy_server):
  ~/describe            vla_ros/srv/DescribePolicy     the model's PolicySpec
  ~/encode_instruction  vla_ros/srv/EncodeInstruction  once per goal; the prefix KV cache stays there
  ~/reset               std_srvs/srv/Trigger           Policy.reset
  ~/observation/<cam>   sensor_msgs/Image (rgb8)       one per camera, at the model's image size
  ~/observation/joint_states  sensor_msgs/JointState   the state, in the model's state order
  ~/observation/committed     vla_ros/msg/CommittedActions  what the robot is committed to
                        (real-time chunking; ``present`` false when the observation has none)
  ~/chunk               vla_ros/msg/PolicyChunk        the answer, stamped with the observation's stamp
  parameters real_time_chunking, real_time_chunking_max_guidance (read-only; ~/get_parameters):
                        what the server's model does with committed actions (Policy.real_time_chunking())

One observation = one message on each observation topic, all with the same header stamp (the
server pairs them with message_filters' exact-time synchronizer). Images are resized to the
model's input on the robot side, so a 64x64 camera costs 12 kB per frame whatever the camera's
resolution. A server that has the real_time_chunking parameter takes ~/observation/committed,
and the client then publishes it with every observation (present or not: 28 bytes when not), so
the pairing stays exact and never guesses whether one is coming. A client from before it publishes
none, and the server pairs images and state alone while the committed topic has no publisher.
Against a server without the parameter (from before) the client publishes none, refuses
observations that carry committed actions, and refuses real_time_chunking at start, by name.

QoS (``OBSERVATION_QOS``, ``CHUNK_QOS``): reliable, keep last 1: only the newest observation
matters and a lost one would cost a whole call deadline, while a reliable depth-1 writer never
queues old frames behind new ones. The chunk publisher asserts liveliness automatically with a
lease of ``LIVELINESS_LEASE_S``: a server that dies or loses the network is noticed by the client
within that lease (about one chunk period of the default model), without a call in flight.
"""

from __future__ import annotations

import json

import numpy as np
from rclpy.duration import Duration
from rclpy.qos import LivelinessPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState

from vla_ros.core.grounding import Lexicon
from vla_ros.core.policy import CommittedActions, PolicySpec
from vla_ros.ros.interface_fields import COMMITTED_ACTIONS, DESCRIBE_RESPONSE, fill, read

LIVELINESS_LEASE_S = 1.0
OBSERVATION_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
CHUNK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       liveliness=LivelinessPolicy.AUTOMATIC,
                       liveliness_lease_duration=Duration(seconds=LIVELINESS_LEASE_S))


COMMITTED = "committed"  # observation_topic(server, COMMITTED): the CommittedActions topic
# The server's read-only parameters saying what its model does with committed actions.
RTC_PARAMETERS = ("real_time_chunking", "real_time_chunking_max_guidance")


def observation_topic(server: str, name: str) -> str:
    return f"{server}/observation/{name}"


def stamp_to_msg(seconds: float):
    """Seconds (the client's runtime clock, echoed back unchanged) -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_of(msg) -> int:
    """A header stamp as integer nanoseconds (exact: the key that pairs a chunk with its request)."""
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def image_msg(rgb: np.ndarray, stamp) -> Image:
    height, width = rgb.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3,
                data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    msg.header.stamp = stamp
    return msg


def joint_state_msg(names: tuple[str, ...], state: np.ndarray, stamp) -> JointState:
    msg = JointState(name=list(names), position=[float(v) for v in state])
    msg.header.stamp = stamp
    return msg


def committed_msg(msg_type, committed: CommittedActions | None, stamp):
    """A CommittedActions message (``msg_type``, the generated type) for ``committed`` (None: present
    false). Values go as float64, so they arrive exactly as the worker computed them."""
    msg = msg_type()
    msg.header.stamp = stamp
    if committed is not None:
        actions = np.asarray(committed.actions, dtype=np.float64)
        fill(msg, COMMITTED_ACTIONS, present=True, delay_steps=committed.delay_steps,
             actions=actions.reshape(-1))
    return msg


def committed_from(msg, action_dim: int) -> CommittedActions | None:
    """The CommittedActions of a message; raises ValueError when its actions are not whole rows of
    ``action_dim`` or it says present false but carries some."""
    fields = read(msg, COMMITTED_ACTIONS)
    actions = np.asarray(fields["actions"], dtype=np.float64)
    if not fields["present"]:
        if len(actions) or fields["delay_steps"]:
            raise ValueError("committed actions with present false carry values")
        return None
    if action_dim <= 0 or len(actions) % action_dim:
        raise ValueError(f"committed actions: {len(actions)} values are not rows of {action_dim} actions")
    return CommittedActions(actions=actions.reshape(-1, action_dim), delay_steps=int(fields["delay_steps"]))


def state_from(msg: JointState, names: tuple[str, ...]) -> np.ndarray:
    """The state in ``names`` order; raises ValueError naming what is missing."""
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing or len(msg.position) != len(msg.name):
        raise ValueError(f"joint_states lacks {missing} or has {len(msg.position)} positions for "
                         f"{len(msg.name)} names")
    return np.array([msg.position[index[n]] for n in names], dtype=np.float32)


def describe(response, spec: PolicySpec):
    """Fill a DescribePolicy response from a PolicySpec."""
    return fill(response, DESCRIBE_RESPONSE, action_names=spec.action_names, state_names=spec.state_names,
                chunk_size=spec.chunk_size, action_period=spec.action_period,
                action_offset_steps=spec.action_offset_steps, cameras=spec.cameras,
                image_height=spec.image_size[0], image_width=spec.image_size[1],
                action_mode=spec.action_mode,
                gripper_index=-1 if spec.gripper_index is None else spec.gripper_index,
                lexicon_json=json.dumps(spec.lexicon) if spec.lexicon is not None else "")


def spec_from(response) -> PolicySpec:
    """The PolicySpec of a DescribePolicy response (its lexicon checked, so a bad one fails here,
    at configure, by name)."""
    fields = read(response, DESCRIBE_RESPONSE)
    lexicon = None
    if fields["lexicon_json"]:
        try:
            lexicon = json.loads(fields["lexicon_json"])
            Lexicon(lexicon)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"the policy_server's lexicon_json is unusable: {exc}") from exc
    return PolicySpec(
        action_names=tuple(fields["action_names"]), state_names=tuple(fields["state_names"]),
        chunk_size=int(fields["chunk_size"]), action_period=float(fields["action_period"]),
        action_offset_steps=int(fields["action_offset_steps"]), cameras=tuple(fields["cameras"]),
        image_size=(int(fields["image_height"]), int(fields["image_width"])),
        action_mode=fields["action_mode"],
        gripper_index=None if fields["gripper_index"] < 0 else int(fields["gripper_index"]), lexicon=lexicon)
