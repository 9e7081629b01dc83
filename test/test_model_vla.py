"""The VLA model: shapes, exactness of the KV-cached instruction prefix, configs, backbones, tokenizer."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

from vla_ros.models.tokenizer import ByteTokenizer, batch_encode
from vla_ros.models.vla import VLAModel, _load_backbone, count_parameters, make_config

torch.set_num_threads(1)
HEADS = ["regression", "flow"]


def small_config(head: str, **kw):
    return make_config(
        "tiny", head=head, image_size=32, patch_size=8, pooled_grid=2, lm_layers=2, flow_steps=3, **kw
    )


def random_inputs(cfg, texts, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids, mask, _ = batch_encode(ByteTokenizer(), texts, cfg.max_instruction_tokens)
    B, C, S = len(texts), len(cfg.cameras), cfg.image_size
    images = torch.rand(B, C, 3, S, S, generator=g)
    state = torch.randn(B, cfg.state_dim, generator=g)
    noise = torch.randn(B, cfg.chunk_size, cfg.action_dim, generator=g)
    return ids, mask, images, state, noise


@pytest.mark.parametrize("head", HEADS)
def test_output_shapes_and_loss(head):
    torch.manual_seed(0)
    cfg = small_config(head)
    model = VLAModel(cfg)
    ids, mask, images, state, noise = random_inputs(cfg, ["pick the red cube", "ünïcødé ✓ instruction"])
    out = model(ids, mask, images, state, torch.randn(2, cfg.chunk_size, cfg.action_dim))
    assert out["pred"].shape == (2, cfg.chunk_size, cfg.action_dim)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.vision.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert model.language.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    obs = model.encode_observation(images, state)
    assert obs.shape == (2, cfg.observation_tokens, cfg.lm_width)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_step_equals_full_forward(head, seed):
    """The prefix cache is exact: a step over it equals recomputing instruction + observation."""
    torch.manual_seed(seed)
    cfg = small_config(head)
    model = VLAModel(cfg).eval()
    rng = torch.Generator().manual_seed(seed)
    texts = [
        "".join(chr(int(c)) for c in torch.randint(32, 1000, (int(n),), generator=rng))
        for n in torch.randint(1, 40, (3,), generator=rng)
    ]
    ids, mask, images, state, noise = random_inputs(cfg, texts, seed)
    with torch.no_grad():
        prefix = model.encode_instruction(ids, mask)
        before = [layer.keys.clone() for layer in prefix.cache.layers]
        for step in range(3):  # several control steps reuse one prefix
            images_t, state_t = images.roll(step, dims=-1), state + step
            cached = model.predict(prefix, images_t, state_t, noise)
            full = model.predict_uncached(ids, mask, images_t, state_t, noise)
            assert (cached - full).abs().max().item() <= 1e-5
            # and each row equals running that row alone, unpadded (padding is exact too)
            for row in range(len(texts)):
                n = int(mask[row].sum())
                alone = model.predict_uncached(
                    ids[row : row + 1, :n],
                    mask[row : row + 1, :n],
                    images_t[row : row + 1],
                    state_t[row : row + 1],
                    noise[row : row + 1],
                )
                assert (alone[0] - cached[row]).abs().max().item() <= 1e-5
    assert prefix.cache.get_seq_length() == ids.shape[1]  # restored to the prefix
    for layer, old in zip(prefix.cache.layers, before, strict=True):
        assert torch.equal(layer.keys, old)


@pytest.mark.parametrize("head", HEADS)
def test_native_gqa_attention_equals_transformers_sdpa(head):
    """sdpa_gqa (the default) hands grouped key/value heads to torch as they are; transformers'
    "sdpa" repeats them under a mask. Same weights, same inputs: the same loss, gradients, prefix
    cache and cached chunks, and the cached step really runs with a mask over 2 key/value heads."""
    torch.manual_seed(0)
    cfg = small_config(head)
    assert cfg.attention == "sdpa_gqa" and cfg.lm_heads // cfg.lm_kv_heads == 2
    native = VLAModel(cfg)
    repeated = VLAModel(small_config(head, attention="sdpa"))
    repeated.load_state_dict(native.state_dict())
    ids, mask, images, state, noise = random_inputs(cfg, ["pick the red cube", "place it"])
    actions = torch.randn(2, cfg.chunk_size, cfg.action_dim, generator=torch.Generator().manual_seed(1))
    losses = []
    for model in (native, repeated):
        torch.manual_seed(2)  # the flow head draws its noise and times
        loss = model(ids, mask, images, state, actions)["loss"]
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)
    grads = dict(repeated.named_parameters())
    for name, param in native.named_parameters():
        if param.grad is not None:
            assert torch.allclose(param.grad, grads[name].grad, rtol=1e-4, atol=1e-6), name
    calls = []
    from vla_ros.models import vla

    real = vla.F.scaled_dot_product_attention  # (torch's own function: transformers' calls pass here too)

    def spy(q, k, v, **kwargs):
        calls.append((q.shape[1], k.shape[1], kwargs.get("attn_mask") is not None, kwargs.get("enable_gqa")))
        return real(q, k, v, **kwargs)

    with torch.no_grad():
        prefixes = [m.eval().encode_instruction(ids, mask) for m in (native, repeated)]
        for a, b in zip(prefixes[0].cache.layers, prefixes[1].cache.layers, strict=True):
            assert torch.allclose(a.keys, b.keys, atol=1e-6) and torch.allclose(a.values, b.values, atol=1e-6)
        vla.F.scaled_dot_product_attention = spy
        try:
            chunk = native.predict(prefixes[0], images, state, noise)
        finally:
            vla.F.scaled_dot_product_attention = real
        assert (chunk - repeated.predict(prefixes[1], images, state, noise)).abs().max().item() <= 1e-5
    grouped = [c for c in calls if c[1] == cfg.lm_kv_heads]  # (the vision tower's calls are not grouped)
    assert grouped and all(c == (cfg.lm_heads, cfg.lm_kv_heads, True, True) for c in grouped), calls


def test_instruction_changes_the_prediction():
    torch.manual_seed(0)
    cfg = small_config("regression")
    model = VLAModel(cfg).eval()
    ids, mask, images, state, _ = random_inputs(cfg, ["pick the red cube", "pick the blue ball"])
    with torch.no_grad():
        pred = model.predict_uncached(
            ids, mask, images[:1].expand(2, -1, -1, -1, -1), state[:1].expand(2, -1)
        )
    assert (pred[0] - pred[1]).abs().max() > 1e-4


def test_presets_parameter_counts():
    """tinyvla is the seed's ~13M; the SmolVLA-scale config is hundreds of millions (counted on meta)."""
    tiny = count_parameters(make_config("tiny"))
    tinyvla = count_parameters(make_config("tinyvla"))
    smol = count_parameters(make_config("smolvla"))
    assert tiny < 3e6
    assert 10e6 < tinyvla < 16e6
    assert 350e6 < smol < 500e6
    smol_cfg = make_config("smolvla")
    assert (
        smol_cfg.siglip_config().num_hidden_layers == 12 and smol_cfg.llama_config().num_hidden_layers == 16
    )
    assert smol_cfg.head == "flow"


def test_small_preset_is_language_dominated():
    """`small`: the language model holds most parameters, and a step runs few tokens over the cache."""
    cfg = make_config("small")
    with torch.device("meta"):
        model = VLAModel(cfg)
    vision = sum(p.numel() for p in model.vision.parameters())
    language = sum(p.numel() for p in model.language.parameters())
    assert 8e6 < count_parameters(cfg) < 16e6
    assert language > 20 * vision
    assert cfg.observation_tokens + cfg.chunk_size < 32


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="head"):
        make_config("tiny", head="diffusion")
    with pytest.raises(ValueError, match="patch_size"):
        make_config("tiny", image_size=30)
    with pytest.raises(ValueError, match="unknown model config"):
        make_config("huge")


def test_pretrained_backbones_load_from_local_directories(tmp_path):
    """The SmolVLA path: SigLIP and a SmolLM2-style causal LM saved locally, loaded by directory."""
    torch.manual_seed(0)
    vision = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    )
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=300,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    vision.save_pretrained(tmp_path / "siglip")
    lm.save_pretrained(tmp_path / "smollm2")
    model = VLAModel.from_backbones(
        str(tmp_path / "siglip"),
        str(tmp_path / "smollm2"),
        pooled_grid=2,
        head="flow",
        expert_width=48,
        flow_steps=2,
    )
    assert torch.equal(model.language.layers[1].mlp.up_proj.weight, lm.model.layers[1].mlp.up_proj.weight)
    assert torch.equal(
        model.vision.encoder.layers[0].self_attn.k_proj.weight,
        vision.encoder.layers[0].self_attn.k_proj.weight,
    )
    assert model.config.lm_width == 64 and model.config.vocab_size == 300
    cfg = model.config
    ids, mask, images, state, noise = random_inputs(cfg, ["pick"])
    with torch.no_grad():
        cached = model.predict(model.encode_instruction(ids, mask), images, state, noise)
        full = model.predict_uncached(ids, mask, images, state, noise)
    assert (cached - full).abs().max() <= 1e-5


def test_backbone_loading_is_strict_but_for_the_siglip_head():
    """A backbone save missing a key, or with one this model does not have, is refused by name;
    only SigLIP's MAP head (head.*, not built here) may be left over."""
    torch.manual_seed(0)
    model = VLAModel(make_config("tiny"))
    state = model.vision.state_dict()
    head = {"head.probe": torch.zeros(1, 1, 4)}
    _load_backbone(model.vision, {**state, **head}, "siglip_dir", ignore_prefix="head.")
    missing = next(k for k in state if "k_proj.weight" in k)
    with pytest.raises(ValueError, match="siglip_dir") as info:
        _load_backbone(model.vision, {k: v for k, v in state.items() if k != missing}, "siglip_dir",
                       ignore_prefix="head.")
    assert missing in str(info.value)
    with pytest.raises(ValueError, match="unexpected keys .*extra.weight"):
        _load_backbone(model.vision, {**state, "extra.weight": torch.zeros(1)}, "siglip_dir",
                       ignore_prefix="head.")


def test_byte_tokenizer_unicode_and_truncation():
    tok = ByteTokenizer()
    enc = tok.encode("put the 赤い cube in the bowl 🥣", max_tokens=400)
    assert not enc.truncated and tok.decode(enc.ids) == "put the 赤い cube in the bowl 🥣"
    assert all(0 <= i < tok.vocab_size for i in enc.ids)
    cut = tok.encode("x" * 50, max_tokens=10)
    assert cut.truncated and len(cut.ids) == 10 and cut.dropped_tokens == 41  # BOS + 50 bytes
    ids, mask, _ = batch_encode(tok, ["a", "abcd"], 16)
    assert ids.shape == (2, 5) and mask.sum(1).tolist() == [2, 5]
