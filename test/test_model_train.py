"""`vla_ros train` on a tiny synthetic dataset: the loss falls, the checkpoint loads, training resumes."""

from __future__ import annotations

import json

import torch
from model_fixtures import write_synthetic_dataset

from vla_ros.models.checkpoint import load_checkpoint
from vla_ros.models.train import lr_at, main

torch.set_num_threads(1)
SMALL = ["--set", "image_size=32", "pooled_grid=2", "lm_layers=2", "vision_layers=1", "chunk_size=4"]


def test_short_training_run_reduces_the_loss(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "data", n=16)
    out = tmp_path / "ckpt"
    args = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        "60",
        "--batch-size",
        "16",
        "--val-every",
        "20",
        "--warmup",
        "5",
        "--lr",
        "2e-3",
        "--threads",
        "1",
        "--quiet",
        *SMALL,
    ]
    assert main(args) == 0
    history = json.loads((out / "training.json").read_text())["history"]
    assert [h["step"] for h in history] == [20, 40, 60]
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    ckpt = load_checkpoint(out)
    assert ckpt.model.config.chunk_size == 4 and ckpt.robot.action_period == 0.1
    # resuming a finished run does nothing; extending it continues from the saved step
    capsys.readouterr()
    args[args.index("--steps") + 1] = "70"
    assert main([*args, "--resume"]) == 0
    history = json.loads((out / "training.json").read_text())["history"]
    assert [h["step"] for h in history] == [20, 40, 60, 70]


def test_learning_rate_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == 1.0
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))
    assert abs(lrs[-1] - 0.1) < 0.01


def test_random_shift_moves_each_image_by_its_own_offset():
    from vla_ros.models.train import random_shift

    images = torch.rand(3, 2, 3, 8, 8)
    pad = 2
    shifted = random_shift(images, pad, torch.Generator().manual_seed(0))
    offsets = torch.randint(0, 2 * pad + 1, (6, 2), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images.flatten(0, 1), (pad,) * 4, mode="replicate")
    for n, (y, x) in enumerate(offsets.tolist()):  # the crop at the offset the generator drew
        assert torch.equal(shifted.flatten(0, 1)[n], padded[n, :, y:y + 8, x:x + 8])
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


def test_max_seconds_sets_the_step_count_during_warm_up(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", n=8)
    out = tmp_path / "ckpt"
    args = ["--data", str(data), "--out", str(out), "--steps", "100000", "--batch-size", "4",
            "--val-every", "1000", "--warmup", "120", "--threads", "1", "--quiet",
            "--max-seconds", "15", *SMALL]
    assert main(args) == 0
    info = json.loads((out / "training.json").read_text())
    # The run stopped at the count the measured speed allows, well short of --steps, and says so.
    assert 120 <= info["step"] < 100000 and info["finished"]
    assert info["args"]["steps"] == info["step"]


def test_paraphrase_pool_draws_generated_instructions_and_keeps_the_recorded_one(tmp_path):
    import numpy as np
    from model_fixtures import synthetic_episodes

    from vla_ros.models.normalization import Normalizer
    from vla_ros.models.tokenizer import ByteTokenizer
    from vla_ros.models.train import InstructionPool, build_frames
    from vla_ros.sim.paraphrase import HELD_OUT, normalise

    episodes = synthetic_episodes(6)
    norm = Normalizer.fit(np.concatenate([e.state for e in episodes]),
                          np.concatenate([e.action for e in episodes]))
    frames = build_frames(episodes, ["scene", "wrist"], 32, 4, norm)
    pool = InstructionPool(frames, ByteTokenizer(), 96, k=16, keep=0.25, seed=0)
    assert len(pool.texts) == len(frames.texts) * 17
    rows = pool.rows(frames.instruction, np.random.default_rng(0))
    drawn = [pool.texts[r] for r in rows]
    kept = np.mean([d == frames.texts[i] for d, i in zip(drawn, frames.instruction, strict=True)])
    assert 0.1 < kept < 0.45  # about `keep` of the samples keep their recorded text
    colour_of = [frames.tasks[i]["colour"] for i in frames.instruction]
    named = np.mean([c in normalise(d).split() for d, c in zip(drawn, colour_of, strict=True)])
    assert named > 0.9  # every draw names its colour, unless a typing slip hit that word
    held_out = {normalise(t.format(colour=c, shape="cube")) for t in HELD_OUT["pick"]
                for c in ("red", "blue")}
    assert not held_out & {normalise(t) for t in pool.texts}
    assert (pool.rows(frames.instruction, np.random.default_rng(0)) == rows).all()  # seeded
    off = InstructionPool(frames, ByteTokenizer(), 96, k=0)
    assert (off.rows(frames.instruction, np.random.default_rng(0)) == frames.instruction).all()


def test_pretrained_token_embeddings_train_load_and_stay_out_of_the_checkpoint(tmp_path):
    """--tokenizer wordllama: the Llama-2 BPE and its frozen [32000, 256] table from the installed
    package; the checkpoint keeps only the projection and the table's SHA-256, and loads again."""
    import pytest
    from safetensors.torch import load_file

    from vla_ros.models.tokenizer import FileTokenizer, embedding_table

    pytest.importorskip("wordllama", reason="the optional extra `language` (make venv installs it)")
    data = write_synthetic_dataset(tmp_path / "data", n=8)
    out = tmp_path / "ckpt"
    assert main(["--data", str(data), "--out", str(out), "--steps", "4", "--batch-size", "4",
                 "--val-every", "4", "--warmup", "1", "--threads", "1", "--quiet", "--tokenizer", "wordllama",
                 "--casefold", *SMALL]) == 0
    saved = load_file(str(out / "model.safetensors"))
    assert "language.embed_tokens.proj.weight" in saved and not any("table" in k for k in saved)
    assert sum(v.numel() for v in saved.values()) < 1_000_000  # the 8.2M-entry table is not in it
    ckpt = load_checkpoint(out)
    assert isinstance(ckpt.tokenizer, FileTokenizer) and ckpt.model.config.vocab_size == 32000
    assert ckpt.tokenizer.encode("PICK Up", 16).ids == ckpt.tokenizer.encode("pick up", 16).ids
    table, digest = embedding_table("wordllama")
    assert ckpt.model.config.token_embeddings_sha256 == digest
    assert torch.equal(ckpt.model.language.embed_tokens.table, table)  # frozen: as read, after training
    with pytest.raises(ValueError, match="was trained with"):
        embedding_table("wordllama", sha256="0" * 64)


def _two_step_checkpoint(tmp_path):
    """The common training arguments on an 8-episode synthetic dataset, and a 2-step checkpoint."""
    data = write_synthetic_dataset(tmp_path / "data", n=8)
    common = ["--data", str(data), "--batch-size", "4", "--val-every", "2", "--warmup", "1",
              "--threads", "1", "--quiet"]
    base = tmp_path / "base"
    assert main([*common, "--out", str(base), "--steps", "2", *SMALL]) == 0
    return common, base


def test_init_with_another_head_keeps_the_trunk_and_trains_a_fresh_head(tmp_path, capsys):
    """--init CKPT --head flow: every trunk tensor starts as the checkpoint's, the flow expert
    starts fresh, the regression head is named as not used; other overrides stay refused.
    --rtc-train-delay is recorded in the config (the policy's 'prefix' mode reads it), and refused
    for the regression head."""
    import pytest

    common, base = _two_step_checkpoint(tmp_path)
    capsys.readouterr()
    out = tmp_path / "flow"
    assert main([*common, "--out", str(out), "--steps", "1", "--lr", "0", "--init", str(base),
                 "--head", "flow", "--rtc-train-delay", "2"]) == 0
    err = capsys.readouterr().err
    assert "fresh ['action_in.bias'" in err and "'action_queries'" in err and "expert.norm.weight" in err
    old, new = load_checkpoint(base).model.state_dict(), load_checkpoint(out).model
    assert new.config.head == "flow" and new.config.chunk_size == 4 and new.config.rtc_train_delay == 2
    trunk_modules = ("vision.", "language.", "connector.", "state_proj.")
    trunk = [k for k in new.state_dict() if k.startswith(trunk_modules)]
    assert trunk and all(torch.equal(new.state_dict()[k], old[k]) for k in trunk)  # lr 0: as loaded
    with pytest.raises(SystemExit, match="drop the overrides"):
        main([*common, "--out", str(tmp_path / "x"), "--steps", "1", "--init", str(base), "--head", "flow",
              "--chunk-size", "8"])
    with pytest.raises(SystemExit, match="only the flow head"):
        main([*common, "--out", str(tmp_path / "y"), "--steps", "1", "--init", str(base),
              "--rtc-train-delay", "2"])


def test_init_vision_copies_the_tower_only_and_names_what_does_not_fit(tmp_path, capsys):
    """--init-vision CKPT (a pretrained component): a model of other language and pooling sizes starts
    with the checkpoint's vision tower, every tensor of it, and everything else fresh; a tower of
    other sizes is refused naming the size that differs; with --init it is refused."""
    import pytest

    common, base = _two_step_checkpoint(tmp_path)
    capsys.readouterr()
    wider = [*SMALL, "pooled_grid=1", "lm_width=64", "lm_heads=2", "lm_kv_heads=1", "lm_mlp=96"]
    out = tmp_path / "wider"
    assert main([*common, "--out", str(out), "--steps", "1", "--lr", "0", "--init-vision", str(base),
                 *wider]) == 0
    assert f"vision tower tensors from {base}" in capsys.readouterr().err
    old, new = load_checkpoint(base).model.state_dict(), load_checkpoint(out).model.state_dict()
    tower = [k for k in new if k.startswith("vision.")]
    assert tower and all(torch.equal(new[k], old[k]) for k in tower)  # lr 0: as loaded
    q_proj = "language.layers.0.self_attn.q_proj.weight"
    assert new[q_proj].shape != old[q_proj].shape
    with pytest.raises(SystemExit, match=r"vision_width 96 \(ours 48\)"):
        main([*common, "--out", str(tmp_path / "x"), "--steps", "1", "--init-vision", str(base),
              *SMALL, "vision_width=48"])
    with pytest.raises(SystemExit, match="--init already gives every tensor"):
        main([*common, "--out", str(tmp_path / "y"), "--steps", "1", "--init-vision", str(base),
              "--init", str(base)])


def test_the_datasets_action_timing_reaches_the_checkpoint_and_the_policy(tmp_path):
    """meta.json's action_offset_steps (the simulated expert's datasets record 1) is kept by training in
    the checkpoint and becomes the policy's PolicySpec.action_offset_steps; datasets that time their
    actions differently are refused together, by name."""
    import pytest

    from vla_ros.models.policy import VLAPolicy

    data = write_synthetic_dataset(tmp_path / "data", n=8)
    meta = json.loads((data / "meta.json").read_text())
    assert meta["action_offset_steps"] == 0
    late = write_synthetic_dataset(tmp_path / "late", n=8)
    (late / "meta.json").write_text(json.dumps({**meta, "action_offset_steps": 1}))
    common = ["--batch-size", "4", "--val-every", "2", "--warmup", "1", "--threads", "1", "--quiet",
              "--steps", "1", *SMALL]
    out = tmp_path / "ckpt"
    assert main(["--data", str(late), "--out", str(out), *common]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.robot.action_offset_steps == 1
    assert VLAPolicy(ckpt).spec.action_offset_steps == 1
    with pytest.raises(SystemExit, match="action_offset_steps 0 differs"):
        main(["--data", str(late), str(data), "--out", str(tmp_path / "x"), *common])
