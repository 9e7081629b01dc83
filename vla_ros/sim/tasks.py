"""Language-conditioned task families: scene sampling, instructions and success detectors.

A task is the target object (a colour and a shape) among distractors that differ in colour,
shape or both, so the instruction is needed to choose it, and random placement, so the image
is needed to find it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from vla_ros.sim.scene import (
    BOWL_RADIUS,
    COLOURS,
    MARK_FOOTPRINT,
    OBJECT_RADIUS,
    SHAPES,
    WORKSPACE_X,
    WORKSPACE_Y,
)

TASK_FAMILIES = ("pick", "place")  # the families a random episode (no family asked for) draws from
# Families sampled only when asked for by name (`sim-collect --task mark`, `eval --task mark`), so
# that random-family episodes, and every dataset and evaluation seeded before they existed, stay
# the same. "mark": carry the object onto a flat mark on the table (the LoRA fine-tuning target).
EXTRA_FAMILIES = ("mark",)
ALL_FAMILIES = TASK_FAMILIES + EXTRA_FAMILIES

INSTRUCTION_TEMPLATES = {
    "pick": ("pick up the {colour} {shape}", "grasp the {colour} {shape} and lift it",
             "lift the {colour} {shape}"),
    "place": ("put the {colour} {shape} in the bowl", "place the {colour} {shape} into the bowl",
              "move the {colour} {shape} to the bowl"),
    "mark": ("put the {colour} {shape} on the mark", "place the {colour} {shape} on the mark",
             "move the {colour} {shape} onto the mark"),
}

MIN_GAP = 0.012  # free space between footprints
# The open finger pads come down beside the target along world y; nothing else may stand there.
PAD_KEEP_OUT = (0.020, 0.039, 0.065)  # half-width in x, nearest and farthest |y| from the target
PICK_LIFT = 0.05  # metres above its resting height that counts as picked up


@dataclass
class TaskSpec:
    family: str
    colour: str
    shape: str
    instruction: str
    objects: list[dict] = field(default_factory=list)  # [{"colour", "shape", "xy": [x, y]}], target first
    bowl_xy: list[float] | None = None
    mark_xy: list[float] | None = None  # the mark family's destination

    def to_dict(self) -> dict:
        """The task as recorded in episodes and infos; ``mark_xy`` only when set, so the records
        of the older families are what they were before the field existed."""
        data = asdict(self)
        if data["mark_xy"] is None:
            del data["mark_xy"]
        return data


def _check_choice(kind: str, value: str | None, valid: tuple[str, ...] | list[str]) -> None:
    if value is not None and value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid values: {', '.join(valid)}")


def sample_task(rng: np.random.Generator, family: str | None = None, colour: str | None = None,
                shape: str | None = None, num_objects: int = 3, templates: str = "first") -> TaskSpec:
    """Sample a task and a collision-free scene. ``templates``: "first" always uses the first
    instruction template per family (a fixed vocabulary), "random" samples among them. Without
    ``family`` one of TASK_FAMILIES is drawn; EXTRA_FAMILIES only come when named."""
    _check_choice("task family", family, ALL_FAMILIES)
    _check_choice("colour", colour, tuple(COLOURS))
    _check_choice("object shape", shape, SHAPES)
    _check_choice("templates mode", templates, ("first", "random"))
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    if not 1 <= num_objects <= len(combos):
        raise ValueError(f"num_objects={num_objects} is impossible: between 1 and {len(combos)} "
                         f"distinct colour-shape objects exist")
    family = family or TASK_FAMILIES[rng.integers(len(TASK_FAMILIES))]
    colour = colour or tuple(COLOURS)[rng.integers(len(COLOURS))]
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    others = [cs for cs in combos if cs != (colour, shape)]
    picks = rng.permutation(len(others))[: num_objects - 1]
    chosen = [(colour, shape)] + [others[i] for i in picks]

    destination = {"place": BOWL_RADIUS, "mark": MARK_FOOTPRINT}.get(family)
    radii = [OBJECT_RADIUS] * len(chosen) + ([destination] if destination is not None else [])
    centres = _place_discs(rng, radii)
    if centres is None:
        extra = {"place": " and a bowl", "mark": " and a mark"}.get(family, "")
        raise ValueError(f"impossible scene: cannot place {num_objects} objects{extra} without overlap in "
                         f"the workspace x={WORKSPACE_X}, y={WORKSPACE_Y}; use fewer objects")
    objects = [{"colour": c, "shape": s, "xy": [round(float(v), 5) for v in centres[i]]}
               for i, (c, s) in enumerate(chosen)]
    bowl = [round(float(v), 5) for v in centres[-1]] if family == "place" else None
    mark = [round(float(v), 5) for v in centres[-1]] if family == "mark" else None
    options = INSTRUCTION_TEMPLATES[family]
    template = options[0] if templates == "first" else options[rng.integers(len(options))]
    return TaskSpec(family=family, colour=colour, shape=shape,
                    instruction=template.format(colour=colour, shape=shape), objects=objects,
                    bowl_xy=bowl, mark_xy=mark)


def _place_discs(rng: np.random.Generator, radii: list[float], tries: int = 200) -> np.ndarray | None:
    """Rejection-sample non-overlapping disc centres in the workspace; disc 0 is the target,
    whose finger-pad keep-out zones the other discs must also avoid."""
    order = [0] + sorted(range(1, len(radii)), key=lambda i: -radii[i])
    for _ in range(tries):
        centres = np.zeros((len(radii), 2))
        for k, i in enumerate(order):
            r = radii[i]
            for _ in range(50):
                c = np.array([rng.uniform(WORKSPACE_X[0] + r * 0.5, WORKSPACE_X[1] - r * 0.5),
                              rng.uniform(WORKSPACE_Y[0] + r * 0.5, WORKSPACE_Y[1] - r * 0.5)])
                if all(np.linalg.norm(c - centres[j]) >= r + radii[j] + MIN_GAP for j in order[:k]) and (
                        k == 0 or _clear_of_pads(c - centres[0], r)):
                    centres[i] = c
                    break
            else:
                break
        else:
            return centres
    return None


def _clear_of_pads(offset: np.ndarray, radius: float) -> bool:
    """True if a disc at ``offset`` from the target misses both finger-pad keep-out boxes."""
    half_x, y_near, y_far = PAD_KEEP_OUT
    dx = max(abs(offset[0]) - half_x, 0.0)
    dy = max(y_near - abs(offset[1]), abs(offset[1]) - y_far, 0.0)
    return bool(np.hypot(dx, dy) >= radius)
