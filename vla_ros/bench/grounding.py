"""`python -m vla_ros.bench grounding [--quick] [--checkpoint DIR]`: the instruction check's errors.

With the checkpoint's lexicon (grounding.json; the default checkpoint's by default): the share
of valid instructions it rejects (false rejections), over the held-out paraphrases (every task,
every template of sim/paraphrase.py's HELD_OUT), generated paraphrases from a stream training
never drew (seed 777), and the templates in other casing; and the share of out-of-scope
instructions it rejects (true rejections), over OUT_OF_SCOPE below: written by hand, naming no
task, no object, an object or colour the simulator lacks, a negation, or two objects. Also the
check's time per instruction. The last line is one JSON object with
``false_rejection_rate_heldout``, ``false_rejection_rate_generated``, ``false_rejection_rate_casing``,
``true_rejection_rate`` and ``ground_us_p50``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from vla_ros.core.grounding import Lexicon
from vla_ros.sim.paraphrase import HELD_OUT, casing_variant, paraphrase
from vla_ros.sim.scene import COLOURS, SHAPES
from vla_ros.sim.tasks import INSTRUCTION_TEMPLATES

OUT_OF_SCOPE = (
    "make me a coffee",
    "hello",
    "what time is it?",
    "open the door",
    "wave at me",
    "dance",
    "clean the table",
    "stop",
    "go home",
    "turn on the lights",
    "tell me a joke",
    "pick up the yellow cube",
    "grab the purple ball",
    "lift the orange cylinder",
    "pick up the red mug",
    "put the cup in the bowl",
    "grab the blue bottle",
    "take the apple",
    "put the red cube",
    "place the green ball",
    "move the blue cylinder",
    "don't pick up the red cube",
    "never touch the blue ball",
    "do not put the green cube in the bowl",
    "pick up the red cube and the blue ball",
    "put the green ball and the red cube in the bowl",
    "lift the green thing",
    "pick up the red one",
    "grab the cube",
    "put it in the bowl",
    "stack the cubes",
    "pour water into the bowl",
    "push the button",
    "fold the towel",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vla_ros.bench grounding",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="360 generated paraphrases instead of 3600")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the default one)")
    args = p.parse_args(argv)
    from vla_ros.models.checkpoint import load_checkpoint
    from vla_ros.models.policy import default_checkpoint

    ckpt = load_checkpoint(args.checkpoint or default_checkpoint())
    if ckpt.lexicon is None:
        raise SystemExit(f"{ckpt.path}: no grounding.json (trained before the instruction check?)")
    lex = Lexicon(ckpt.lexicon)
    tasks = [(f, c, s) for f in lex.slots["task"] for c in COLOURS for s in SHAPES]
    rng = np.random.default_rng(777)
    valid = {
        "heldout": [(t.format(colour=c, shape=s), (f, c, s)) for f, c, s in tasks for t in HELD_OUT[f]],
        "generated": [
            (paraphrase(f, c, s, rng), (f, c, s))
            for i in range(360 if args.quick else 3600)
            for f, c, s in [tasks[i % len(tasks)]]
        ],
        "casing": [
            (casing_variant(INSTRUCTION_TEMPLATES[f][0].format(colour=c, shape=s), rng), (f, c, s))
            for f, c, s in tasks
            for _ in range(10)
        ],
    }
    out, times = {}, []
    for name, cases in valid.items():
        wrong = []
        for text, (f, c, s) in cases:
            t0 = time.perf_counter()
            g = lex.ground(text)
            times.append(time.perf_counter() - t0)
            if not g.grounded or g.reading != {"task": f, "colour": c, "shape": s}:
                wrong.append({"text": text, "problem": g.problem or f"read as {g.reading}"})
        out[f"false_rejection_rate_{name}"] = round(len(wrong) / len(cases), 4)
        out[f"{name}_cases"] = len(cases)
        out[f"{name}_examples_rejected"] = wrong[:5]
        print(f"{name:>9}: {len(wrong)}/{len(cases)} valid instructions rejected", file=sys.stderr)
    refused = [text for text in OUT_OF_SCOPE if not lex.ground(text).grounded]
    accepted = sorted(set(OUT_OF_SCOPE) - set(refused))
    out.update(
        true_rejection_rate=round(len(refused) / len(OUT_OF_SCOPE), 4),
        out_of_scope_cases=len(OUT_OF_SCOPE),
        out_of_scope_accepted=accepted,
        ground_us_p50=round(float(np.median(times)) * 1e6, 1),
        ground_us_p99=round(float(np.percentile(times, 99)) * 1e6, 1),
        checkpoint=str(ckpt.path),
    )
    print(
        f"out of scope: {len(refused)}/{len(OUT_OF_SCOPE)} rejected; check {out['ground_us_p50']} us p50",
        file=sys.stderr,
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
