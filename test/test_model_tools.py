"""`vla_ros eval --ablation` and `vla_ros parity` end to end on a small random checkpoint in the sim."""

from __future__ import annotations

import json

import pytest
import torch

from vla_ros.models import evaluate, parity
from vla_ros.models.checkpoint import RobotMeta, new_checkpoint, save_checkpoint
from vla_ros.models.normalization import Normalizer
from vla_ros.models.vla import make_config

torch.set_num_threads(1)
NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@pytest.fixture(scope="module", params=["regression", "flow"])
def checkpoint(tmp_path_factory, request):
    torch.manual_seed(0)
    cfg = make_config("tiny", head=request.param, image_size=32, pooled_grid=2, lm_layers=2, flow_steps=2)
    ckpt = new_checkpoint(cfg, Normalizer.identity(6, 6), RobotMeta(NAMES, NAMES, ["scene", "wrist"], 0.1))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), ckpt)


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_ablation_table(checkpoint, capsys):
    args = ["--checkpoint", str(checkpoint), "--episodes", "2", "--offline-episodes", "1", "--max-steps", "6",
            "--ablation", "--threads", "1"]
    assert evaluate.main(args) == 0
    out = last_json(capsys)
    assert list(out["results"]) == ["random", "vision-only", "language-only", "full"]
    for row in out["results"].values():
        assert row["episodes"] == 2 and row["successes"] in (0, 1, 2)
        assert row["success_rate"] == row["successes"] / 2  # per episode, not per step
        assert row["action_error"] > 0
        assert row["mean_steps"] <= 6


def test_parity_cached_matches_uncached(checkpoint, capsys):
    assert parity.main(["--checkpoint", str(checkpoint), "--episodes", "1", "--max-steps", "10"]) == 0
    out = last_json(capsys)["results"]
    exact = out["cached-vs-uncached"]
    assert exact["max_abs_diff"] <= 1e-5 and exact["pcc_trajectory"] > 0.99999
    low = out["fp32-vs-bfloat16"]
    assert low["steps"] == exact["steps"] >= 2
    assert low["max_abs_diff"] > 0  # bf16 really ran in lower precision


def test_eval_runtime_overrides_reach_the_run(checkpoint, capsys):
    """--refill-margin-s and --rtc-max-guidance are recorded with the run; bad values are refused by name."""
    flow = json.loads((checkpoint / "config.json").read_text())["head"] == "flow"
    args = ["--checkpoint", str(checkpoint), "--episodes", "1", "--offline-episodes", "0", "--max-steps", "4",
            "--threads", "1", "--refill-margin-s", "0.3", "--extra-latency-ms", "300"]
    if flow:
        args += ["--rtc", "cheap", "--rtc-max-guidance", "0.5"]
    assert evaluate.main(args) == 0
    out = last_json(capsys)
    assert out["runtime_overrides"]["refill_margin_s"] == 0.3
    assert out["real_time_chunking"] == (["cheap", 0.5] if flow else ["off", 0.0])
    for flag, value in (("--refill-margin-s", "-0.1"), ("--rtc-max-guidance", "0")):
        with pytest.raises(SystemExit):
            evaluate.main(["--checkpoint", str(checkpoint), flag, value])
        assert flag in capsys.readouterr().err
