"""The built-in VLA model family: config + model in one file (nanoGPT style).

Token layout seen by the language model (one row of a batch)::

    [ instruction tokens (L) ] [ visual tokens (C*P) | state (1) ] [ action tokens (H) ]
      prefix: encoded once        observation: every step           regression: learned queries
      per goal, KV-cached                                           flow: the expert's noisy actions

The instruction comes first and attention is causal, so instruction tokens never attend to
observation tokens: their keys/values do not depend on the observation and the prefix cache is
exact. (SmolVLA puts the images first, which makes its prefix change every step.) Each step runs
only the observation and action tokens over the cached prefix and then restores the cache to
the prefix length, so the per-step cost grows only with the attention of a few observation tokens
over the prefix. The connector pools each camera's patch grid to ``pooled_grid**2`` tokens to keep
that count small.

Building blocks come from transformers (SigLIP vision tower, Llama decoder), so the same code
runs the random-initialised ``tiny`` config here and loads SigLIP / SmolLM2 weights from local
directories at SmolVLA scale (``VLAModel.from_backbones``).

Heads:
- ``regression``: H learned action queries after the observation; L1 loss (ACT / OpenVLA-OFT).
- ``flow``: a flow-matching action expert (SmolVLA / pi0 style): a narrower Llama with the same
  number of layers and the same key/value head layout, whose action tokens attend to the language
  model's cached keys/values of [instruction, observation]. N Euler steps reuse that cache.

Real-time chunking (``Guide``; Black et al. 2025, arXiv 2506.07339), flow head only: each Euler
step's velocity is corrected so that the chunk's predicted clean actions agree with the actions
the robot is committed to (the previous chunk's, still buffered) where those carry weight: 1 for
the d actions executed while the model runs, a decaying ramp over the rest of the overlap, 0 after.
Exact guidance takes the vector-Jacobian product through the expert; the cheap one drops the
Jacobian of the velocity (identity), so it needs no backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AttentionInterface,
    DynamicCache,
    LlamaConfig,
    LlamaModel,
    PreTrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from vla_ros.models.tokenizer import embedding_table

DEFAULT_CAMERAS = ["scene", "wrist"]


def sdpa_native_gqa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                    is_causal: bool | None = None, **kwargs):
    """transformers' "sdpa" attention, except that on the CPU grouped key/value heads reach torch's
    kernel as they are (``enable_gqa``) also under a mask.

    transformers repeats the key/value heads to every query head whenever a mask is given (its
    CUDA kernels would otherwise fall back to the math one), and a cached step always has one (the
    instruction's padding), so on the CPU every cached key and value was copied per layer and step
    (0.45 ms of a 17 ms `small` step at 256 instruction tokens; docs/DEPLOY.md). Same outputs
    (allclose; test_model_vla). query [B, H, Lq, D], key/value [B, H_kv, Lk, D] ->
    ([B, Lq, H, D], None). Elsewhere (CUDA, no mask, no grouping, position biases) transformers'
    own function runs."""
    if (query.device.type != "cpu" or attention_mask is None or kwargs.get("position_bias") is not None
            or getattr(module, "num_key_value_groups", 1) == 1):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    # with a mask transformers passes is_causal=False too: the mask carries the causal pattern
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("sdpa_gqa", sdpa_native_gqa)
# the masks "sdpa" gets (without a mask function registered, transformers would pass none at all)
AttentionMaskInterface.register("sdpa_gqa", sdpa_mask)


class VLAConfig(PreTrainedConfig):
    """Everything that shapes the model; the sizes of every preset live in ``PRESETS``."""

    model_type = "vla_ros"

    # robot interface
    cameras: list | None = None  # camera names in the order the model reads them
    image_size: int = 64  # square images, pixels
    state_dim: int = 6
    action_dim: int = 6
    chunk_size: int = 10  # H actions per prediction
    # vision tower (SigLIP)
    patch_size: int = 8
    vision_width: int = 96
    vision_layers: int = 2
    vision_heads: int = 3
    vision_mlp: int = 192
    pooled_grid: int = 4  # each camera -> pooled_grid**2 visual tokens
    # language model (Llama / SmolLM2-style decoder)
    vocab_size: int = 259  # byte tokenizer: 256 bytes + pad, bos, eos
    lm_width: int = 128
    lm_layers: int = 3
    lm_heads: int = 4
    lm_kv_heads: int = 2
    lm_mlp: int = 256
    max_instruction_tokens: int = 320
    # Pretrained token embeddings (tokenizer.py's pretrained_vocabulary: "wordllama" or a local
    # directory): a frozen table, read again from its source at build time and checked against
    # this SHA-256, then a learned projection to lm_width. None: embeddings learned from scratch.
    token_embeddings: str | None = None
    token_embeddings_sha256: str | None = None
    rope_theta: float = 10000.0
    # action head
    head: str = "regression"  # "regression" | "flow"
    expert_width: int = 96
    expert_mlp: int = 256
    flow_steps: int = 10
    # Train-time real-time chunking (arXiv 2512.05964): trained with the first d actions of each
    # chunk given clean (flow time 0) and no loss on them (d = 0 for half the rows, else U{1..this}),
    # so at run time the committed actions can be given the same way (Guide.given) instead of
    # guided towards. 0: trained without.
    rtc_train_delay: int = 0
    # full backbone configs (set when built from pretrained backbones; override the sizes above)
    vision_backbone: dict | None = None
    language_backbone: dict | None = None
    # attention implementation for every transformers block: "sdpa_gqa" (sdpa_native_gqa, above) or
    # any of transformers' ("sdpa", "eager"); checkpoints saved before it existed say "sdpa"
    attention: str = "sdpa_gqa"

    def __post_init__(self, **kwargs):
        if self.cameras is None:
            self.cameras = list(DEFAULT_CAMERAS)
        if self.head not in ("regression", "flow"):
            raise ValueError(f"VLAConfig.head must be 'regression' or 'flow', got {self.head!r}")
        if not 0 <= self.rtc_train_delay < self.chunk_size:
            raise ValueError(f"VLAConfig.rtc_train_delay must be in [0, chunk_size {self.chunk_size}), "
                             f"got {self.rtc_train_delay}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        super().__post_init__(**kwargs)

    # --- backbone configs -------------------------------------------------------------------
    def siglip_config(self) -> SiglipVisionConfig:
        if self.vision_backbone:
            cfg = SiglipVisionConfig(**self.vision_backbone)
        else:
            cfg = SiglipVisionConfig(hidden_size=self.vision_width, intermediate_size=self.vision_mlp,
                                     num_hidden_layers=self.vision_layers,
                                     num_attention_heads=self.vision_heads,
                                     image_size=self.image_size, patch_size=self.patch_size)
        cfg.vision_use_head = False  # we pool patch tokens ourselves; SigLIP's MAP head would be dead weight
        cfg._attn_implementation = self.attention
        return cfg

    def llama_config(self) -> LlamaConfig:
        if self.language_backbone:
            cfg = LlamaConfig(**self.language_backbone)
        else:
            cfg = LlamaConfig(vocab_size=self.vocab_size, hidden_size=self.lm_width,
                              intermediate_size=self.lm_mlp, num_hidden_layers=self.lm_layers,
                              num_attention_heads=self.lm_heads,
                              num_key_value_heads=self.lm_kv_heads, max_position_embeddings=1024,
                              rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
                              pad_token_id=0, bos_token_id=1, eos_token_id=2)
        cfg._attn_implementation = self.attention
        return cfg

    def expert_config(self) -> LlamaConfig:
        """Same layer count and key/value layout as the language model, so it can read its cache."""
        lm = self.llama_config()
        head_dim = lm.head_dim
        cfg = LlamaConfig(vocab_size=1, hidden_size=self.expert_width, intermediate_size=self.expert_mlp,
                          num_hidden_layers=lm.num_hidden_layers, num_attention_heads=lm.num_attention_heads,
                          num_key_value_heads=lm.num_key_value_heads, head_dim=head_dim,
                          max_position_embeddings=lm.max_position_embeddings,
                          rope_parameters=lm.rope_parameters, pad_token_id=None,
                          bos_token_id=None, eos_token_id=None)
        cfg._attn_implementation = self.attention
        return cfg

    @property
    def tokens_per_camera(self) -> int:
        return self.pooled_grid**2

    @property
    def observation_tokens(self) -> int:
        return len(self.cameras) * self.tokens_per_camera + 1


# Presets. tiny: the CPU default (0.72M; its vision tower costs as much as its language model).
# small: 12.3M, where deployment matters: the language model dominates the step (a 128-token prefill
# costs ~30x the vision tower here) and the step runs only 19 tokens over the cached instruction
# (2x2 pooled tokens per camera, the state, 10 action queries), so the cache pays (bench kv-cache);
# sized to train within 3 hours on 2 CPU cores (`make checkpoint-small`).
# tinyvla: the seed's 13M (vision 192x4, language 256x4).
# smolvla: SmolVLA scale (~450M): SigLIP-base-like 12 layers, SmolLM2-360M-like 16 layers,
# a 0.75x-width flow expert; meant for GPUs and for SigLIP/SmolLM2 weights via from_backbones.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(image_size=64, patch_size=8, vision_width=96, vision_layers=2, vision_heads=3,
                 vision_mlp=192, pooled_grid=4, lm_width=128, lm_layers=3, lm_heads=4, lm_kv_heads=2,
                 lm_mlp=256, chunk_size=10, expert_width=96, expert_mlp=256),
    "small": dict(image_size=64, patch_size=8, vision_width=96, vision_layers=2, vision_heads=3,
                  vision_mlp=192, pooled_grid=2, lm_width=512, lm_layers=5, lm_heads=4, lm_kv_heads=2,
                  lm_mlp=1024, chunk_size=10, expert_width=384, expert_mlp=768),
    "tinyvla": dict(image_size=64, patch_size=8, vision_width=192, vision_layers=4, vision_heads=3,
                    vision_mlp=1536, pooled_grid=4, lm_width=256, lm_layers=4, lm_heads=4, lm_kv_heads=4,
                    lm_mlp=2560, chunk_size=10, expert_width=192, expert_mlp=768),
    "smolvla": dict(image_size=512, patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
                    vision_mlp=3072, pooled_grid=8, vocab_size=49152, lm_width=960, lm_layers=16,
                    lm_heads=15, lm_kv_heads=5, lm_mlp=2560, rope_theta=100000.0, chunk_size=50,
                    head="flow", expert_width=720, expert_mlp=2048, flow_steps=10,
                    max_instruction_tokens=48),
}


def make_config(name: str, **overrides: Any) -> VLAConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(PRESETS)}")
    return VLAConfig(**{**PRESETS[name], **overrides})


@dataclass
class Prefix:
    """The instruction's KV cache and its padding mask (1 = real token)."""

    cache: DynamicCache
    mask: torch.Tensor  # long [B, L]

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def restore(self) -> None:
        """Drop every key/value appended after the prefix (exact: the prefix tensors are never written)."""
        for layer in self.cache.layers:
            extra = layer.get_seq_length() - self.length
            if extra > 0:
                layer.crop(-extra)


@dataclass
class Guide:
    """Real-time chunking's inpainting target for one sampled chunk (normalised action units)."""

    target: torch.Tensor  # [B, H, A] committed actions (rows past the overlap: anything, weight 0)
    weights: torch.Tensor  # [H] in [0, 1]: how strongly action k must match the target
    exact: bool = True  # vector-Jacobian product through the expert, or the identity Jacobian
    max_guidance: float = 5.0  # cap on the guidance weight (the paper's beta)
    # Train-time RTC (a model trained with rtc_train_delay): the first ``given`` target rows are
    # given to the expert clean at flow time 0 and kept; no guidance. None: guidance as above.
    given: int | None = None


def rtc_weights(chunk_size: int, delay_steps: int, overlap: int) -> torch.Tensor:
    """The prefix weights of real-time chunking: 1 for the first ``delay_steps`` actions (they run
    before the chunk lands), then c * (e^c - 1) / (e - 1) with c falling linearly from 1 to 0 over
    the rest of the ``overlap`` with the committed actions, and 0 beyond it."""
    d, n = max(0, min(delay_steps, overlap)), max(0, min(overlap, chunk_size))
    w = torch.zeros(chunk_size)
    w[:d] = 1.0
    if n > d:
        c = (n - torch.arange(d, n, dtype=torch.float32)) / (n - d + 1)
        w[d:n] = c * (torch.exp(c) - 1) / (math.e - 1)
    return w


def guidance_scale(t: float, max_guidance: float) -> float:
    """min(beta, (1 - tau) / (tau * r^2)), r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2), at flow time
    tau = 1 - t (this file integrates t from 1, noise, to 0; the paper tau from 0 to 1)."""
    tau = 1.0 - t
    if tau <= 0.0:
        return max_guidance
    r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
    return min(max_guidance, (1 - tau) / (tau * r2)) if r2 > 0 else max_guidance


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Flow time t in [0, 1] -> [B, dim] sin/cos features (as in diffusion/flow policies)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def head_parameters(head: str) -> tuple[str, ...]:
    """Name prefixes of the parameters that belong to one head (what a head swap trains fresh)."""
    if head == "regression":
        return ("action_queries", "action_out.")
    return ("expert.", "action_in.", "time_mlp.", "action_out.")


class PretrainedTokenEmbedding(nn.Module):
    """A frozen pretrained table [V, E] (a non-persistent buffer: the checkpoint keeps only the
    projection, the table is read from its source) and a learned projection E -> D."""

    def __init__(self, table: torch.Tensor, width: int):
        super().__init__()
        self.register_buffer("table", table, persistent=False)
        self.proj = nn.Linear(table.shape[1], width)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, D]
        return self.proj(self.table[input_ids])


class VLAModel(PreTrainedModel):
    config_class = VLAConfig
    base_model_prefix = "vla"
    main_input_name = "images"
    _supports_sdpa = True

    def __init__(self, config: VLAConfig):
        super().__init__(config)
        vision_cfg, lm_cfg = config.siglip_config(), config.llama_config()
        D, Dv = lm_cfg.hidden_size, vision_cfg.hidden_size
        C, P, H = len(config.cameras), config.tokens_per_camera, config.chunk_size
        self.vision = SiglipVisionModel(vision_cfg)
        self.language = LlamaModel(lm_cfg)
        if config.token_embeddings:
            table, _ = embedding_table(config.token_embeddings, config.token_embeddings_sha256)
            if table.shape[0] != lm_cfg.vocab_size:
                raise ValueError(f"token_embeddings {config.token_embeddings!r} has {table.shape[0]} rows, "
                                 f"vocab_size is {lm_cfg.vocab_size}")
            self.language.embed_tokens = PretrainedTokenEmbedding(table, D)
        # connector: pooled patch features -> language width (SmolVLA-style pooling + MLP)
        self.connector = nn.Sequential(nn.LayerNorm(Dv), nn.Linear(Dv, D), nn.GELU(), nn.Linear(D, D))
        self.visual_embed = nn.Parameter(torch.zeros(C, P, D))  # camera identity x pooled position
        self.state_proj = nn.Sequential(nn.Linear(config.state_dim, D), nn.GELU(), nn.Linear(D, D))
        if config.head == "regression":
            self.action_queries = nn.Parameter(torch.zeros(H, D))
            self.action_out = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, config.action_dim))
        else:
            De = config.expert_width
            self.expert = LlamaModel(config.expert_config())
            self.action_in = nn.Linear(config.action_dim, De)
            self.time_mlp = nn.Sequential(nn.Linear(2 * De, De), nn.SiLU(), nn.Linear(De, De))
            self.action_out = nn.Linear(De, config.action_dim)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, VLAModel):
            nn.init.normal_(module.visual_embed, std=0.02)
            if module.config.head == "regression":
                nn.init.normal_(module.action_queries, std=0.02)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    # --- pretrained backbones (SmolVLA scale) -------------------------------------------------
    @classmethod
    def from_backbones(cls, vision_dir: str, language_dir: str, **overrides: Any) -> VLAModel:
        """A model whose vision tower and language model come from local pretrained directories
        (SigLIP: a SiglipVisionModel or full SiglipModel save; language: a LlamaModel or a
        SmolLM2-style LlamaForCausalLM save). Heads, connector and expert start random."""
        vision = SiglipVisionModel.from_pretrained(vision_dir)
        language = LlamaModel.from_pretrained(language_dir)
        vcfg, lcfg = vision.config, language.config
        config = VLAConfig(**{
            "image_size": vcfg.image_size, "patch_size": vcfg.patch_size, "vision_width": vcfg.hidden_size,
            "vocab_size": lcfg.vocab_size, "lm_width": lcfg.hidden_size,
            "vision_backbone": _backbone_dict(vcfg), "language_backbone": _backbone_dict(lcfg), **overrides})
        model = cls(config)
        _load_backbone(model.vision, vision.state_dict(), vision_dir, ignore_prefix="head.")
        _load_backbone(model.language, language.state_dict(), language_dir)
        return model

    # --- building blocks -----------------------------------------------------------------------
    def encode_observation(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """images float [B, C, 3, S, S] in [0, 1]; state [B, state_dim] normalised -> [B, O, D]."""
        B, C = images.shape[:2]
        dtype = self.vision.dtype
        feats = self.vision(pixel_values=(images.flatten(0, 1) * 2 - 1).to(dtype)).last_hidden_state
        grid = int(math.isqrt(feats.shape[1]))
        feats = feats.transpose(1, 2).reshape(B * C, -1, grid, grid)  # [B*C, Dv, g, g]
        pooled = F.adaptive_avg_pool2d(feats, self.config.pooled_grid).flatten(2).transpose(1, 2)
        visual = self.connector(pooled).view(B, C, self.config.tokens_per_camera, -1) + self.visual_embed[:C]
        state_token = self.state_proj(state.to(dtype))[:, None]  # [B, 1, D]
        return torch.cat([visual.flatten(1, 2), state_token], dim=1)

    def encode_instruction(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Prefix:
        """Run the instruction once; its keys/values become the prefix cache. Right-padded [B, L]."""
        cache = DynamicCache(config=self.language.config)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(input_ids)
        self.language(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                      cache=cache, use_cache=True)
        return Prefix(cache, attention_mask)

    @staticmethod
    def _positions_after(mask: torch.Tensor, n: int, offset: int = 0) -> torch.Tensor:
        """Positions of n tokens following each row's real prefix tokens (padding is skipped)."""
        return mask.sum(1, keepdim=True) + offset + torch.arange(n, device=mask.device)[None]

    @staticmethod
    def _extend_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([mask, mask.new_ones(mask.shape[0], n)], dim=1)

    def _queries(self, batch: int) -> torch.Tensor:
        return self.action_queries[None].expand(batch, -1, -1)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cache: DynamicCache, mask: torch.Tensor,
                 offset: int) -> torch.Tensor:
        """Flow expert: noisy actions [B, H, A] at time t [B] (or per action, [B, H]) over the cached
        [instruction, obs]."""
        # the expert's norm holds its float dtype (action_in's weight may be a quantized module's)
        tokens = self.action_in(x_t.to(self.expert.norm.weight.dtype))
        B, H, De = tokens.shape
        t = t[:, None].expand(B, H) if t.ndim == 1 else t
        temb = sinusoidal_embedding(t.reshape(-1), De).reshape(B, H, De).to(tokens.dtype)
        tokens = self.time_mlp(torch.cat([tokens, temb], dim=-1))
        H = tokens.shape[1]
        hidden = self.expert(inputs_embeds=tokens, attention_mask=self._extend_mask(mask, H),
                             position_ids=self._positions_after(mask[:, : mask.shape[1] - offset], H, offset),
                             cache=cache).last_hidden_state
        return self.action_out(hidden)

    def _cached_velocity(self, x_t: torch.Tensor, t: torch.Tensor, cache: DynamicCache,
                         mask: torch.Tensor) -> torch.Tensor:
        """``velocity`` over the cache, left exactly as found: its tensors are put back, not cut out
        of the ones the step built (which, under guidance, would also tie them to the step's graph)."""
        saved = [(layer.keys, layer.values) for layer in cache.layers]
        try:
            return self.velocity(x_t, t, cache, mask, offset=self.config.observation_tokens).float()
        finally:
            for layer, (keys, values) in zip(cache.layers, saved, strict=True):
                layer.keys, layer.values = keys, values

    def _guided_velocity(self, x_t: torch.Tensor, t: torch.Tensor, cache: DynamicCache, mask: torch.Tensor,
                         guide: Guide) -> torch.Tensor:
        """RTC: v - scale * J^T W (target - clean), clean = x_t - t v the predicted actions [B, H, A]."""
        weights = guide.weights.to(x_t.device)[None, :, None]
        if guide.exact:
            with torch.enable_grad():
                x_in = x_t.detach().requires_grad_(True)
                v = self._cached_velocity(x_in, t, cache, mask)
                clean = x_in - t[:, None, None] * v
                error = (guide.target - clean.detach()) * weights
                (pull,) = torch.autograd.grad(clean, x_in, grad_outputs=error)
            v = v.detach()
        else:
            v = self._cached_velocity(x_t, t, cache, mask)
            pull = (guide.target - (x_t - t[:, None, None] * v)) * weights
        return v - guidance_scale(float(t[0]), guide.max_guidance) * pull

    def _euler(self, cache: DynamicCache, mask: torch.Tensor, noise: torch.Tensor,
               guide: Guide | None = None) -> torch.Tensor:
        """Integrate from noise (t=1) to actions (t=0) over the cache (which every step leaves as is)."""
        x, steps = noise, self.config.flow_steps
        if guide is not None and guide.given is not None:
            return self._euler_given(cache, mask, x, guide.target, guide.given)
        for k in range(steps):
            t = torch.full((x.shape[0],), 1.0 - k / steps, device=x.device)
            if guide is None:
                v = self._cached_velocity(x, t, cache, mask)
            else:
                v = self._guided_velocity(x, t, cache, mask, guide)
            x = x - v / steps
        return x

    def _euler_given(self, cache: DynamicCache, mask: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
                     given: int) -> torch.Tensor:
        """Train-time RTC: the first ``given`` actions are the target's, at flow time 0, every step."""
        if not 0 <= given <= self.config.rtc_train_delay:
            raise ValueError(f"{given} given actions: this model was trained with up to "
                             f"rtc_train_delay={self.config.rtc_train_delay}")
        B, H, _ = x.shape
        known = (torch.arange(H, device=x.device) < given)[None].expand(B, H)  # [B, H]
        target = target.to(x.dtype)
        steps = self.config.flow_steps
        for k in range(steps):
            x = torch.where(known[..., None], target, x)
            t = torch.where(known, 0.0, 1.0 - k / steps)
            x = x - self._cached_velocity(x, t, cache, mask) / steps
        return torch.where(known[..., None], target, x)

    # --- inference with the prefix cache ---------------------------------------------------------
    def predict(self, prefix: Prefix, images: torch.Tensor, state: torch.Tensor,
                noise: torch.Tensor | None = None, guide: Guide | None = None) -> torch.Tensor:
        """One control step over the cached instruction -> normalised actions [B, H, A].
        ``guide``: real-time chunking (flow head). The prefix cache is restored before returning
        (also on error)."""
        try:
            if self.config.head == "regression":
                return self._regression_step(prefix, images, state).float()
            mask = self._observe(prefix, images, state)
            noise = self._noise(images.shape[0], images.device) if noise is None else noise
            return self._euler(prefix.cache, mask, noise.float(), guide)
        finally:
            prefix.restore()

    def _regression_step(self, prefix: Prefix, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """[observation, action queries] over the prefix cache -> actions [B, H, A] (cache grows)."""
        obs = self.encode_observation(images, state)
        tokens = torch.cat([obs, self._queries(obs.shape[0])], dim=1)
        n = tokens.shape[1]
        hidden = self.language(inputs_embeds=tokens, attention_mask=self._extend_mask(prefix.mask, n),
                               position_ids=self._positions_after(prefix.mask, n),
                               cache=prefix.cache).last_hidden_state
        return self.action_out(hidden[:, -self.config.chunk_size:])

    def _observe(self, prefix: Prefix, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Append the observation's keys/values to the cache; returns the mask of [prefix, obs]."""
        obs = self.encode_observation(images, state)
        n = obs.shape[1]
        self.language(inputs_embeds=obs, attention_mask=self._extend_mask(prefix.mask, n),
                      position_ids=self._positions_after(prefix.mask, n), cache=prefix.cache)
        return self._extend_mask(prefix.mask, n)

    def shared_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Prefix:
        """Training: encode each distinct instruction of a batch once (with gradients) and give every
        row its instruction's keys/values. Exact for the same reason the inference cache is."""
        rows = torch.cat([input_ids, attention_mask], dim=1)
        unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
        L = input_ids.shape[1]
        prefix = self.encode_instruction(unique[:, :L], unique[:, L:])
        for layer in prefix.cache.layers:
            layer.keys, layer.values = layer.keys[inverse], layer.values[inverse]
        return Prefix(prefix.cache, attention_mask)

    def _noise(self, batch: int, device: torch.device,
               generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (batch, self.config.chunk_size, self.config.action_dim)
        return torch.randn(shape, device=device, generator=generator)

    # --- full forward without any cache (training, and the reference for the cache) ------------------
    def predict_uncached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: torch.Tensor,
                         state: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The same prediction recomputing the instruction in one pass with the observation."""
        if self.config.head == "regression":
            return self._regression_forward(input_ids, attention_mask, images, state).float()
        cache, mask = self._joint_cache(input_ids, attention_mask, images, state)
        noise = self._noise(input_ids.shape[0], input_ids.device) if noise is None else noise
        return self._euler(cache, mask, noise.float())

    def _joint_sequence(self, input_ids, attention_mask, images, state):
        obs = self.encode_observation(images, state)
        embeds = torch.cat([self.language.embed_tokens(input_ids), obs], dim=1)
        L = input_ids.shape[1]
        positions = torch.cat([torch.arange(L, device=input_ids.device)[None].expand_as(input_ids),
                               self._positions_after(attention_mask, obs.shape[1])], dim=1)
        return embeds, self._extend_mask(attention_mask, obs.shape[1]), positions

    def _regression_forward(self, input_ids, attention_mask, images, state) -> torch.Tensor:
        embeds, mask, positions = self._joint_sequence(input_ids, attention_mask, images, state)
        H = self.config.chunk_size
        embeds = torch.cat([embeds, self._queries(embeds.shape[0])], dim=1)
        after = positions[:, -1:] + 1 + torch.arange(H, device=mask.device)[None]
        positions = torch.cat([positions, after], dim=1)
        hidden = self.language(inputs_embeds=embeds, attention_mask=self._extend_mask(mask, H),
                               position_ids=positions).last_hidden_state
        return self.action_out(hidden[:, -H:])

    def _joint_cache(self, input_ids, attention_mask, images, state) -> tuple[DynamicCache, torch.Tensor]:
        embeds, mask, positions = self._joint_sequence(input_ids, attention_mask, images, state)
        cache = DynamicCache(config=self.language.config)
        self.language(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache)
        return cache, mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: torch.Tensor,
                state: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
        """Training loss. actions: normalised targets [B, H, A]."""
        prefix = self.shared_prefix(input_ids, attention_mask)
        if self.config.head == "regression":
            pred = self._regression_step(prefix, images, state).float()
            return {"loss": F.l1_loss(pred, actions), "pred": pred}
        mask = self._observe(prefix, images, state)
        B = actions.shape[0]
        noise = self._noise(B, actions.device, generator)
        # pi0 / SmolVLA: t ~ Beta(1.5, 1) favours noisier times; x_t = t*noise + (1-t)*actions
        beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
        t = beta.sample((B,)).to(actions.device) * 0.999 + 0.001
        t = t[:, None].expand(B, self.config.chunk_size)  # [B, H]
        learn = torch.ones_like(t, dtype=torch.bool)
        if self.config.rtc_train_delay:  # train-time RTC: d leading actions given clean, not learned
            # d = 0 for half the rows, so the first actions (all a low-latency run executes) keep
            # half their supervision; else d ~ U{1..D}
            d = torch.randint(1, self.config.rtc_train_delay + 1, (B, 1), generator=generator,
                              device=actions.device)
            d = d * (torch.rand((B, 1), generator=generator, device=actions.device) < 0.5)
            learn = torch.arange(self.config.chunk_size, device=actions.device)[None] >= d
            t = torch.where(learn, t, 0.0)
        x_t = t[..., None] * noise + (1 - t[..., None]) * actions
        v = self.velocity(x_t, t, prefix.cache, mask, offset=self.config.observation_tokens).float()
        error = (v - (noise - actions)).square().mean(dim=-1)  # [B, H]
        return {"loss": error[learn].mean(), "pred": x_t - t[..., None] * v}


def _backbone_dict(cfg: PreTrainedConfig) -> dict:
    d = cfg.to_dict()
    for key in ("transformers_version", "architectures", "_name_or_path", "model_type", "torch_dtype",
                "dtype"):
        d.pop(key, None)
    return d


def count_parameters(config: VLAConfig) -> int:
    """Parameters of a config without allocating them (meta device)."""
    with torch.device("meta"):
        model = VLAModel(config)
    return sum(p.numel() for p in model.parameters())


def _load_backbone(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, ignore_prefix: str = ""
) -> None:
    """Load ``state`` into ``module``, strictly but for keys under ``ignore_prefix`` (SigLIP's MAP head,
    which this model does not build); a missing or unexpected key raises, naming the keys and ``source``."""
    result = module.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not (ignore_prefix and k.startswith(ignore_prefix))]
    if result.missing_keys or unexpected:
        raise ValueError(
            f"backbone weights from {source} do not fit {type(module).__name__}: "
            f"missing keys {result.missing_keys[:8]}{' ...' if len(result.missing_keys) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
