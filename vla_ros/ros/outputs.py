"""Commands (model action space) -> the messages a ros2_control setup or a hobby-arm driver takes.

`CommandOutput.publish(command)` is called from the runtime's control-loop thread; rclpy
publishers are thread-safe, so nothing is routed through the executor. The gripper's model value
(0 = open .. 1 = closed) is mapped linearly onto gripper_open_position .. gripper_closed_position.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.action import ActionClient
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.ros.params import NodeConfig


def _no_event_handlers() -> dict:
    """Publisher options without rclpy's default QoS event handlers: destroying a publisher (cleanup)
    while a MultiThreadedExecutor builds its wait set can hit an rclpy race on them that kills the
    spinning thread (see observation_sync.no_event_handlers)."""
    try:
        from rclpy.event_handler import PublisherEventCallbacks  # Jazzy and later
    except ImportError:
        from rclpy.qos_event import PublisherEventCallbacks  # Humble
    return {"event_callbacks": PublisherEventCallbacks(use_default_callbacks=False)}


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(sec=whole, nanosec=int(round((seconds - whole) * 1e9)))


class GripperMap:
    """Model gripper value 0..1 <-> joint position; identity when the model has no gripper."""

    def __init__(self, open_position: float, closed_position: float) -> None:
        self.open = float(open_position)
        self.span = float(closed_position) - float(open_position)

    def to_joint(self, value: float) -> float:
        return self.open + float(value) * self.span

    def to_model(self, position: float) -> float:
        return (float(position) - self.open) / self.span


class CommandOutput:
    """Publishers for the configured output mode; `publish` turns one Command into messages."""

    def __init__(self, node, config: NodeConfig) -> None:
        self._node = node
        self._config = config
        self._arm_joints = list(config.joint_names)
        self._has_gripper = bool(config.gripper_joint)
        self._gripper = GripperMap(config.gripper_open_position, config.gripper_closed_position)
        self._gripper_mode = config.gripper_output if self._has_gripper else "none"
        self._with_arm = self._gripper_mode == "with_arm"
        self._names = self._arm_joints + ([config.gripper_joint] if self._with_arm else [])
        self._last_gripper_goal: float | None = None
        self._gripper_client = None
        self._gripper_pub = None
        self.dry_run = bool(config.dry_run)
        self.published = 0
        if self.dry_run:
            # Nothing reaches the robot; what would have been sent goes to ~/dry_run/commands.
            self._pub = node.create_publisher(
                Float64MultiArray, "~/dry_run/commands", 10, **_no_event_handlers()
            )
            return
        message_type = {
            "position_array": Float64MultiArray,
            "joint_trajectory": JointTrajectory,
            "joint_state": JointState,
        }[config.output_mode]
        self._pub = node.create_publisher(message_type, config.output_topic, 10, **_no_event_handlers())
        if self._gripper_mode == "array":
            self._gripper_pub = node.create_publisher(
                Float64MultiArray, config.gripper_topic, 10, **_no_event_handlers()
            )
        elif self._gripper_mode == "trajectory":
            self._gripper_pub = node.create_publisher(
                JointTrajectory, config.gripper_topic, 10, **_no_event_handlers()
            )
        elif self._gripper_mode == "parallel_gripper_action":
            from control_msgs.action import (
                ParallelGripperCommand,  # Jazzy+; absent from Humble's control_msgs
            )

            self._gripper_action = ParallelGripperCommand
            self._gripper_client = ActionClient(node, ParallelGripperCommand, config.gripper_topic)
        elif self._gripper_mode == "gripper_command_action":
            from control_msgs.action import GripperCommand

            self._gripper_action = GripperCommand
            self._gripper_client = ActionClient(node, GripperCommand, config.gripper_topic)

    @property
    def arm_joint_names(self) -> list[str]:
        return list(self._names)

    def to_robot(self, positions: np.ndarray) -> np.ndarray:
        """Model action vector -> robot joint positions (gripper mapped), same order."""
        out = np.asarray(positions, dtype=np.float64).copy()
        if self._has_gripper:
            out[-1] = self._gripper.to_joint(out[-1])
        return out

    def publish(self, positions: np.ndarray, future: np.ndarray | None = None) -> None:
        """Publish one command (model units). ``future``: (seconds ahead, positions) for buffer mode."""
        robot = self.to_robot(positions)
        if self.dry_run:
            self._pub.publish(Float64MultiArray(data=robot.tolist()))
            self.published += 1
            return
        arm = robot if self._with_arm or not self._has_gripper else robot[:-1]
        mode = self._config.output_mode
        if mode == "position_array":
            self._pub.publish(Float64MultiArray(data=arm.tolist()))
        elif mode == "joint_state":
            msg = JointState(name=self._names, position=arm.tolist())
            msg.header.stamp = self._node.get_clock().now().to_msg()
            self._pub.publish(msg)
        else:
            self._pub.publish(self._trajectory(arm, future))
        if self._has_gripper and not self._with_arm:
            self._publish_gripper(float(robot[-1]), float(positions[-1]))
        self.published += 1

    def _trajectory(self, arm: np.ndarray, future: list[tuple[float, np.ndarray]] | None) -> JointTrajectory:
        # header.stamp zero = "start now" for JointTrajectoryController. Every point is shifted by the
        # first point's time_from_start, so the buffered actions keep their spacing.
        msg = JointTrajectory(joint_names=self._names)
        first = self._config.trajectory_time_from_start_s
        points = [JointTrajectoryPoint(positions=arm.tolist(), time_from_start=_duration(first))]
        for ahead, row in future or ():
            robot = self.to_robot(row)
            robot = robot if self._with_arm or not self._has_gripper else robot[:-1]
            points.append(
                JointTrajectoryPoint(positions=robot.tolist(), time_from_start=_duration(first + ahead))
            )
        msg.points = points
        return msg

    def _publish_gripper(self, joint_position: float, model_value: float) -> None:
        mode = self._gripper_mode
        if mode == "array":
            self._gripper_pub.publish(Float64MultiArray(data=[joint_position]))
            return
        if mode == "trajectory":
            point = JointTrajectoryPoint(
                positions=[joint_position],
                time_from_start=_duration(self._config.trajectory_time_from_start_s),
            )
            self._gripper_pub.publish(
                JointTrajectory(joint_names=[self._config.gripper_joint], points=[point])
            )
            return
        # Action clients: a goal per change only; a goal per tick would preempt itself 50 times a second.
        if (
            self._last_gripper_goal is not None
            and abs(model_value - self._last_gripper_goal) < self._config.gripper_deadband
        ):
            return
        if not self._gripper_client.server_is_ready():
            return
        goal = self._gripper_action.Goal()
        if mode == "parallel_gripper_action":
            goal.command.name = [self._config.gripper_joint]
            goal.command.position = [joint_position]
            goal.command.effort = [float(self._config.gripper_max_effort)]
        else:
            goal.command.position = joint_position
            goal.command.max_effort = float(self._config.gripper_max_effort)
        self._gripper_client.send_goal_async(goal)
        self._last_gripper_goal = model_value

    def flush(self, timeout_s: float = 0.5) -> bool:
        """Wait until reliable subscribers acknowledged what was published (the final hold must
        arrive even when the process exits right after)."""
        from rclpy.duration import Duration

        ok = True
        for pub in (self._pub, self._gripper_pub):
            if pub is not None:
                ok = pub.wait_for_all_acked(Duration(seconds=timeout_s)) and ok
        return ok

    def destroy(self) -> None:
        for entity in (self._pub, self._gripper_pub):
            if entity is not None:
                self._node.destroy_publisher(entity)
        if self._gripper_client is not None:
            self._gripper_client.destroy()
