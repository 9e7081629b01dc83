"""Run inside .venv-lerobot (lerobot's own pins), not by pytest: a tiny random-initialised ACT
policy checkpoint as lerobot's training saves one, and lerobot's own prediction from it, for
test_lerobot_policy.py.

    .venv-lerobot/bin/python test/lerobot_act.py make CKPT_DIR
    .venv-lerobot/bin/python test/lerobot_act.py predict CKPT_DIR OBS.npz OUT.npz
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lerobot.configs import FeatureType, PolicyFeature  # noqa: E402
from lerobot.configs.policies import PreTrainedConfig  # noqa: E402
from lerobot.policies.act.configuration_act import ACTConfig  # noqa: E402
from lerobot.policies.act.modeling_act import ACTPolicy  # noqa: E402
from lerobot.policies.factory import make_pre_post_processors  # noqa: E402

CAMERAS, H, W, DIM = ("scene", "wrist"), 32, 40, 6


def make(out: str) -> None:
    torch.manual_seed(0)
    inputs = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, H, W)) for c in CAMERAS}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (DIM,))
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (DIM,))}
    config = ACTConfig(input_features=inputs, output_features=outputs,
                       chunk_size=8, n_action_steps=8, dim_model=32, n_heads=2, dim_feedforward=64,
                       n_encoder_layers=1, n_decoder_layers=1, use_vae=False, device="cpu",
                       pretrained_backbone_weights=None)  # no download here; recorded below as training does
    policy = ACTPolicy(config)
    policy.config.pretrained_backbone_weights = "ResNet18_Weights.IMAGENET1K_V1"
    stats = {"observation.state": {"mean": torch.zeros(DIM), "std": torch.full((DIM,), 2.0)},
             "action": {"mean": torch.linspace(-1, 1, DIM), "std": torch.full((DIM,), 0.5)}}
    for c in CAMERAS:
        stats[f"observation.images.{c}"] = {"mean": torch.full((3, 1, 1), 0.5),
                                            "std": torch.full((3, 1, 1), 0.25)}
    pre, post = make_pre_post_processors(config, dataset_stats=stats)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)


def predict(ckpt: str, obs_path: str, out: str) -> None:
    config = PreTrainedConfig.from_pretrained(ckpt)
    config.pretrained_backbone_weights = None  # offline; the checkpoint's weights replace the backbone
    policy = ACTPolicy.from_pretrained(ckpt, config=config, strict=True)
    pre, post = make_pre_post_processors(config, pretrained_path=ckpt)
    obs = np.load(obs_path)
    batch = {"observation.state": torch.from_numpy(obs["state"]), "task": str(obs["task"])}
    for c in CAMERAS:
        batch[f"observation.images.{c}"] = torch.from_numpy(obs[c]).permute(2, 0, 1).float() / 255.0
    with torch.inference_mode():
        actions = post(policy.predict_action_chunk(pre(batch)))
    np.save(out, actions.numpy()[0])


if __name__ == "__main__":
    make(sys.argv[2]) if sys.argv[1] == "make" else predict(*sys.argv[2:5])
