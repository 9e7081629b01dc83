"""Instruction grounding (core/grounding.py) against the simulator's lexicon: valid paraphrases
ground to their task, out-of-scope instructions are refused by name, and the Runtime rejects an
ungrounded goal as NOT_UNDERSTOOD (or only warns, or skips the check, per instruction_grounding)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from core_doubles import FakeClock

from vla_ros.core.grounding import Lexicon, one_slip
from vla_ros.core.runtime import Runtime, RuntimeConfig
from vla_ros.core.scripted_policy import ScriptedPolicy, default_spec, make_observation
from vla_ros.sim.paraphrase import HELD_OUT, held_out, lexicon, paraphrase, phrasings
from vla_ros.sim.scene import COLOURS, SHAPES
from vla_ros.sim.tasks import INSTRUCTION_TEMPLATES

TASKS = [{"family": f, "colour": c, "shape": s} for f in ("pick", "place") for c in COLOURS for s in SHAPES]

OUT_OF_SCOPE = {
    "make me a coffee": "no colour",
    "hello": "no task",
    "pick up the yellow cube": "'yellow' is not one it knows",
    "grab the red mug": "'mug' is not one it knows",
    "put the red cube": "needs a destination (bowl)",
    "don't pick up the blue ball": "negation",
    "pick up the red cube and the blue ball": "several colours",
    "lift the green thing": "no shape",
    "open the drawer": "no task",
}


def _reading(task: dict) -> dict:
    return {"task": task["family"], "colour": task["colour"], "shape": task["shape"]}


@pytest.fixture(scope="module")
def lex() -> Lexicon:
    rng = np.random.default_rng(0)
    texts = [paraphrase(t["family"], t["colour"], t["shape"], rng) for t in TASKS for _ in range(64)]
    return Lexicon(lexicon(TASKS, texts))


def test_templates_and_held_out_paraphrases_ground_to_their_task(lex):
    for task in TASKS:
        for template in INSTRUCTION_TEMPLATES[task["family"]] + HELD_OUT[task["family"]]:
            text = template.format(colour=task["colour"], shape=task["shape"])
            g = lex.ground(text)
            assert g.grounded and g.reading == _reading(task), (text, g)
            assert g.confidence > 0.5, (text, g)


def test_false_rejections_on_generated_paraphrases_stay_under_one_percent(lex):
    rng = np.random.default_rng(12345)  # another stream than the lexicon's
    wrong = []
    for i in range(1800):
        task = TASKS[i % len(TASKS)]
        text = paraphrase(task["family"], task["colour"], task["shape"], rng)
        g = lex.ground(text)
        if not g.grounded or g.reading != _reading(task):
            wrong.append((text, g.problem))
    assert len(wrong) <= 18, wrong  # <= 1 % (typing slips in three-letter words are the usual loss)


@pytest.mark.parametrize(("text", "words"), sorted(OUT_OF_SCOPE.items()))
def test_out_of_scope_instructions_are_refused_by_name(lex, text, words):
    g = lex.ground(text)
    assert not g.grounded and words in g.problem, g
    assert g.confidence < 1.0


def test_casing_punctuation_inflections_and_typing_slips(lex):
    g = lex.ground("PLACE the Green ball... in the BOWL!!")
    assert g.grounded and g.reading == {"task": "place", "colour": "green", "shape": "ball"}
    assert g.confidence == 1.0 and g.summary() == "place green ball"
    g = lex.ground("would you mind picking up the bleu cubes")
    assert g.grounded and g.reading == {"task": "pick", "colour": "blue", "shape": "cube"}
    assert g.corrections == ("bleu->blue",) and g.confidence < 1.0
    assert lex.ground("lift the red ball").grounded and not lex.ground("lift all of them").grounded
    assert one_slip("bowl", "bwol") and one_slip("cube", "cub") and not one_slip("cube", "tube!")


def test_a_malformed_lexicon_is_refused_by_name():
    with pytest.raises(ValueError, match="needs 'slots' with task, colour, shape"):
        Lexicon({"slots": {"task": {}}})
    with pytest.raises(ValueError, match="destination for unknown task 'stack'"):
        Lexicon(
            {
                "slots": {"task": {"pick": ["pick"]}, "colour": {}, "shape": {}},
                "destinations": {"stack": ["tower"]},
            }
        )


def _runtime(lex: Lexicon, mode: str) -> tuple[Runtime, FakeClock]:
    clock = FakeClock()
    spec = replace(default_spec(), lexicon=lex.to_dict())
    rt = Runtime(ScriptedPolicy(spec=spec), RuntimeConfig(instruction_grounding=mode), lambda c: None, clock)
    rt.submit_observation(make_observation(spec, clock(), np.zeros(spec.state_dim, np.float32)))
    return rt, clock


def test_runtime_rejects_an_ungrounded_goal_and_reports_the_grounding(lex):
    rt, _ = _runtime(lex, "reject")
    decision = rt.start_goal("make me a coffee")
    assert not decision.accepted
    assert decision.reason.startswith("instruction not understood: it names no task"), decision
    assert "'coffee' is not one it knows" in decision.reason
    assert rt.goal_grounding() is None
    decision = rt.start_goal("Could you put the red cube in the bowl?")
    assert decision.accepted, decision
    g = rt.goal_grounding()
    assert g.reading == {"task": "place", "colour": "red", "shape": "cube"} and g.confidence > 0.5
    rt.cancel_goal()
    assert rt.goal_grounding() is None  # only the active goal's


def test_runtime_warn_accepts_and_off_skips_the_check(lex):
    rt, _ = _runtime(lex, "warn")
    assert rt.start_goal("make me a coffee").accepted
    assert not rt.goal_grounding().grounded  # reported, not enforced
    rt, _ = _runtime(lex, "off")
    assert rt.start_goal("make me a coffee").accepted and rt.goal_grounding() is None
    with pytest.raises(ValueError, match="instruction_grounding must be one of"):
        RuntimeConfig(instruction_grounding="maybe").validate()


def test_phrasings_come_from_the_recorded_instructions_and_rephrase_every_reading():
    recorded = [INSTRUCTION_TEMPLATES[t["family"]][0].format(**t) for t in TASKS]
    tasks = [*TASKS, {"family": "pick", "colour": "red", "shape": "cube"}]  # a paraphrase is no phrasing
    found = phrasings(tasks, [*recorded, "grab the red block"])
    assert found == {f: INSTRUCTION_TEMPLATES[f][0] for f in ("pick", "place")}
    lex = Lexicon(lexicon(TASKS, recorded, recorded))
    assert Lexicon(lex.to_dict()).phrasings == found  # grounding.json keeps them
    rng = np.random.default_rng(3)
    for task, canonical in zip(TASKS, recorded, strict=True):
        for text in (canonical, held_out(task["family"], task["colour"], task["shape"], rng),
                     paraphrase(task["family"], task["colour"], task["shape"], rng, typos=False)):
            assert lex.phrase(lex.ground(text)) == canonical, text
    assert lex.phrase(lex.ground("make me a coffee")) is None
    assert Lexicon(lexicon(TASKS, recorded)).phrase(lex.ground(recorded[0])) is None  # none recorded


def test_a_phrasing_with_other_fields_is_refused_by_name():
    data = {"slots": {"task": {"pick": ["pick"]}, "colour": {}, "shape": {}},
            "phrasings": {"pick": "pick up the {size} {shape}"}}
    with pytest.raises(ValueError, match="may use only {colour} and {shape}"):
        Lexicon(data)
    with pytest.raises(ValueError, match="phrasing for unknown task 'stack'"):
        Lexicon({**data, "phrasings": {"stack": "stack the {colour} {shape}"}})


@pytest.mark.parametrize("rewrite", ["canonical", "off"])
def test_the_model_gets_its_own_phrasing_and_the_result_says_so(lex, rewrite):
    recorded = [INSTRUCTION_TEMPLATES[t["family"]][0].format(**t) for t in TASKS]
    spec = replace(default_spec(), lexicon=lexicon(TASKS, recorded, recorded))
    clock, results = FakeClock(), []
    policy = ScriptedPolicy(spec=spec)
    rt = Runtime(policy, RuntimeConfig(instruction_rewrite=rewrite), lambda c: None, clock, results.append)
    rt.submit_observation(make_observation(spec, clock(), np.zeros(spec.state_dim, np.float32)))
    typed = "Could you GRAB the bleu block, please?"
    assert rt.start_goal(typed).accepted
    rt.infer_once()
    rt.cancel_goal()
    expected = "pick up the blue cube" if rewrite == "canonical" else typed
    assert policy.instructions == [expected]
    note = f"instruction read as {expected!r}"
    assert (note in results[-1].message) == (rewrite == "canonical"), results[-1]
    with pytest.raises(ValueError, match="instruction_rewrite must be one of"):
        RuntimeConfig(instruction_rewrite="always").validate()
