"""The mark task family (sim/tasks.py EXTRA_FAMILIES): the expert succeeds, it is sampled only when
named, the grounding lexicon reads it, and the older families' seeds give what they gave before it
existed (task records and instruction streams fingerprinted with the code before the change)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from vla_ros.core.grounding import Lexicon
from vla_ros.sim import TASK_FAMILIES, TabletopEnv
from vla_ros.sim.collect import record_expert_episode
from vla_ros.sim.paraphrase import HELD_OUT, lexicon, paraphrase
from vla_ros.sim.scene import COLOURS, SHAPES
from vla_ros.sim.tasks import ALL_FAMILIES, EXTRA_FAMILIES, INSTRUCTION_TEMPLATES, sample_task

# sha256 of the task records / paraphrases below, computed with the commit before the mark family
OLD_TASKS_SHA256 = "e02c8a6aab82023e8069f00b0fffc8a647c23b29c299dabab48ccf1d8486c8b3"
OLD_PARAPHRASES_SHA256 = "a1061efe7de316fb1457f91f5ec05947a003bf0c20562009dce02da5ac9602d9"


def test_families():
    assert TASK_FAMILIES == ("pick", "place")
    assert EXTRA_FAMILIES == ("mark",) and ALL_FAMILIES == ("pick", "place", "mark")


def test_old_families_unchanged():
    tasks = [sample_task(np.random.default_rng(s)).to_dict() for s in range(50)]
    tasks += [sample_task(np.random.default_rng(s), family=f).to_dict()
              for s in range(10) for f in ("pick", "place")]
    assert all("mark_xy" not in t for t in tasks)
    assert hashlib.sha256(json.dumps(tasks, sort_keys=True).encode()).hexdigest() == OLD_TASKS_SHA256
    rng = np.random.default_rng(0)
    texts = [paraphrase(f, c, s, rng) for f in ("pick", "place") for c in ("red", "blue")
             for s in ("cube", "ball") for _ in range(10)]
    assert hashlib.sha256("\n".join(texts).encode()).hexdigest() == OLD_PARAPHRASES_SHA256


def test_mark_only_when_named():
    rng = np.random.default_rng(0)
    assert {sample_task(rng).family for _ in range(300)} == {"pick", "place"}
    task = sample_task(np.random.default_rng(3), family="mark")
    assert task.family == "mark" and task.bowl_xy is None and len(task.mark_xy) == 2
    assert task.instruction == INSTRUCTION_TEMPLATES["mark"][0].format(colour=task.colour, shape=task.shape)
    assert "mark_xy" in task.to_dict()
    for obj in task.objects:  # the mark's footprint is clear of every object
        assert np.hypot(*(np.array(obj["xy"]) - task.mark_xy)) > 0.07


@pytest.fixture(scope="module")
def env():
    e = TabletopEnv(image_size=(32, 32), seed=0)
    yield e
    e.close()


@pytest.mark.parametrize("shape", SHAPES)
def test_expert_succeeds(env, shape):
    for seed in (0, 1):
        ep = record_expert_episode(env, seed, "mark", shape=shape)
        assert ep.success, (seed, shape, env.task.to_dict(), env.target_position().tolist())
        assert ep.task["family"] == "mark" and ep.instruction.endswith("on the mark")
        assert np.hypot(*(env.target_position()[:2] - env.task.mark_xy)) <= 0.025


def test_holding_it_over_the_mark_is_no_success(env):
    env.reset(seed=5, task="mark")
    assert not env.success()  # on the table, away from the mark
    while env.elapsed < 3.2:  # grasped and lifting (the gripper has closed at 2.5 s)
        env.step(env.expert_action())
    assert not env.success()


def test_grounding_reads_the_mark():
    tasks = [{"family": f, "colour": c, "shape": s} for f in ALL_FAMILIES for c in COLOURS for s in SHAPES]
    recorded = [INSTRUCTION_TEMPLATES[t["family"]][0].format(**t) for t in tasks]
    lex = Lexicon(lexicon(tasks, recorded, recorded))
    assert lex.phrasings["mark"] == "put the {colour} {shape} on the mark"
    for text, family in (("put the red cube on the mark", "mark"),
                         ("Place the blue ball onto the marker!", "mark"),
                         ("put the red cube in the bowl", "place"), ("pick up the green cylinder", "pick")):
        g = lex.ground(text)
        assert g.grounded and g.reading["task"] == family, (text, g)
    rng = np.random.default_rng(1)
    for template in HELD_OUT["mark"]:
        g = lex.ground(template.format(colour="green", shape="cube"))
        assert g.grounded and g.reading == {"task": "mark", "colour": "green", "shape": "cube"}, (template, g)
    for _ in range(30):
        text = paraphrase("mark", "blue", "cylinder", rng, typos=False)
        assert "mark" in text.lower(), text
        assert lex.ground(text).reading.get("task") == "mark", text
    assert not lex.ground("put the red cube on the mark and in the bowl").grounded
