"""Cameras + JointState -> time-synchronised `Observation`s for the runtime.

Each input passes an `InputGuard` first (a message_filters stage between its Subscriber and the
synchronizer): messages with an unusable header stamp (negative, zero, nanosec out of range,
ahead of the node's clock beyond `max_stamp_lead_s`, out of order) and joint states with
duplicate, missing or mismatched names or non-finite or implausible values are dropped there,
counted and reported, so they reach neither the synchronizer nor the runtime. A stamp more than
TIME_JUMP_S behind its input's previous one is a new time base (bag loop, sim reset): the
synchronizer's queues are emptied and the input goes on from it. The node's clock jumping back
(rclpy's jump callback: /clock reset, bag loop, use_sim_time switched) resets every input's order
and the synchronizer the same way, before the first message of the new time base arrives.
Camera frames are checked for layout, format and size there too (image_conversion.frame_problem);
decoding happens after sync.

message_filters' ApproximateTimeSynchronizer then pairs one frame per camera with a joint state
within `sync_slop_s`; frames are converted here (numpy path, see image_conversion) and header
stamps are moved onto the runtime's clock by their age at arrival. Bad frames are counted and
reported through `on_problem`. Nothing is raised into the executor: an unexpected exception in
these callbacks is reported through `on_internal_error` (the node faults the goal and holds).
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from collections.abc import Callable

import message_filters
import numpy as np
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image, JointState

from vla_ros.core.input_checks import (
    StampOrder,
    finite_problem,
    joint_names_problem,
    joint_values_problem,
    stamp_problem,
)
from vla_ros.core.policy import Observation
from vla_ros.ros.image_conversion import ImageConversionError, frame_problem, image_msg_to_rgb
from vla_ros.ros.outputs import GripperMap
from vla_ros.ros.params import NodeConfig


def no_event_handlers():
    """Subscription options without rclpy's default QoS event handlers.

    Destroying a subscription while a MultiThreadedExecutor builds its wait set can hit an rclpy race
    on those handlers (InvalidHandle "cannot use Destroyable because destruction was requested" in
    event_handler.add_to_wait_set), killing the spinning thread. The node destroys its input
    subscriptions on every deactivate, and best-effort volatile subscriptions match every publisher,
    so the default "incompatible QoS" handler has nothing to report anyway.
    """
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks  # Jazzy and later
    except ImportError:
        from rclpy.qos_event import SubscriptionEventCallbacks  # Humble
    return {"event_callbacks": SubscriptionEventCallbacks(use_default_callbacks=False)}


class MissingJointError(ValueError):
    """A JointState lacks joints the model needs (the message names them)."""


class JointStateMapper:
    """Pick the model's joints out of a JointState by name, in any order; gripper mapped to 0..1."""

    def __init__(self, joint_names: list[str], gripper_joint: str, gripper: GripperMap) -> None:
        self.names = list(joint_names) + ([gripper_joint] if gripper_joint else [])
        self.has_gripper = bool(gripper_joint)
        self.gripper = gripper
        self._index_cache: tuple[tuple[str, ...], list[int]] | None = None

    def indices(self, msg: JointState) -> list[int]:
        """Where each model joint sits in ``msg`` (MissingJointError names the absent ones)."""
        names = tuple(msg.name)
        if self._index_cache is None or self._index_cache[0] != names:
            lookup = {name: i for i, name in enumerate(names)}
            missing = [name for name in self.names if name not in lookup]
            if missing:
                raise MissingJointError(f"joint_states lacks joint(s) {missing} (it has {list(names)})")
            self._index_cache = (names, [lookup[name] for name in self.names])
        if len(msg.position) < len(names):
            raise MissingJointError(f"joint_states has {len(names)} names but {len(msg.position)} positions")
        return self._index_cache[1]

    def state(self, msg: JointState, dtype=np.float32) -> np.ndarray:
        state = np.asarray([msg.position[i] for i in self.indices(msg)], dtype=dtype)
        if self.has_gripper:
            state[-1] = self.gripper.to_model(state[-1])
        return state


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


CLOCK_JUMP_BACK_S = 0.1  # the node's clock going back more than this starts a new time base


class InputGuard(message_filters.SimpleFilter):
    """One input's checks, between its Subscriber and the synchronizer: passes good messages on.

    ``check(msg)`` returns "" or a reason for message-specific checks (joint-state values);
    stamp checks are the same for every input. ``on_drop(reason)`` reports a dropped message,
    ``on_jump()`` a time base that went back.
    """

    def __init__(self, source, now_ns: Callable[[], int], max_lead_s: float, check, on_drop, on_jump):
        super().__init__()
        self._now_ns, self._max_lead_s = now_ns, max_lead_s
        self._check, self._on_drop, self._on_jump = check, on_drop, on_jump
        self._order = StampOrder()
        source.registerCallback(self.add)

    def new_time_base(self) -> None:
        """Forget the stamp order: the clock went back, older stamps are the new normal."""
        self._order = StampOrder()

    def add(self, msg) -> None:
        stamp = msg.header.stamp
        problem = stamp_problem(stamp.sec, stamp.nanosec, self._now_ns(), self._max_lead_s)
        if not problem:
            problem = self._check(msg)
        jumped = False
        if not problem:
            problem, jumped = self._order.check(_stamp_ns(stamp))
        if problem:
            self._on_drop(problem)
            return
        if jumped:
            self._on_jump()
        self.signalMessage(msg)


class RateMeter:
    """Arrival times of recent messages: rate (Hz) and seconds since the last one."""

    def __init__(self, window: int = 60) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self.count += 1

    def rate_hz(self, now: float) -> float:
        with self._lock:
            if len(self._times) < 2 or now - self._times[-1] > 2.0:
                return 0.0
            return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)

    def silence_s(self, now: float) -> float:
        with self._lock:
            return now - self._times[-1] if self._times else float("inf")


class ObservationInput:
    """Subscriptions, synchronisation and conversion; calls the sinks from the executor thread.

    on_observation(obs): a complete Observation on the runtime clock.
    on_joint_state(state, stamp): every joint state (for the runtime's measured-state hold).
    on_problem(source, message): a frame or joint state was skipped (source = camera or "joint_states").
    on_internal_error(source, exc): a callback raised unexpectedly (a bug; the node faults the goal).
    """

    def __init__(
        self,
        node,
        config: NodeConfig,
        image_size: tuple[int, int],
        gripper: GripperMap,
        on_observation: Callable[[Observation], None],
        on_joint_state: Callable[[np.ndarray, float], None],
        on_problem: Callable[[str, str], None],
        clock: Callable[[], float] = time.monotonic,
        on_internal_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._node = node
        self._image_size = image_size
        self._on_observation = on_observation
        self._on_joint_state = on_joint_state
        self._on_problem = on_problem
        self._on_internal_error = on_internal_error
        self._clock = clock
        self._lower, self._upper = config.position_lower, config.position_upper
        self._limit_margin = float(config.joint_state_limit_margin)
        self._max_image_bytes = int(config.max_image_bytes)
        self.mapper = JointStateMapper(list(config.joint_names), config.gripper_joint, gripper)
        self.camera_names = [cam.name for cam in config.cameras]
        self.meters = {name: RateMeter() for name in [*self.camera_names, "joint_states"]}
        self.ages: collections.deque[float] = collections.deque(maxlen=1000)  # stamp -> arrival, seconds
        self.ingest: collections.deque[float] = collections.deque(maxlen=1000)  # arrival -> submitted
        # (stamp, set complete, submitted) per observation, runtime clock: for latency breakdowns
        self.timeline: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=1000)
        self.skipped = collections.Counter()  # source -> messages dropped or frames skipped
        self.time_jumps = 0
        self.observations = 0
        self.last_stamp: float | None = None  # runtime-clock stamp of the latest observation
        self._subscribers = []
        guards = []
        now_ns = lambda: self._node.get_clock().now().nanoseconds  # noqa: E731
        lead = float(config.max_stamp_lead_s)
        for cam in config.cameras:
            msg_type = Image if cam.transport == "raw" else CompressedImage
            sub = message_filters.Subscriber(
                node, msg_type, cam.topic, qos_profile=qos_profile_sensor_data, **no_event_handlers()
            )
            sub.registerCallback(self._guarded(cam.name, self._arrival(cam.name)))
            self._subscribers.append(sub)
            guards.append(InputGuard(sub, now_ns, lead, self._frame_check,
                                     self._dropper(cam.name, f"camera '{cam.name}'"), self._time_jump))
        joints = message_filters.Subscriber(
            node,
            JointState,
            config.joint_states_topic,
            qos_profile=qos_profile_sensor_data,
            **no_event_handlers(),
        )
        joints.registerCallback(self._guarded("joint_states", self._joint_arrival))
        self._subscribers.append(joints)
        joint_guard = InputGuard(joints, now_ns, lead, self._joint_state_problem,
                                 self._dropper("joint_states"), self._time_jump)
        joint_guard.registerCallback(self._guarded("joint_states", self._joint_state))
        guards.append(joint_guard)
        self._sync = message_filters.ApproximateTimeSynchronizer(
            guards, queue_size=int(config.sync_queue_size), slop=float(config.sync_slop_s)
        )
        self._sync.registerCallback(self._guarded("synchronizer", self._synced))
        self._guards = guards
        self._jump_handle = node.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-int(CLOCK_JUMP_BACK_S * 1e9)),
                          on_clock_change=True),
            post_callback=self._guarded("clock", self._clock_jumped))

    def _guarded(self, source: str, callback: Callable) -> Callable:
        """The last-resort guard: an exception from ``callback`` is reported, never raised into
        the executor (where it would end the node's spin)."""

        @functools.wraps(callback)
        def guarded(*args):
            try:
                callback(*args)
            except Exception as exc:
                self.skipped[source] += 1
                if self._on_internal_error is None:
                    raise
                self._on_internal_error(source, exc)
        return guarded

    def _dropper(self, source: str, label: str = "") -> Callable[[str], None]:
        def drop(reason: str) -> None:
            self.skipped[source] += 1
            self._on_problem(source, f"{label or source}: message dropped: {reason}")
        return drop

    def _time_jump(self) -> None:
        """A stamp went back past TIME_JUMP_S: pending messages are from the old time base."""
        self._clear_synchronizer()
        self.time_jumps += 1
        self._on_problem("time", "input stamps jumped back (bag loop or clock reset): synchronizer reset")

    def _clock_jumped(self, jump) -> None:
        """rclpy's post-jump callback: a backward jump or a change of time source."""
        for guard in self._guards:
            guard.new_time_base()
        self._clear_synchronizer()
        self.time_jumps += 1
        back = -jump.delta.nanoseconds * 1e-9
        self._on_problem("time", f"node clock jumped back {back:.3g} s (sim time reset, bag loop or a new "
                                 "time source): input order and synchronizer reset")

    def _clear_synchronizer(self) -> None:
        # ApproximateTimeSynchronizer has no reset; its queues (one dict per input) are what it
        # would otherwise keep matching new messages against.
        with self._sync.lock:
            for queue in self._sync.queues:
                queue.clear()

    def _frame_check(self, msg) -> str:
        return frame_problem(msg, self._max_image_bytes)

    def _joint_state_problem(self, msg: JointState) -> str:
        problem = joint_names_problem(msg.name, len(msg.position), len(msg.velocity), len(msg.effort))
        if problem:
            return problem
        try:
            indices = self.mapper.indices(msg)
        except MissingJointError as exc:
            return str(exc)
        names = self.mapper.names
        raw = [float(msg.position[i]) for i in indices]
        problem = finite_problem(names, raw, "position")
        if not problem and msg.velocity:
            problem = finite_problem(names, [float(msg.velocity[i]) for i in indices], "velocity")
        if problem:
            return problem
        state = self.mapper.state(msg, np.float64)  # float32 would turn a huge finite value into inf
        return joint_values_problem(names, [float(v) for v in state], self._lower, self._upper,
                                    self._limit_margin)

    def _arrival(self, name: str) -> Callable:
        meter = self.meters[name]
        return lambda _msg: meter.tick(self._clock())

    def _joint_arrival(self, _msg: JointState) -> None:
        self.meters["joint_states"].tick(self._clock())

    def _joint_state(self, msg: JointState) -> None:  # a joint state the guard passed
        self._on_joint_state(self.mapper.state(msg), self._to_runtime_clock(msg.header.stamp))

    def _to_runtime_clock(self, stamp) -> float:
        age = (self._node.get_clock().now() - Time.from_msg(stamp)).nanoseconds * 1e-9
        return self._clock() - max(age, 0.0)

    def _synced(self, *msgs) -> None:
        arrival = self._clock()
        *frames, joint_msg = msgs
        images = {}
        for name, frame in zip(self.camera_names, frames, strict=True):
            try:
                images[name] = image_msg_to_rgb(frame, self._image_size)
            except ImageConversionError as exc:
                self.skipped[name] += 1
                self._on_problem(name, f"camera '{name}': frame skipped: {exc}")
                return
        state = self.mapper.state(joint_msg)  # passed its guard
        oldest = min((frame.header.stamp for frame in frames), key=lambda s: (s.sec, s.nanosec))
        stamp = self._to_runtime_clock(oldest)
        self.ages.append(arrival - stamp)
        self._on_observation(Observation(stamp=stamp, images=images, state=state))
        self.last_stamp = stamp
        self.observations += 1
        submitted = self._clock()
        self.ingest.append(submitted - arrival)
        self.timeline.append((stamp, arrival, submitted))

    def silent_inputs(self, max_silence_s: float) -> list[str]:
        """Inputs (camera names, "joint_states") with nothing for longer than ``max_silence_s``."""
        now = self._clock()
        return [name for name, meter in self.meters.items() if meter.silence_s(now) > max_silence_s]

    def observation_age(self) -> float:
        """Seconds since the latest observation's stamp (inf before the first)."""
        return self._clock() - self.last_stamp if self.last_stamp is not None else float("inf")

    def rates(self) -> dict[str, float]:
        now = self._clock()
        return {name: meter.rate_hz(now) for name, meter in self.meters.items()}

    def destroy(self) -> None:
        self._jump_handle.unregister()
        for sub in self._subscribers:
            self._node.destroy_subscription(sub.sub)
        self._subscribers = []
