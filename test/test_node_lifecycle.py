"""vla_node configuration and lifecycle: parameter validation naming the parameter and range,
URDF limits, joint names against the URDF and the model, and the lifecycle transitions."""

from __future__ import annotations

import dataclasses
import math
import weakref

import pytest

from vla_ros.core.scripted_policy import ARM_JOINTS, default_spec
from vla_ros.ros import params
from vla_ros.ros.urdf_limits import UrdfError, limits_for, parse_joint_limits

URDF = """<robot name="arm">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/><link name="l4"/><link name="l5"/>
  <joint name="shoulder_pan" type="revolute"><parent link="base"/><child link="l1"/>
    <limit lower="-1.5" upper="1.5" velocity="2.0" effort="5"/></joint>
  <joint name="shoulder_lift" type="revolute"><parent link="l1"/><child link="l2"/>
    <limit lower="-1.0" upper="1.2" velocity="1.5" effort="5"/></joint>
  <joint name="elbow_flex" type="revolute"><parent link="l2"/><child link="l3"/>
    <limit lower="-0.3" upper="2.9" velocity="1.0" effort="5"/></joint>
  <joint name="wrist_flex" type="revolute"><parent link="l3"/><child link="l4"/>
    <limit lower="-1.0" upper="3.0" effort="5"/></joint>
  <joint name="wrist_roll" type="continuous"><parent link="l4"/><child link="l5"/></joint>
  <joint name="camera_mount" type="fixed"><parent link="l5"/><child link="base"/></joint>
</robot>"""


def _values(**overrides):
    values = {p.name: p.default for p in params.PARAMS}
    values.update(overrides)
    return values


CAMS = {
    "scene": {"topic": "/scene/image_raw"},
    "wrist": {"topic": "/wrist/image_raw", "transport": "compressed"},
}


# ------------------------------------------------------------------------ pure validation
def test_urdf_limits_are_parsed_by_joint():
    limits = parse_joint_limits(URDF)
    assert "camera_mount" not in limits
    assert (
        limits["shoulder_lift"].lower,
        limits["shoulder_lift"].upper,
        limits["shoulder_lift"].velocity,
    ) == (-1.0, 1.2, 1.5)
    assert math.isinf(limits["wrist_flex"].velocity)  # no velocity attribute: unlimited
    assert limits["wrist_roll"].lower == -math.inf and limits["wrist_roll"].upper == math.inf
    with pytest.raises(UrdfError, match=r"\['elbow'\]"):
        limits_for(URDF, ["shoulder_pan", "elbow"])
    with pytest.raises(UrdfError, match="not valid XML"):
        parse_joint_limits("<robot>")


def test_urdf_limits_replace_the_parameter_lists_and_keep_velocity_where_the_urdf_has_none():
    config = params.validate(
        _values(robot_description=URDF, velocity_limit=[9.0, 9.0, 9.0, 4.0, 3.0]), CAMS, limits_for
    )
    assert config.position_lower[:3] == (-1.5, -1.0, -0.3)
    assert config.position_upper[1] == 1.2
    assert config.velocity_limit == (2.0, 1.5, 1.0, 4.0, 3.0, 2.0)  # 4.0 and 3.0 from the parameter; gripper
    assert config.position_lower[5] == 0.0 and config.position_upper[5] == 1.0
    assert config.cameras[1].transport == "compressed"
    ignored = params.validate(_values(robot_description=URDF, use_urdf_limits=False), CAMS, limits_for)
    assert ignored.position_lower[0] == -math.pi


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"control_rate_hz": 0.0}, ["'control_rate_hz'", "(0, 1000]"]),
        ({"control_rate_hz": "fast"}, ["'control_rate_hz'", "expected float"]),
        ({"output_mode": "twist"}, ["'output_mode'", "position_array | joint_trajectory | joint_state"]),
        ({"blending": "mix"}, ["'blending'", "replace | average | crossfade | ensemble"]),
        ({"starvation_policy": "zero_velocity"}, ["'starvation_policy'", "hold_last | hold_measured"]),
        ({"sync_slop_s": -0.1}, ["'sync_slop_s'", "(0, 1]"]),
        ({"realtime_priority": 120}, ["'realtime_priority'", "0..99"]),
        ({"device": "tpu"}, ["'device'", "'cpu', 'cuda' or 'cuda:N'"]),
        ({"position_lower": [0.0] * 4}, ["'position_lower'", "4 values for 5 joints"]),
        ({"position_lower": [0.5] * 5, "position_upper": [0.5] * 5}, ["'position_lower'", "'shoulder_pan'"]),
        ({"velocity_limit": [1.0, 1.0, 0.0, 1.0, 1.0]}, ["'velocity_limit'", "'elbow_flex'"]),
        ({"joint_names": ["a", "a"]}, ["'joint_names'", "distinct"]),
        ({"gripper_joint": "shoulder_pan"}, ["'gripper_joint'", "also listed in joint_names"]),
        ({"gripper_output": "array", "gripper_topic": ""}, ["'gripper_topic'"]),
        (
            {
                "robot_description": URDF,
                "joint_names": ["shoulder_pan", "shouldr_lift", "elbow_flex", "wrist_flex", "wrist_roll"],
            },
            ["'robot_description'", "['shouldr_lift']"],
        ),
    ],
)
def test_invalid_values_name_the_parameter_and_the_valid_range(overrides, words):
    with pytest.raises(params.ConfigError) as info:
        params.validate(_values(**overrides), CAMS, limits_for)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_camera_parameters_are_validated_by_camera():
    with pytest.raises(params.ConfigError, match=r"'cameras.wrist.transport' = 'h264'.*raw or compressed"):
        params.validate(_values(), {"scene": {"topic": "/a"}, "wrist": {"topic": "/b", "transport": "h264"}})
    with pytest.raises(params.ConfigError, match=r"'cameras.scene.topic'"):
        params.validate(_values(), {"wrist": {"topic": "/b"}})


def test_configuration_must_fit_the_model():
    spec = default_spec()
    config = params.validate(_values(), CAMS, limits_for)
    params.check_against_model(config, spec)
    wrong_cams = params.validate(_values(camera_names=["scene", "top"]), {**CAMS, "top": {"topic": "/t"}})
    with pytest.raises(params.ConfigError, match=r"'camera_names'.*missing \['wrist'\], unknown \['top'\]"):
        params.check_against_model(wrong_cams, spec)
    four = params.validate(
        _values(
            joint_names=list(ARM_JOINTS[:4]),
            position_lower=[-1.0] * 4,
            position_upper=[1.0] * 4,
            velocity_limit=[1.0] * 4,
        ),
        CAMS,
    )
    with pytest.raises(params.ConfigError, match=r"'joint_names'.*5 joints.*6 action dimensions"):
        params.check_against_model(four, spec)
    # A model whose state is not the node's joint positions (here one value more) fails at
    # configure, naming both sizes, instead of on every frame.
    wider = dataclasses.replace(spec, state_names=(*spec.state_names, "extra_sensor"))
    with pytest.raises(params.ConfigError, match=r"reads 6 joint positions.*state has 7 values"):
        params.check_against_model(config, wider)


# ------------------------------------------------------------------------ the node
# Without a ROS 2 runtime the `ros` tests are skipped (conftest); the ROS-free ones above and below run.
try:
    from node_harness import Rig, wait_ready
    from rclpy.lifecycle import TransitionCallbackReturn

    SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
except ImportError:
    pass


@pytest.mark.ros
@pytest.mark.parametrize(
    "overrides, words",
    [
        (
            {
                "joint_names": ["shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll"],
                "robot_description": URDF,
            },
            ["['elbow']", "robot_description"],
        ),
        (
            {
                "joint_names": ["j1", "j2", "j3"],
                "position_lower": [-1.0] * 3,
                "position_upper": [1.0] * 3,
                "velocity_limit": [1.0] * 3,
            },
            ["'joint_names'", "['j1', 'j2', 'j3']", "6 action dimensions"],
        ),
        ({"control_rate_hz": 5000.0}, ["'control_rate_hz'", "(0, 1000]"]),
        ({"output_topic": "/arm controller/commands"}, ["'output_topic'", "not a valid ROS name"]),
        ({"cameras.wrist.topic": "/2cam/image"}, ["'cameras.wrist.topic'", "must not start with a number"]),
    ],
)
def test_bad_configuration_fails_configure_with_the_reason(rclpy_context, overrides, words):
    rig = Rig(rclpy_context, **overrides)
    try:
        assert rig.node.trigger_configure() == FAILURE
        for word in words:
            assert word in rig.node.last_error, rig.node.last_error
        assert rig.node.runtime is None and rig.node.output is None
    finally:
        rig.close()


@pytest.mark.ros
def test_lifecycle_transitions(rclpy_context):
    rig = Rig(rclpy_context)
    try:
        node = rig.node
        assert node.status()["state"] == "unconfigured"
        assert node.trigger_configure() == SUCCESS
        assert node.policy is rig.policy and node.runtime is None
        assert node.status()["state"] == "inactive"
        assert rig.robot.command_count() == 0  # configured but not active: nothing is sent
        assert node.trigger_activate() == SUCCESS
        wait_ready(rig)
        rig.instruct()
        runtime, inputs = weakref.ref(node.runtime), weakref.ref(node.inputs)
        assert node.trigger_deactivate() == SUCCESS
        assert node.runtime is None and node.inputs is None
        # Freed by the deactivate itself, not left in reference cycles for a later full collection
        # (bench soak: each re-arm otherwise left about 0.5 MB resident).
        assert runtime() is None and inputs() is None
        assert str(node.last_result.reason) == "shutdown"  # the running goal ended with the runtime
        sent = node.commands_published
        rig.wait_for(lambda: rig.robot.command_count() >= sent + 1, 5.0, "the hold after deactivate")
        assert node.commands_published == sent  # no control loop any more
        from rclpy.parameter import Parameter

        refused = node.set_parameters([Parameter("control_rate_hz", value=20.0)])[0]
        assert not refused.successful and "apply at configure" in refused.reason
        assert node.trigger_cleanup() == SUCCESS
        assert node.policy is None and node.config is None and node.output is None
        assert node.set_parameters([Parameter("control_rate_hz", value=25.0)])[0].successful
        # and back up again from scratch
        assert node.trigger_configure() == SUCCESS
        assert node.trigger_activate() == SUCCESS
        assert node.config.control_rate_hz == 25.0  # the change made while unconfigured applies
        before = rig.robot.command_count()
        rig.wait_for(lambda: rig.robot.command_count() > before + 5, 5.0, "commands after reactivation")
        assert node.trigger_shutdown() == SUCCESS
        assert node.runtime is None and node.policy is None
    finally:
        rig.close()


@pytest.mark.ros
@pytest.mark.parametrize("level", [50, 0])
def test_the_control_threads_scheduling_is_tried_and_reported(rclpy_context, level):
    """realtime_priority (default 50, as ros2_control_node's) is tried at activation; whether the
    process may have SCHED_FIFO or not, diagnostics say what the control thread got."""
    import os

    rig = Rig(rclpy_context, realtime_priority=level)
    try:
        rig.start()
        got = rig.node.runtime.loop.priority_status
        reported = {kv.key: kv.value for kv in rig.node._diagnostic_statuses()[1].values}["control thread"]
        assert reported == got
        if level == 0:
            assert got == "normal priority"
        elif got == "SCHED_FIFO priority 50":  # permitted here: the loop's thread really has it
            loop_thread = rig.node.runtime.loop._thread
            assert os.sched_getscheduler(loop_thread.native_id) == os.SCHED_FIFO
        else:
            assert got.startswith("could not set SCHED_FIFO priority 50"), got
    finally:
        rig.close()


# ------------------------------------------------------------------------ shipped configs
def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("name, arm_joints", [("sim_robot.yaml", 5), ("arm6_parallel_gripper.yaml", 6)])
def test_shipped_configs_are_valid(name, arm_joints):
    import dataclasses
    from pathlib import Path

    import yaml

    tree = yaml.safe_load((Path(__file__).parent.parent / "config" / name).read_text())
    flat = _flatten(tree["/**"]["ros__parameters"])
    unknown = {k for k in flat if not k.startswith("cameras.")} - set(params.PARAMS_BY_NAME)
    assert not unknown, f"{name}: unknown parameters {unknown}"
    cameras = {
        n: {"topic": flat[f"cameras.{n}.topic"], "transport": flat[f"cameras.{n}.transport"]}
        for n in flat["camera_names"]
    }
    config = params.validate(
        _values(**{k: v for k, v in flat.items() if not k.startswith("cameras.")}), cameras, limits_for
    )
    names = (*(f"j{i}" for i in range(arm_joints)), "gripper")
    spec = dataclasses.replace(
        default_spec(), action_names=names, state_names=names, gripper_index=arm_joints
    )
    params.check_against_model(config, spec)
    assert len(config.position_lower) == arm_joints + 1


def test_every_parameter_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "vla_node.md").read_text()
    missing = [p.name for p in params.PARAMS if f"`{p.name}`" not in doc]
    assert not missing, f"docs/vla_node.md lacks {missing}"
