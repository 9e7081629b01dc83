"""LeRobot policy checkpoints as a Policy (vla_ros/models/lerobot_policy.py): the spec and hub
assets read from config.json (no lerobot needed), and, in .venv-lerobot's interpreter, a tiny ACT
checkpoint served through the worker process gives lerobot's own prediction, and runs in vla_node
selected by `policy_backend: lerobot`. Without .venv-lerobot those are skipped, with CI=true they
fail (test/lerobot_venv.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest
from lerobot_venv import lerobot_python

from vla_ros.core.policy import Observation
from vla_ros.core.policy_process import ChildProcessPolicy, PolicyProcessError
from vla_ros.models import lerobot_policy
from vla_ros.models.lerobot_policy import hub_assets, policy_spec, read_config

HELPER = os.path.join(os.path.dirname(__file__), "lerobot_act.py")
FACTORY = "vla_ros.models.lerobot_policy:load_lerobot_policy"


def act_config() -> dict:
    image = {"type": "VISUAL", "shape": [3, 32, 40]}
    return {"type": "act", "chunk_size": 8, "n_action_steps": 8,
            "input_features": {"observation.images.scene": image, "observation.images.wrist": image,
                               "observation.state": {"type": "STATE", "shape": [6]}},
            "output_features": {"action": {"type": "ACTION", "shape": [6]}},
            "pretrained_backbone_weights": "ResNet18_Weights.IMAGENET1K_V1"}


def test_spec_comes_from_the_config_and_the_given_fps():
    spec = policy_spec(act_config(), fps=30)
    assert spec.cameras == ("scene", "wrist") and spec.image_size == (32, 40)
    assert spec.chunk_size == 8 and spec.action_dim == spec.state_dim == 6
    assert spec.action_period == pytest.approx(1 / 30)
    with pytest.raises(ValueError, match=r"needs observation\.images\.\* cameras"):
        policy_spec({**act_config(), "input_features": {"observation.state": {"shape": [6]}}}, fps=30)


def test_given_joint_names_are_checked_against_the_dimensions_and_place_the_gripper():
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    spec = policy_spec(act_config(), fps=10, state_names=names, action_names=names)
    assert spec.action_names == tuple(names) and spec.gripper_index == 5
    assert policy_spec(act_config(), fps=10).gripper_index is None
    with pytest.raises(ValueError, match=r"5 action names .* for its 6 action dimensions"):
        policy_spec(act_config(), fps=10, action_names=names[:5])


def test_joint_names_come_from_the_training_dataset_that_train_config_names(tmp_path):
    from vla_ros.models.lerobot_policy import dataset_joint_names

    ckpt, root = tmp_path / "ckpt", tmp_path / "data"
    (root / "meta").mkdir(parents=True)
    ckpt.mkdir()
    assert dataset_joint_names(ckpt) is None  # no train_config.json: a checkpoint alone has none
    (ckpt / "train_config.json").write_text(json.dumps({"dataset": {"root": str(root)}}))
    assert dataset_joint_names(ckpt) is None  # the dataset is gone
    features = {"observation.state": {"names": ["a", "b"]}, "action": {"names": ["c", "d"]}}
    (root / "meta" / "info.json").write_text(json.dumps({"features": features}))
    assert dataset_joint_names(ckpt) == (["a", "b"], ["c", "d"])
    (root / "meta" / "info.json").write_text(json.dumps({"features": {"action": {"names": ["c"]}}}))
    with pytest.raises(ValueError, match=r"info\.json: feature names missing"):
        dataset_joint_names(ckpt)


def test_hub_assets_are_named_per_policy_type():
    assert hub_assets(act_config()) == []  # its backbone weights come from the checkpoint
    assert hub_assets({"type": "smolvla"}) == ["HuggingFaceTB/SmolVLM2-500M-Video-Instruct"]
    assert hub_assets({"type": "smolvla", "vlm_model_name": "me/vlm"}) == ["me/vlm"]
    assert hub_assets({"type": "pi0"}) == ["google/paligemma-3b-pt-224"]
    assert hub_assets({"type": "pi0_fast"}) == ["google/paligemma-3b-pt-224", "lerobot/fast-action-tokenizer"]


def test_a_directory_without_config_json_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json: missing; not a LeRobot policy checkpoint"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"type": "act"}))
    with pytest.raises(ValueError, match=r"missing keys \['input_features', 'output_features'\]"):
        read_config(tmp_path)


def test_lerobot_python_names_every_place_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("VLA_ROS_LEROBOT_PYTHON", str(tmp_path / "nope"))
    monkeypatch.setattr(lerobot_policy, "__file__", str(tmp_path / "a" / "b" / "c.py"))
    with pytest.raises(FileNotFoundError, match=r"lerobot_python '/x'.*nope.*\.venv-lerobot/bin/python"):
        lerobot_policy.lerobot_python("/x")


@pytest.fixture(scope="module")
def act_checkpoint(tmp_path_factory):
    python = lerobot_python()
    out = tmp_path_factory.mktemp("act") / "ckpt"
    run = subprocess.run([str(python), HELPER, "make", str(out)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": "", "HF_HOME": str(out.parent / "hf")})
    assert run.returncode == 0, run.stderr[-3000:]
    return python, out


def child_env(tmp_path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}


def test_the_worker_process_gives_lerobots_own_prediction(act_checkpoint, tmp_path):
    python, ckpt = act_checkpoint
    rng = np.random.default_rng(3)
    images = {c: rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for c in ("scene", "wrist")}
    state = rng.normal(size=6).astype(np.float32)
    np.savez(tmp_path / "obs.npz", state=state, task="pick up the cube", **images)
    run = subprocess.run([str(python), HELPER, "predict", str(ckpt), str(tmp_path / "obs.npz"),
                          str(tmp_path / "ref.npy")], capture_output=True, text=True, timeout=300,
                         env={**child_env(tmp_path), "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    policy = ChildProcessPolicy(FACTORY, {"checkpoint_dir": str(ckpt), "fps": 10.0}, python=str(python),
                                env=child_env(tmp_path), call_timeout_s=30.0)
    try:
        assert policy.spec.cameras == ("scene", "wrist") and policy.spec.chunk_size == 8
        chunk = policy.predict_chunk(Observation(5.0, images, state),
                                     policy.encode_instruction("pick up the cube"))
    finally:
        policy.close()
    assert chunk.actions.shape == (8, 6) and chunk.t_obs == 5.0 and chunk.dt == pytest.approx(0.1)
    np.testing.assert_allclose(chunk.actions, np.load(tmp_path / "ref.npy"), rtol=1e-5, atol=1e-5)


def test_a_policy_type_needing_a_hub_asset_says_which_at_start(act_checkpoint, tmp_path):
    python, _ = act_checkpoint
    ckpt = tmp_path / "smolvla"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({**act_config(), "type": "smolvla"}))
    with pytest.raises(PolicyProcessError, match=r"MissingAssetError: .*'smolvla'.*"
                                                 r"\['HuggingFaceTB/SmolVLM2-500M-Video-Instruct'\]"):
        ChildProcessPolicy(FACTORY, {"checkpoint_dir": str(ckpt), "fps": 10.0}, python=str(python),
                           env=child_env(tmp_path), max_restarts=0)


def test_vla_ros_eval_runs_a_lerobot_checkpoint_through_the_runtime(act_checkpoint, tmp_path, monkeypatch):
    from vla_ros.models.evaluate import main as eval_main

    python, ckpt = act_checkpoint
    for key, value in child_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "eval.json"
    assert eval_main(["--policy-backend", "lerobot", "--checkpoint", str(ckpt), "--lerobot-fps", "10",
                      "--lerobot-python", str(python), "--policy-timeout-s", "30", "--episodes", "2",
                      "--max-steps", "15", "--threads", "1", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    full = summary["results"]["full"]
    assert summary["policy_backend"] == "lerobot" and summary["offline_episodes"] == 0
    assert full["episodes"] == 2 and sum(full["reasons"].values()) == 2  # every episode ended with a result
    assert full["mean_steps"] > 0 and full["inference"]["count"] >= 2  # the model drove the runtime
    assert full["inference"]["p99_ms"] >= full["inference"]["p50_ms"] > 0


def test_vla_ros_eval_names_what_a_lerobot_checkpoint_lacks(capsys):
    from vla_ros.models.evaluate import main as eval_main

    with pytest.raises(SystemExit):
        eval_main(["--policy-backend", "lerobot", "--offline-episodes", "5", "--ablation"])
    err = capsys.readouterr().err
    for problem in ("--checkpoint", "--lerobot-fps", "--offline-episodes", "--ablation"):
        assert problem in err


@pytest.mark.ros
def test_vla_node_runs_a_lerobot_checkpoint_selected_by_parameter(act_checkpoint, rclpy_context, tmp_path,
                                                                  monkeypatch):
    from node_harness import NODE_NAME, FakeRobot, node_parameters
    from rclpy.executors import MultiThreadedExecutor
    from std_msgs.msg import String

    from vla_ros.ros.vla_node import VlaNode

    python, ckpt = act_checkpoint
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    node = VlaNode(NODE_NAME, context=rclpy_context, parameter_overrides=node_parameters(
        policy_backend="lerobot", checkpoint_dir=str(ckpt), lerobot_fps=10.0, lerobot_python=str(python),
        policy_timeout_s=30.0))
    robot = FakeRobot(rclpy_context)
    executor = MultiThreadedExecutor(num_threads=3, context=rclpy_context)
    executor.add_node(node)
    executor.add_node(robot)
    try:
        assert node.autostart(), node.last_error
        assert node.policy.spec.cameras == ("scene", "wrist") and node.policy.spec.chunk_size == 8
        assert node.policy.process_info()["state"] == "ready"
        deadline, sent = time.monotonic() + 30.0, 0.0
        while time.monotonic() < deadline and sum(not c.held for c in list(node.command_log)) < 20:
            idle = node.runtime is None or node.runtime.feedback().goal_id < 0
            if idle and time.monotonic() - sent > 2.0:  # the first may find no observation yet
                robot.instruction_pub.publish(String(data="pick up the cube"))
                sent = time.monotonic()
            executor.spin_once(timeout_sec=0.05)
        moving = [c for c in list(node.command_log) if not c.held]
        assert len(moving) >= 20, f"{len(moving)} commands from the policy; last error {node.last_error}"
        assert all(np.all(np.isfinite(c.positions)) for c in moving)
    finally:
        node.hold_and_shutdown()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        robot.destroy_node()
