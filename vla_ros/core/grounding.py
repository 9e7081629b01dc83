"""Instruction grounding: does an instruction name a task and an object the policy knows?

A lightweight, pure-Python check that runs when a goal arrives (``Runtime.start_goal``), before
any model sees the text. It reads the policy's *lexicon* (``PolicySpec.lexicon``; for a trained
checkpoint, its grounding.json, written by `vla_ros train` from the task parameters and the
words of its training instructions): per slot (task, colour, shape) the values the policy was
trained on and the words that name each, the destination words that imply a task ("bowl" for
place), and every word the training instructions used.

An instruction is grounded when it names one task and exactly one colour and one shape (the
scenes hold distractors that share the colour or the shape, so both are needed), and has no
negation ("don't pick up ..." would otherwise run as "pick up ..."). A destination word decides
the task; a verb that needs a destination without one is not understood. Matching casefolds,
ignores punctuation, accepts inflections (picking, lifted, cubes) and one typing slip (an
inserted, dropped, changed or swapped letter) in a word of three or more letters when exactly
one lexicon word of four or more letters is that close.

A lexicon may also carry *phrasings*: per task, the instruction the policy was trained with, with
``{colour}`` and ``{shape}`` for the object ("pick up the {colour} {shape}"). ``Lexicon.phrase``
turns a grounded reading into that sentence, which the runtime hands the model instead of the
words the user typed (``instruction_rewrite`` "canonical"): a small model trained on one phrasing
then follows any instruction the check reads, in any casing, with typing slips. The user's words
stay on the goal; the result message says what the model was given.

The decision uses the slots only. ``confidence`` (0..1) is reported beside it: the share of
slots found, times 0.85 per corrected typing slip, times one minus half the share of words the
training instructions never used.

Why hand-written and not a library: it must run in the control process without torch, in
microseconds, and explain each refusal by name; a fuzzy matcher would give a score, not a reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

SLOTS = ("task", "colour", "shape")
NEGATIONS = ("not", "don't", "dont", "never", "avoid", "without")
# English words for a colour or an object, to say which one the policy does not know.
COLOUR_WORDS = ("yellow", "orange", "purple", "pink", "black", "white", "brown", "grey", "gray", "violet")
OBJECT_WORDS = (
    "cup",
    "mug",
    "bottle",
    "box",
    "plate",
    "spoon",
    "fork",
    "knife",
    "pen",
    "apple",
    "banana",
    "coffee",
    "tea",
    "door",
    "drawer",
    "towel",
    "book",
    "phone",
    "toy",
    "bag",
)
TYPO_PENALTY = 0.85
NOT_SLIPS = ("all", "make", "call", "wall", "tall", "fall")  # real words one slip from lexicon ones


@dataclass(frozen=True)
class Grounding:
    """What the check read in an instruction."""

    grounded: bool
    confidence: float  # 0..1
    reading: dict[str, str]  # slot -> value found, e.g. {"task": "place", "colour": "red", "shape": "cube"}
    problem: str = ""  # why not grounded, "" when grounded
    corrections: tuple[str, ...] = ()  # typing slips read as lexicon words, "bleu->blue"

    def summary(self) -> str:
        """The reading in words, e.g. "place red cube"."""
        return " ".join(self.reading[s] for s in SLOTS if s in self.reading)


def inflections(word: str) -> set[str]:
    """The forms of ``word`` an instruction may use: pick -> picks, picked, picking; place ->
    placing, placed; put -> putting; cube -> cubes."""
    forms = {word, word + "s", word + "es", word + "ed", word + "ing", word + "d"}
    if word.endswith("e"):
        forms |= {word[:-1] + "ing", word[:-1] + "ed"}
    if len(word) >= 3 and word[-1] not in "aeiouwxy" and word[-2] in "aeiou" and word[-3] not in "aeiou":
        forms |= {word + word[-1] + "ing", word + word[-1] + "ed"}  # put -> putting, drop -> dropped
    return forms


def one_slip(a: str, b: str) -> bool:
    """True if ``a`` is ``b`` with one letter inserted, dropped, changed, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:'[a-z]+)?", text.casefold())


class Lexicon:
    """A policy's vocabulary for grounding, from its JSON form (see ``to_dict``)."""

    def __init__(self, data: Mapping):
        try:
            self.slots = {s: {v: tuple(ws) for v, ws in data["slots"][s].items()} for s in SLOTS}
            self.destinations = {f: tuple(ws) for f, ws in data.get("destinations", {}).items()}
            self.known_words = frozenset(data.get("known_words", ()))
            self.phrasings = {str(f): str(p) for f, p in data.get("phrasings", {}).items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"lexicon: needs 'slots' with {', '.join(SLOTS)} mapping values to word lists "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        for family in self.destinations:
            if family not in self.slots["task"]:
                raise ValueError(f"lexicon: destination for unknown task {family!r}")
        for family, phrasing in self.phrasings.items():
            if family not in self.slots["task"]:
                raise ValueError(f"lexicon: phrasing for unknown task {family!r}")
            try:
                phrasing.format(colour="", shape="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"lexicon: phrasing {phrasing!r} of task {family!r} may use only {{colour}} and "
                    f"{{shape}} ({type(exc).__name__}: {exc})"
                ) from exc
        # every form of every word -> (slot or "destination", value)
        self._forms: dict[str, tuple[str, str]] = {}
        for slot, values in self.slots.items():
            for value, names in values.items():
                for name in names:
                    for form in inflections(name):
                        self._forms.setdefault(form, (slot, value))
        for family, names in self.destinations.items():
            for name in names:
                for form in inflections(name):
                    self._forms[form] = ("destination", family)

    def to_dict(self) -> dict:
        data = {
            "slots": {s: {v: list(ws) for v, ws in vals.items()} for s, vals in self.slots.items()},
            "destinations": {f: list(ws) for f, ws in self.destinations.items()},
            "known_words": sorted(self.known_words),
        }
        if self.phrasings:
            data["phrasings"] = dict(self.phrasings)
        return data

    def phrase(self, grounding: Grounding) -> str | None:
        """The policy's own phrasing of a grounded reading ("pick up the red cube"); None when the
        instruction was not grounded or the lexicon has no phrasing for its task."""
        if not grounding.grounded or grounding.reading["task"] not in self.phrasings:
            return None
        return self.phrasings[grounding.reading["task"]].format(
            colour=grounding.reading["colour"], shape=grounding.reading["shape"]
        )

    def lookup(self, word: str) -> tuple[tuple[str, str] | None, str]:
        """(slot, value) the word names, or None; and the lexicon form it was read as when it took
        a typing-slip correction ("" otherwise). NOT_SLIPS are never corrected."""
        if word in self._forms:
            return self._forms[word], ""
        if len(word) < 3 or word in NOT_SLIPS:
            return None, ""
        close = {form for form in self._forms if len(form) >= 4 and one_slip(word, form)}
        meanings = {self._forms[f] for f in close}
        if len(meanings) == 1:
            return meanings.pop(), min(close)
        return None, ""

    def _names(self, slot: str) -> str:
        return ", ".join(self.slots[slot])

    def ground(self, text: str) -> Grounding:
        words = words_of(text)
        found: dict[str, list[str]] = {"task": [], "colour": [], "shape": [], "destination": []}
        corrections, unknown = [], []
        for word in words:
            meaning, corrected = self.lookup(word)
            if meaning is None:
                if word not in self.known_words:
                    unknown.append(word)
                continue
            if corrected:
                corrections.append(f"{word}->{corrected}")
            if meaning[1] not in found[meaning[0]]:
                found[meaning[0]].append(meaning[1])
        problems, reading = [], {}
        negation = next((w for w in words if w in NEGATIONS), "")
        if negation:
            problems.append(f"it has a negation ({negation!r}), which the policy cannot follow")
        # the task: a destination decides it; else the verbs, of tasks that need no destination
        if len(found["destination"]) > 1:
            problems.append(f"its destinations imply several tasks ({', '.join(found['destination'])})")
        elif found["destination"]:
            reading["task"] = found["destination"][0]
        else:
            free = [t for t in found["task"] if t not in self.destinations]
            if len(free) == 1:
                reading["task"] = free[0]
            elif len(free) > 1:
                problems.append(f"it names several tasks ({', '.join(free)})")
            elif found["task"]:
                family = found["task"][0]
                problems.append(
                    f"the {family} task needs a destination ({', '.join(self.destinations[family])})"
                )
            else:
                problems.append(f"it names no task the policy knows ({self._names('task')})")
        for slot, english in (("colour", COLOUR_WORDS), ("shape", OBJECT_WORDS)):
            values = found[slot]
            if len(values) == 1:
                reading[slot] = values[0]
            elif len(values) > 1:
                problems.append(f"it names several {slot}s ({', '.join(values)}); name one object")
            else:
                strange = [w for w in words if w in english]
                other = f" ({', '.join(repr(w) for w in strange)} is not one it knows)" if strange else ""
                problems.append(f"it names no {slot} the policy knows: {self._names(slot)}{other}")
        share_unknown = len(unknown) / max(1, len(words))
        confidence = (
            (len(reading) / len(SLOTS)) * TYPO_PENALTY ** len(corrections) * (1 - 0.5 * share_unknown)
        )
        if negation:
            confidence = 0.0
        return Grounding(not problems, round(confidence, 3), reading, "; ".join(problems), tuple(corrections))


def parse_lexicon(data: Mapping | None) -> Lexicon | None:
    return None if data is None else Lexicon(data)
