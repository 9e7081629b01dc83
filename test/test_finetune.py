"""`vla_ros finetune` (models/finetune.py): peft LoRA on a tiny random-init checkpoint, a few steps on
simulator episodes of the mark family with old-task replay. Only the LoRA and head tensors change,
the adapter directory is small and apart from the base, the merged checkpoint predicts what the
adapter on its base predicts, and bad arguments and broken adapters are refused by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_ros.core.grounding import Lexicon
from vla_ros.data.dataset import save_dataset
from vla_ros.models import finetune
from vla_ros.models.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    RobotMeta,
    load_checkpoint,
    new_checkpoint,
    save_checkpoint,
)
from vla_ros.models.normalization import Normalizer
from vla_ros.models.policy import load_policy
from vla_ros.models.tokenizer import batch_encode
from vla_ros.models.vla import head_parameters, make_config
from vla_ros.sim import TabletopEnv
from vla_ros.sim.collect import record_expert_episode
from vla_ros.sim.paraphrase import lexicon
from vla_ros.sim.tasks import INSTRUCTION_TEMPLATES

torch.set_num_threads(1)
NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
OLD_LEXICON_TASKS = [{"family": f, "colour": c, "shape": "cube"}
                     for f in ("pick", "place") for c in ("red", "blue")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three mark episodes and two old-task episodes from the simulator, 32x32 images."""
    root = tmp_path_factory.mktemp("data")
    env = TabletopEnv(image_size=(32, 32), seed=0)
    try:
        mark = [record_expert_episode(env, s, "mark") for s in range(3)]
        old = [record_expert_episode(env, s, f) for s, f in ((0, "pick"), (1, "place"))]
    finally:
        env.close()
    for name, eps in (("mark", mark), ("old", old)):
        save_dataset(root / name, eps, fps=10.0, state_names=NAMES, action_names=NAMES)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    cfg = make_config("tiny", image_size=32, pooled_grid=2, lm_layers=2, lm_width=64, lm_mlp=128,
                      vision_width=64, vision_mlp=128, vision_heads=2, chunk_size=4)
    ckpt = new_checkpoint(cfg, Normalizer.identity(6, 6), RobotMeta(NAMES, NAMES, ["scene", "wrist"], 0.1))
    texts = [INSTRUCTION_TEMPLATES[t["family"]][0].format(**t) for t in OLD_LEXICON_TASKS]
    ckpt.lexicon = lexicon(OLD_LEXICON_TASKS, texts, texts)
    return save_checkpoint(tmp_path_factory.mktemp("base"), ckpt)


def run(base, data, out, *extra: str) -> dict:
    args = ["--base", str(base), "--data", str(data / "mark"), "--out", str(out), "--replay-data",
            str(data / "old"), "--replay", "0.25", "--steps", "4", "--batch-size", "8", "--warmup", "1",
            "--val-every", "2", "--val-fraction", "0.34", "--lr", "1e-2", "--quiet", *extra]
    parsed = finetune.build_parser().parse_args(args)
    return finetune.finetune(parsed, args)


@pytest.fixture(scope="module")
def adapter(base, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "mark"
    before = finetune.file_sha256(base / WEIGHTS_FILE)
    result = run(base, data, out, "--merge")
    assert finetune.file_sha256(base / WEIGHTS_FILE) == before  # the base on disk is untouched
    return out, result


def test_adapter_directory(adapter, base):
    out, result = adapter
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "merged" not in p.parts}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "head.safetensors",
            "finetune.json", "grounding.json"} <= files
    assert not any(f.rsplit("/", 1)[-1] == WEIGHTS_FILE for f in files)  # the base's weights are not copied
    size = sum((out / f).stat().st_size for f in files)
    assert size < 0.5 * (base / WEIGHTS_FILE).stat().st_size
    info = json.loads((out / "finetune.json").read_text())
    assert info["base"] == str(base) and info["base_sha256"] == finetune.file_sha256(base / WEIGHTS_FILE)
    counts = info["parameters"]
    assert counts["trainable"] == counts["lora"] + counts["head"] == result["parameters"]["trainable"]
    assert 0 < counts["trainable"] < 0.2 * counts["base_total"]
    assert info["data"]["replay_episodes"] == 2 and info["data"]["replay_share"] == 0.25
    assert len(info["history"]) == 2
    # 2 layers x 7 projections, A and B each
    assert len(load_file(str(out / "adapter" / "adapter_model.safetensors"))) == 2 * 7 * 2


def test_only_lora_and_head_change(adapter, base):
    out, _ = adapter
    before = load_file(str(base / WEIGHTS_FILE))
    merged = load_file(str(out / "merged" / WEIGHTS_FILE))
    assert set(merged) == set(before)
    changed = {k for k in before if not torch.equal(before[k], merged[k])}
    heads = {k for k in before if k.startswith(head_parameters("regression"))}
    projections = {k for k in before if k.startswith("language.layers.") and k.endswith("_proj.weight")}
    assert heads <= changed  # the head trained
    assert changed <= heads | projections  # nothing else of the base moved
    assert len(changed & projections) == len(projections) == 14  # each adapted projection merged in
    # unmerged: the base layers under the adapters hold the base's weights exactly
    peft_ckpt = finetune.load_adapter(out, merge=False)
    state = peft_ckpt.model.state_dict()
    for key, value in before.items():
        if key in projections:
            key = key.replace(".weight", ".base_layer.weight")
        if key in heads:
            continue
        assert torch.equal(state["base_model.model." + key], value), key


def _chunks(model, tokenizer, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    ids, mask, _ = batch_encode(tokenizer, ["put the red cube on the mark", "pick up the blue ball"], 64)
    images = torch.from_numpy(rng.random((2, 2, 3, 32, 32), dtype=np.float32))
    state = torch.from_numpy(rng.normal(size=(2, 6)).astype(np.float32))
    with torch.no_grad():
        return model.predict_uncached(ids, mask, images, state)


def test_merged_equals_adapter_on_base(adapter, base):
    out, _ = adapter
    unmerged = finetune.load_adapter(out, merge=False)
    merged = load_checkpoint(out / "merged")
    reference = _chunks(unmerged.model.base_model.model, unmerged.tokenizer)
    torch.testing.assert_close(_chunks(merged.model, merged.tokenizer), reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(_chunks(load_checkpoint(base).model, merged.tokenizer), reference, atol=1e-3)
    # load_policy serves the adapter directory (merged at load) and the merged one alike
    served = [load_policy(d, rtc="off") for d in (out, out / "merged")]
    torch.testing.assert_close(_chunks(served[0].model, merged.tokenizer),
                               _chunks(served[1].model, merged.tokenizer))
    lex = Lexicon(served[0].ckpt.lexicon)
    assert set(lex.slots["task"]) == {"pick", "place", "mark"}
    g = lex.ground("put the blue cylinder on the mark")
    assert g.grounded and g.reading["task"] == "mark"
    assert lex.ground("pick up the red cube").reading["task"] == "pick"
    assert lex.phrasings == {"pick": "pick up the {colour} {shape}",
                             "place": "put the {colour} {shape} in the bowl",
                             "mark": "put the {colour} {shape} on the mark"}
    assert served[1].ckpt.lexicon == served[0].ckpt.lexicon


def test_merge_adapter_command(adapter, tmp_path):
    out, _ = adapter
    assert finetune.main(["--merge-adapter", str(out), "--out", str(tmp_path / "m")]) == 0
    a, b = load_file(str(tmp_path / "m" / WEIGHTS_FILE)), load_file(str(out / "merged" / WEIGHTS_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_arguments(base, data, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        run(tmp_path / "nowhere", data, tmp_path / "o1")
    with pytest.raises(SystemExit, match=r"--head flow: .*'regression' head"):
        run(base, data, tmp_path / "o2", "--head", "flow")
    with pytest.raises(SystemExit, match=r"--targets \['qkv'\].*valid: .*down_proj"):
        run(base, data, tmp_path / "o3", "--targets", "qkv")
    with pytest.raises(SystemExit, match="--replay-data"):
        run(base, data, tmp_path / "o4", "--replay-data", str(tmp_path / "empty_list_dir_is_missing"))


def test_broken_adapters_are_named(adapter, base, tmp_path):
    out, _ = adapter

    def copy(name: str):
        target = tmp_path / name
        shutil.copytree(out, target, ignore=shutil.ignore_patterns("merged"))
        return target

    moved = copy("moved_base")
    info = json.loads((moved / "finetune.json").read_text())
    info["base"] = info["base_absolute"] = str(tmp_path / "gone")
    (moved / "finetune.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="gone.* not found"):
        finetune.load_adapter(moved)
    assert finetune.load_adapter(moved, base=base).model is not None  # an explicit base still serves

    other = copy("other_base")
    info = json.loads((other / "finetune.json").read_text())
    info["base_sha256"] = "0" * 64
    (other / "finetune.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="SHA-256"):
        finetune.load_adapter(other)

    head = copy("head")
    tensors = load_file(str(head / "head.safetensors"))
    del tensors["action_queries"]
    save_file(tensors, str(head / "head.safetensors"))
    with pytest.raises(CheckpointError, match=r"head.safetensors.*missing \['action_queries'\]"):
        finetune.load_adapter(head)

    lora = copy("lora")
    path = lora / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(path))
    gone = sorted(tensors)[0]
    del tensors[gone]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=f"missing \\['{gone}'\\]"):
        finetune.load_adapter(lora)

    flow = copy("flow")
    info = json.loads((flow / "finetune.json").read_text())
    info["head"] = "flow"
    (flow / "finetune.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="head is 'flow'"):
        finetune.load_adapter(flow)
