"""`python -m vla_ros.bench kv-cache [--quick]`: per-step latency with and without the prefix cache.

For instruction lengths 8/32/128/256 tokens it times one control step of the model
(vision + observation tokens + action head) run over the cached instruction ("cached"), and the
same step recomputing the instruction with the observation ("uncached"). Lengths and modes are
interleaved in a shuffled order every round and reported as medians, because this machine is
shared and noisy. Rounds stop early when ``--max-seconds`` have passed (at least 2 rounds), so the
SmolVLA-scale preset (seconds per step on a CPU) finishes; the JSON says how many ran.

``--config`` picks a preset at random init: ``tiny`` (the default model, where the vision tower
costs as much as the language model), ``small`` (the language model dominates: where the cache
pays) or ``smolvla`` (~450M; its 48-token instruction limit is raised to the longest length here,
so the cost of a long instruction shows).

Beside the medians it counts each step's floating-point operations once per length (torch's
FlopCounterMode: matmuls, convolutions, attention), which no machine load can disturb:
``cached_flops_growth_8_to_256`` and ``flops_speedup_at_128`` say what the timings should show on a
quiet machine, and how much of the growth is arithmetic (attention over a longer prefix) rather
than overhead.

It also times the two ways of restoring the cache after a step (crop the appended keys/values vs
deep-copy the prefix before the step), the one-time prefix encode, and an LRU hit. The last line
is a JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time

import torch

from vla_ros.models.tokenizer import ByteTokenizer, batch_encode
from vla_ros.models.vla import PRESETS, Prefix, VLAModel, count_parameters, make_config

LENGTHS = (8, 32, 128, 256)


def instruction_of(n_tokens: int, rng: random.Random) -> str:
    """ASCII text that the byte tokenizer turns into exactly n_tokens (BOS + n-1 bytes)."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(n_tokens - 1))


def counted_flops(fn) -> int:
    """Floating-point operations of one call of ``fn`` (FlopCounterMode; CPU attention included)."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_cpu_attention()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _count_cpu_attention() -> None:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU one SDPA dispatches to here;
    give it the same formula (2 matmuls: QK^T and PV)."""
    import torch.utils.flop_counter as fc

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in fc.flop_registry or op.default in fc.flop_registry:
        return

    @fc.register_flop_formula(op)
    def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_ros.bench kv-cache", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    p.add_argument("--config", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--head", default=None, choices=["regression", "flow"])
    p.add_argument("--attention", default=None, choices=["sdpa_gqa", "sdpa", "eager"],
                   help="attention implementation (default: the config's, sdpa_gqa; sdpa = transformers', "
                        "which repeats grouped key/value heads under a mask)")
    p.add_argument("--rounds", type=int, default=0, help="rounds of every length x mode (40; quick 8)")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="stop starting rounds after this long (default 900; quick 120); at least 2 run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rounds = args.rounds or (8 if args.quick else 40)
    max_seconds = args.max_seconds or (120.0 if args.quick else 900.0)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    overrides = {"head": args.head} if args.head else {}
    if args.attention:
        overrides["attention"] = args.attention
    cfg = make_config(args.config, **overrides)
    cfg.max_instruction_tokens = max(cfg.max_instruction_tokens, max(LENGTHS))
    model = VLAModel(cfg).eval()
    tok = ByteTokenizer()
    S, C = cfg.image_size, len(cfg.cameras)
    images = torch.rand(1, C, 3, S, S)
    state = torch.randn(1, cfg.state_dim)
    noise = torch.randn(1, cfg.chunk_size, cfg.action_dim)

    inputs, prefixes, encode = {}, {}, {n: [] for n in LENGTHS}
    with torch.inference_mode():
        for n in LENGTHS:
            ids, mask, (enc,) = batch_encode(tok, [instruction_of(n, rng)], cfg.max_instruction_tokens)
            assert len(enc.ids) == n
            inputs[n] = (ids, mask)
            prefixes[n] = model.encode_instruction(ids, mask)

        def cached(n: int) -> None:
            model.predict(prefixes[n], images, state, noise)

        def uncached(n: int) -> None:
            model.predict_uncached(*inputs[n], images, state, noise)

        def with_copy(n: int) -> None:
            work = Prefix(copy.deepcopy(prefixes[n].cache), prefixes[n].mask)
            if cfg.head == "regression":
                model._regression_step(work, images, state)
            else:
                model._euler(work.cache, model._observe(work, images, state), noise)

        def with_crop(n: int) -> None:  # what `predict` does: append, then crop back
            cached(n)

        for n in LENGTHS:  # warm-up
            cached(n), uncached(n)
        flops = {(mode, n): counted_flops(lambda s=step, k=n: s(k))
                 for mode, step in (("cached", cached), ("uncached", uncached)) for n in LENGTHS}
        times = {(mode, n): [] for mode in ("cached", "uncached") for n in LENGTHS}
        restore = {"crop": [], "copy": []}
        t_start, done = time.monotonic(), 0
        for _ in range(rounds):
            if done >= 2 and time.monotonic() - t_start > max_seconds:
                break
            done += 1
            jobs = [(mode, n) for mode in ("cached", "uncached") for n in LENGTHS]
            rng.shuffle(jobs)
            for mode, n in jobs:
                step = cached if mode == "cached" else uncached
                times[(mode, n)].append(timed(lambda s=step, k=n: s(k)))
            order = ["crop", "copy"]
            rng.shuffle(order)
            for how in order:
                restore[how].append(timed(lambda h=how: with_crop(128) if h == "crop" else with_copy(128)))
            for n in LENGTHS:
                encode[n].append(timed(lambda k=n: model.encode_instruction(*inputs[k])))
        lru_hits = []
        from vla_ros.core.policy import InstructionContext

        lru: dict[str, InstructionContext] = {"goal": InstructionContext("goal", 8, cache=prefixes[8])}
        for _ in range(1000):
            lru_hits.append(timed(lambda: lru.get("goal")))

    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    cached_ms = {n: round(ms[("cached", n)], 3) for n in LENGTHS}
    uncached_ms = {n: round(ms[("uncached", n)], 3) for n in LENGTHS}
    print(f"config {args.config} (head {cfg.head}, {count_parameters(cfg) / 1e6:.2f}M parameters), "
          f"{done} rounds, {args.threads} thread(s); "
          f"observation+action tokens per step: {cfg.observation_tokens}"
          f"{' + ' + str(cfg.chunk_size) if cfg.head == 'regression' else ''}")
    print("| instruction tokens | cached step (ms) | uncached step (ms) | speedup | prefix encode (ms) |")
    print("|---|---|---|---|---|")
    for n in LENGTHS:
        print(f"| {n} | {cached_ms[n]:.2f} | {uncached_ms[n]:.2f} | {uncached_ms[n] / cached_ms[n]:.2f}x "
              f"| {statistics.median(encode[n]) * 1e3:.2f} |")
    gflops = {mode: {n: round(flops[(mode, n)] / 1e9, 4) for n in LENGTHS} for mode in ("cached", "uncached")}
    counted = (f"{n} tokens cached {gflops['cached'][n]:.3f} / uncached {gflops['uncached'][n]:.3f}"
               for n in LENGTHS)
    print("GFLOP per step (counted): " + ", ".join(counted))
    restore_ms = {k: round(statistics.median(v) * 1e3, 3) for k, v in restore.items()}
    print(f"restore after a step at 128 tokens (whole step, median): crop {restore_ms['crop']:.2f} ms, "
          f"deep copy {restore_ms['copy']:.2f} ms")
    result = {
        "benchmark": "kv-cache", "config": args.config, "head": cfg.head, "attention": cfg.attention,
        "threads": args.threads,
        "parameters": count_parameters(cfg), "rounds": done, "lengths": list(LENGTHS),
        "cached_ms": cached_ms, "uncached_ms": uncached_ms,
        "cached_growth_8_to_256": round(cached_ms[256] / cached_ms[8] - 1, 4),
        "uncached_growth_8_to_256": round(uncached_ms[256] / uncached_ms[8] - 1, 4),
        "speedup_at_128": round(uncached_ms[128] / cached_ms[128], 3),
        "gflops": gflops,
        "cached_flops_growth_8_to_256": round(flops[("cached", 256)] / flops[("cached", 8)] - 1, 4),
        "flops_speedup_at_128": round(flops[("uncached", 128)] / flops[("cached", 128)], 3),
        "encode_ms": {n: round(statistics.median(encode[n]) * 1e3, 3) for n in LENGTHS},
        "step_with_restore_ms_at_128": restore_ms,
        "lru_hit_us": round(statistics.median(lru_hits) * 1e6, 3),
        "observation_tokens": cfg.observation_tokens,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
