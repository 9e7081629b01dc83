"""bench kv-cache's counted FLOPs: CPU attention is counted, and a step over the cached instruction
costs the same arithmetic at any instruction length except the attention over the longer prefix."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from vla_ros.bench.kv_cache import counted_flops, instruction_of
from vla_ros.models.tokenizer import ByteTokenizer, batch_encode
from vla_ros.models.vla import VLAModel, make_config


def test_cpu_attention_and_matmuls_are_counted():
    q, k, v = torch.rand(1, 4, 19, 32), torch.rand(1, 4, 70, 32), torch.rand(1, 4, 70, 32)
    mask = torch.ones(1, 1, 19, 70, dtype=torch.bool)
    attention = counted_flops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert attention == 4 * 4 * 19 * 70 * 32  # QK^T and PV: 2 multiply-adds each
    linear = torch.nn.Linear(16, 8)
    assert counted_flops(lambda: linear(torch.rand(5, 16))) == 2 * 5 * 16 * 8


def test_a_cached_step_grows_only_by_the_attention_over_the_longer_prefix():
    torch.manual_seed(0)
    cfg = make_config("tiny", max_instruction_tokens=64)
    model = VLAModel(cfg).eval()
    images, state = torch.rand(1, 2, 3, 64, 64), torch.zeros(1, cfg.state_dim)
    flops = {}
    with torch.inference_mode():
        for n in (8, 64):
            ids, mask, _ = batch_encode(ByteTokenizer(), [instruction_of(n, random.Random(n))], 64)
            prefix = model.encode_instruction(ids, mask)
            flops[n] = counted_flops(lambda p=prefix: model.predict(p, images, state))
    step_tokens = cfg.observation_tokens + cfg.chunk_size
    head_dim = cfg.lm_width // cfg.lm_heads
    attention = 4 * cfg.lm_layers * cfg.lm_heads * step_tokens * (64 - 8) * head_dim  # QK^T and PV
    assert flops[64] - flops[8] == attention
