"""Instructions phrased the way people type them, for training-time augmentation and evaluation.

``paraphrase(family, colour, shape, rng)`` builds one instruction from parts, each drawn with the
seeded ``rng``: a task phrase (verb synonyms such as grab/lift/take for "pick", put/place/drop for
"place", and clause order "into the bowl, put ..."), an object phrase ("the red cube", "the cube
that is red", "that red block"), a politeness or question frame ("please ...", "could you ...?"),
casing (lower, Sentence, Title, UPPER), end punctuation and, sometimes, one typing slip (a swapped,
dropped or doubled letter). `vla_ros train --paraphrase K` tokenises K of them per task once and
draws one per training sample.

``HELD_OUT`` is a set of sentence templates written by hand and never produced by the generator
(``paraphrase`` refuses any draw that equals one after normalisation): the figure "held-out
paraphrases" is measured on them. They reuse the generator's words (a byte-level model cannot
know a word it never saw) in constructions it never builds. ``casing_variant`` gives the
templated instruction in another casing, for the "casing variants" figure.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

SHAPE_WORDS = {"cube": ("cube", "block"), "cylinder": ("cylinder", "tube"), "ball": ("ball", "sphere")}

# The words that name each task (for core/grounding.py's lexicon); a destination word implies its task.
TASK_VERBS = {"pick": ("pick", "grab", "lift", "take", "grasp", "raise", "get"),
              "place": ("put", "place", "drop", "move", "bring", "set"),
              "mark": ("put", "place", "move", "bring", "set")}
DESTINATION_WORDS = {"place": ("bowl",), "mark": ("mark", "marker")}

# "{obj}" is the object phrase; "{bowl}" the destination phrase (the family's: a bowl or the mark).
TASK_PHRASES = {
    "pick": (
        "pick up {obj}",
        "pick {obj} up",
        "grab {obj}",
        "lift {obj}",
        "take {obj}",
        "grasp {obj}",
        "grasp {obj} and lift it",
        "lift up {obj}",
        "raise {obj}",
        "pick up {obj} and lift it",
        "grab {obj} and lift it up",
        "get {obj}",
    ),
    "place": (
        "put {obj} in {bowl}",
        "place {obj} into {bowl}",
        "drop {obj} in {bowl}",
        "move {obj} to {bowl}",
        "put {obj} into {bowl}",
        "place {obj} in {bowl}",
        "bring {obj} to {bowl}",
        "set {obj} in {bowl}",
        "drop {obj} into {bowl}",
        "into {bowl}, put {obj}",
        "in {bowl}, place {obj}",
        "take {obj} and put it in {bowl}",
        "pick up {obj} and drop it into {bowl}",
        "move {obj} into {bowl}",
    ),
    "mark": (
        "put {obj} on {bowl}",
        "place {obj} on {bowl}",
        "move {obj} onto {bowl}",
        "put {obj} onto {bowl}",
        "set {obj} down on {bowl}",
        "bring {obj} to {bowl}",
        "move {obj} to {bowl}",
        "place {obj} onto {bowl}",
        "on {bowl}, put {obj}",
        "take {obj} and put it on {bowl}",
        "pick up {obj} and set it on {bowl}",
    ),
}
OBJECT_PHRASES = (
    "the {colour} {shape}",
    "the {colour} {shape}",
    "that {colour} {shape}",
    "the {shape} that is {colour}",
    "the {colour} colored {shape}",
    "the {colour} one, the {shape}",
    "{colour} {shape}",
)
BOWL_PHRASES = ("the bowl", "the bowl", "that bowl", "the yellow bowl", "bowl")
MARK_PHRASES = ("the mark", "the mark", "that mark", "the white mark", "the marker")
DESTINATION_PHRASES = {"mark": MARK_PHRASES}  # the others draw (and pick ignores) BOWL_PHRASES
FRAMES = (
    "{}",
    "{}",
    "{}",
    "please {}",
    "{} please",
    "could you {}?",
    "can you {}?",
    "would you {}?",
    "i want you to {}",
    "go ahead and {}",
    "{} for me",
    "now {}",
    "{}, thanks",
    "kindly {}",
    "please, {}",
    "hey robot, {}",
)
END_PUNCTUATION = ("", "", "", ".", "!", "...", " .")
TYPO_PROBABILITY = 0.15

# Written by hand, not generated; ``paraphrase`` never returns one of them.
HELD_OUT = {
    "pick": (
        "would you mind picking up the {colour} {shape}?",
        "the {colour} {shape}: pick it up",
        "I need the {colour} {shape} lifted",
        "go and grab the {colour} {shape}",
        "lift the {shape}, the {colour} one",
        "can you please lift up that {colour} {shape}",
        "Pick the {colour} {shape} up, please.",
        "grab the {shape} which is {colour}",
        "time to pick up the {colour} {shape}!",
        "take hold of the {colour} {shape} and lift it",
    ),
    "place": (
        "would you mind putting the {colour} {shape} in the bowl?",
        "the {colour} {shape} goes into the bowl",
        "I need the {colour} {shape} in the bowl",
        "drop that {colour} {shape} into the bowl please",
        "put the {shape}, the {colour} one, in the bowl",
        "Could you place the {colour} {shape} in the bowl?",
        "into the bowl with the {colour} {shape}",
        "take the {shape} which is {colour} and put it in the bowl",
        "time to move the {colour} {shape} to the bowl!",
        "bowl: put the {colour} {shape} in it",
    ),
    "mark": (
        "would you mind putting the {colour} {shape} on the mark?",
        "the {colour} {shape} goes on the mark",
        "I need the {colour} {shape} on the mark",
        "set that {colour} {shape} on the mark please",
        "put the {shape}, the {colour} one, on the mark",
        "Could you place the {colour} {shape} on the mark?",
        "onto the mark with the {colour} {shape}",
        "take the {shape} which is {colour} and put it on the mark",
        "time to move the {colour} {shape} onto the mark!",
        "mark: put the {colour} {shape} on it",
    ),
}


def normalise(text: str) -> str:
    """Casefolded words without punctuation, for comparing instructions."""
    return " ".join(re.findall(r"[a-z0-9]+", text.casefold()))


def _held_out_forms() -> set[str]:
    from vla_ros.sim.scene import COLOURS, SHAPES

    return {
        normalise(t.format(colour=c, shape=w))
        for templates in HELD_OUT.values()
        for t in templates
        for c in COLOURS
        for s in SHAPES
        for w in SHAPE_WORDS[s]
    }


_HELD_OUT_FORMS: set[str] | None = None


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def typo(word: str, rng: np.random.Generator) -> str:
    """One typing slip in ``word``: two neighbouring letters swapped, one dropped or one doubled."""
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def apply_casing(text: str, style: str) -> str:
    if style == "upper":
        return text.upper()
    if style == "title":
        return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))
    if style == "sentence":
        return text[:1].upper() + text[1:]
    if style == "lower":
        return text.lower()
    raise ValueError(f"unknown casing style {style!r}; valid: lower, sentence, title, upper")


def paraphrase(family: str, colour: str, shape: str, rng: np.random.Generator, typos: bool = True) -> str:
    """One generated instruction for the task (never a held-out one)."""
    global _HELD_OUT_FORMS
    if _HELD_OUT_FORMS is None:
        _HELD_OUT_FORMS = _held_out_forms()
    if family not in TASK_PHRASES:
        raise ValueError(f"unknown task family {family!r}; valid: {', '.join(TASK_PHRASES)}")
    for _ in range(100):
        obj = _choice(rng, OBJECT_PHRASES).format(colour=colour, shape=_choice(rng, SHAPE_WORDS[shape]))
        core = _choice(rng, TASK_PHRASES[family]).format(
            obj=obj, bowl=_choice(rng, DESTINATION_PHRASES.get(family, BOWL_PHRASES)))
        text = _choice(rng, FRAMES).format(core)
        if not text.endswith("?"):
            text += _choice(rng, END_PUNCTUATION)
        if typos and rng.random() < TYPO_PROBABILITY:
            words = text.split(" ")
            k = int(rng.integers(len(words)))
            words[k] = typo(words[k], rng)
            text = " ".join(words)
        text = apply_casing(text, _choice(rng, ("lower", "lower", "sentence", "sentence", "title", "upper")))
        if normalise(text) not in _HELD_OUT_FORMS:
            return text
    raise RuntimeError("paraphrase: 100 draws in a row were held-out sentences")


def held_out(family: str, colour: str, shape: str, rng: np.random.Generator) -> str:
    """One held-out instruction for the task (canonical shape word)."""
    return _choice(rng, HELD_OUT[family]).format(colour=colour, shape=shape)


def casing_variant(text: str, rng: np.random.Generator) -> str:
    """The instruction in UPPER, Title or Sentence case."""
    return apply_casing(text, _choice(rng, ("upper", "title", "sentence")))


INSTRUCTION_STYLES = ("templated", "paraphrase", "held-out", "casing")


def restyle(
    style: str, family: str, colour: str, shape: str, templated: str, rng: np.random.Generator
) -> str:
    """The instruction for a task in one of INSTRUCTION_STYLES (templated: the recorded one)."""
    if style == "templated":
        return templated
    if style == "paraphrase":
        return paraphrase(family, colour, shape, rng)
    if style == "held-out":
        return held_out(family, colour, shape, rng)
    if style == "casing":
        return casing_variant(templated, rng)
    raise ValueError(f"unknown instruction style {style!r}; valid: {', '.join(INSTRUCTION_STYLES)}")


def lexicon(tasks: list[dict], texts: list[str], recorded: list[str] | None = None) -> dict:
    """The grounding lexicon (core/grounding.py) of a policy trained on ``tasks`` (each with
    family, colour, shape) and the instructions ``texts``: the task values present, their words,
    and every word the instructions used. ``recorded``: the episodes' own instructions, one per
    entry of ``tasks``; given, the lexicon also holds each task's phrasing (``phrasings``)."""
    from vla_ros.core.grounding import words_of

    def present(key: str) -> list[str]:
        return sorted({t[key] for t in tasks})

    families = present("family")
    data = {"slots": {"task": {f: list(TASK_VERBS.get(f, (f,))) for f in families},
                      "colour": {c: [c] for c in present("colour")},
                      "shape": {s: list(SHAPE_WORDS.get(s, (s,))) for s in present("shape")}},
            "destinations": {f: list(DESTINATION_WORDS[f]) for f in families if f in DESTINATION_WORDS},
            "known_words": sorted({w for t in texts for w in words_of(t)})}
    if recorded is not None:
        data["phrasings"] = phrasings(tasks, recorded)
    return data


def phrasings(tasks: list[dict], instructions: list[str]) -> dict[str, str]:
    """Per task family, the most common of its recorded instructions with the object's colour and
    shape made placeholders ("pick up the red cube" -> "pick up the {colour} {shape}"); ties go to
    the first in sorted order. An instruction that does not name its colour and shape once each
    (a paraphrase with "block" for cube, say) is no phrasing."""
    if len(tasks) != len(instructions):
        raise ValueError(f"phrasings: {len(tasks)} tasks but {len(instructions)} instructions")
    counts: dict[str, Counter] = {}
    for task, text in zip(tasks, instructions, strict=True):
        if "{" in text or "}" in text:
            continue
        template = text
        for key in ("colour", "shape"):
            template, n = re.subn(rf"\b{re.escape(task[key])}\b", "{" + key + "}", template)
            if n != 1:
                break
        else:
            counts.setdefault(task["family"], Counter())[template] += 1
    return {family: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for family, c in sorted(counts.items())}
