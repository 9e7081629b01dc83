"""The fuzz suite's cases: one hypothesis strategy per bad-input class, and the seeded case list.

Used by vla_ros.bench.fuzz (which publishes them into a running vla_node and checks the invariants);
the same seed gives the same cases. Needs hypothesis (the dev extra).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from vla_ros.core.scripted_policy import SO100_NAMES
from vla_ros.ros.image_conversion import SUPPORTED_RAW_ENCODINGS

JOINTS = SO100_NAMES  # the tiny model's state and action names: arm joints, then the gripper
IMAGE_HW = (48, 64)
MAX_INSTRUCTION_BYTES = 256
MAX_IMAGE_BYTES = 64 * 1024  # the node's max_image_bytes here: a frame of 48x64 rgb8 is 9 kB



@dataclass
class Case:
    """One generated case: a set with ``source``'s message changed by ``fields``, or a goal."""

    cls: str  # the input class (per_class key); "good" for an unchanged set
    source: str = ""  # "scene", "wrist", "joint_states", "goal", or "" for an unchanged set
    fields: dict[str, Any] = field(default_factory=dict)
    expect: str = ""  # words the node's drop/skip/rejection reason should hold; "" = accepted by design
    expect_source: str = ""  # the problem source naming it, when not ``source`` (a time jump: "time")
    repeat: int = 1  # consecutive sets with this change (a burst)

    @property
    def messages(self) -> int:
        return 1 if self.source == "goal" else 3 * self.repeat


GOOD = Case("good")
_CHARS = st.characters(codec="utf-8", exclude_characters="\0", exclude_categories=("Cs",))
_VALID_ENCODINGS = {e.lower() for e in SUPPORTED_RAW_ENCODINGS} | {"8uc1"}
_index = st.integers(0, len(JOINTS) - 1)


def zero_positions() -> list[float]:
    return [0.0] * len(JOINTS)


@st.composite
def joint_nonfinite(draw, field_name: str):
    values, value = zero_positions(), draw(st.sampled_from((math.nan, math.inf, -math.inf)))
    values[draw(_index)] = value
    return Case(f"joint_nonfinite_{field_name}", "joint_states", {field_name: values},
                f"{field_name} is {value}")


@st.composite
def joint_huge(draw, field_name: str):
    values = zero_positions()
    sign = draw(st.sampled_from((1.0, -1.0)))
    values[draw(_index)] = sign * draw(st.floats(min_value=4.0, max_value=1e308))  # past every limit + margin
    # Velocities are only checked for being finite: a huge one is accepted by design.
    expect = "is outside" if field_name == "position" else ""
    return Case(f"joint_huge_{field_name}", "joint_states", {field_name: values}, expect)


@st.composite
def joint_past_limit(draw):
    """A position past its limit by less than joint_state_limit_margin: plausible, accepted by design."""
    values, i = zero_positions(), draw(_index)
    upper = 1.0 if JOINTS[i] == "gripper" else math.pi  # the node's default limits; the gripper is 0..1
    values[i] = draw(st.sampled_from((1.0, -1.0))) * (upper + draw(st.floats(0.0, 0.49)))
    if JOINTS[i] == "gripper" and values[i] < 0:
        values[i] += 1.0  # 0..-0.49 below the open end
    return Case("joint_past_limit", "joint_states", {"position": values})


@st.composite
def joint_missing_name(draw):
    keep = draw(st.lists(st.sampled_from(JOINTS), unique=True, max_size=len(JOINTS) - 1))
    return Case("joint_missing_name", "joint_states", {"name": keep, "position": [0.0] * len(keep)},
                "lacks joint(s)")


@st.composite
def joint_unknown_name(draw):
    unknown = draw(st.lists(st.text(_CHARS, min_size=1, max_size=16).filter(lambda n: n not in JOINTS),
                            min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):  # extra joints besides the model's: ignored by design
        names = [*JOINTS, *unknown]
        return Case("joint_unknown_name", "joint_states", {"name": names, "position": [0.0] * len(names)})
    names = list(JOINTS)
    names[draw(_index)] = unknown[0]  # a model joint renamed: it is missing
    fields = {"name": names, "position": zero_positions()}
    return Case("joint_unknown_name", "joint_states", fields, "lacks joint(s)")


@st.composite
def joint_duplicate_name(draw):
    names = [*JOINTS, *draw(st.lists(st.sampled_from(JOINTS), min_size=1, max_size=3))]
    return Case("joint_duplicate_name", "joint_states", {"name": names, "position": [0.1] * len(names)},
                "duplicate joint name(s)")


@st.composite
def joint_length_mismatch(draw):
    field_name = draw(st.sampled_from(("position", "velocity", "effort")))
    allowed = {len(JOINTS)} | ({0} if field_name != "position" else set())
    length = draw(st.integers(0, 3 * len(JOINTS)).filter(lambda n: n not in allowed))
    return Case("joint_length_mismatch", "joint_states", {field_name: [0.0] * length}, "names but")


_sources = st.sampled_from(("scene", "wrist", "joint_states"))


@st.composite
def stamp_zero(draw):
    return Case("stamp_zero", draw(_sources), {"sec": 0, "nanosec": 0}, "is zero")


@st.composite
def stamp_negative(draw):
    return Case("stamp_negative", draw(_sources), {"sec": draw(st.integers(-(2**31), -1))}, "is negative")


@st.composite
def stamp_nanosec(draw):
    return Case("stamp_nanosec", draw(_sources), {"nanosec": draw(st.integers(10**9, 2**32 - 1))},
                "is outside [0, 1e9)")


@st.composite
def stamp_future(draw):
    if draw(st.booleans()):
        return Case("stamp_future", draw(_sources), {"stamp_offset_s": draw(st.floats(0.6, 3e8))},
                    "ahead of the node's clock")
    # Within max_stamp_lead_s (clock skew): accepted; that input's next stamps are then out of order.
    return Case("stamp_future", draw(_sources), {"stamp_offset_s": draw(st.floats(0.01, 0.45))})


@st.composite
def stamp_backwards(draw):
    if draw(st.booleans()):  # behind the input's previous stamp by less than TIME_JUMP_S
        return Case("stamp_backwards", draw(_sources), {"stamp_offset_s": -draw(st.floats(0.1, 0.9))},
                    "went back")
    # Far behind: a new time base (bag loop, sim reset), accepted; the synchronizer is reset.
    return Case("stamp_backwards", draw(_sources), {"stamp_offset_s": -draw(st.floats(1.5, 1e6))},
                "jumped back", expect_source="time")


@st.composite
def raw_encoding(draw):
    encoding = draw(st.one_of(
        st.sampled_from(("yuv422", "bayer_rggb8", "rgb16", "8UC3", "32FC3", "nv21", "", "rgb 8")),
        st.text(_CHARS, max_size=16),
    ).filter(lambda e: e.lower() not in _VALID_ENCODINGS))
    return Case("raw_encoding", "scene", {"encoding": encoding}, "unknown encoding")


@st.composite
def raw_size(draw):
    height = draw(st.one_of(st.integers(0, 200), st.sampled_from((2**31, 2**32 - 1))))
    width = draw(st.one_of(st.integers(0, 200), st.sampled_from((2**31, 2**32 - 1))))
    row = width * 3
    if height == 0 or width == 0:
        return Case("raw_size", "scene", {"height": height, "width": width, "step": row, "data_len": 0},
                    "empty image")
    if height * row > 1 << 20:  # a header claiming a huge frame with a small payload
        step = min(row, 2**32 - 1)  # a uint32
        fields = {"height": height, "width": width, "step": step, "data_len": 1000}
        return Case("raw_size", "scene", fields, "is smaller than width" if step < row else "data has")
    kind = draw(st.sampled_from(("padded", "short_step", "short_data")))
    if kind == "padded":  # a valid frame of another size (rows padded): resized, accepted
        step = row + draw(st.integers(0, 16))
        return Case("raw_size", "scene", {"height": height, "width": width, "step": step,
                                          "data_len": step * height})
    if kind == "short_step":
        step = draw(st.integers(0, row - 1))
        return Case("raw_size", "scene", {"height": height, "width": width, "step": step,
                                          "data_len": row * height}, "is smaller than width")
    data_len = draw(st.integers(0, row * height - 1))
    return Case("raw_size", "scene", {"height": height, "width": width, "step": row, "data_len": data_len},
                "data has")


@st.composite
def raw_truncated(draw):
    height, width = IMAGE_HW
    return Case("raw_truncated", "scene", {"data_len": draw(st.integers(0, height * width * 3 - 1))},
                "data has")


@st.composite
def image_oversized(draw):
    """A well-formed frame over max_image_bytes (raw: rows of a taller image; compressed: padding)."""
    size = draw(st.integers(MAX_IMAGE_BYTES + 1, 2 * MAX_IMAGE_BYTES))
    if draw(st.booleans()):
        height, width = size // (IMAGE_HW[1] * 3) + 1, IMAGE_HW[1]
        fields = {"height": height, "width": width, "step": width * 3, "data_len": height * width * 3}
        return Case("image_oversized", "scene", fields, "over max_image_bytes")
    return Case("image_oversized", "wrist", {"format": "jpeg", "pad_to": size}, "over max_image_bytes")


_image_formats = st.sampled_from(("jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8"))


@st.composite
def compressed_undecodable(draw):
    fmt = draw(_image_formats)
    kind = draw(st.sampled_from(("random", "truncated", "flipped")))
    if kind == "random":
        data = draw(st.binary(min_size=1, max_size=4096))
        return Case("compressed_undecodable", "wrist", {"format": fmt, "data": data}, "could not decode")
    # A cut or corrupted real JPEG: libjpeg may decode what is there, so either outcome is fine.
    if kind == "truncated":
        cut = draw(st.integers(0, 4000))
        return Case("compressed_undecodable", "wrist", {"format": fmt, "truncate": cut})
    flips = draw(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=16))
    return Case("compressed_undecodable", "wrist", {"format": fmt, "flip": flips})


@st.composite
def compressed_empty(draw):
    return Case("compressed_empty", "wrist", {"format": draw(_image_formats), "data": b""}, "empty")


@st.composite
def compressed_format(draw):
    fmt = draw(st.one_of(
        st.sampled_from(("bmp", "tiff", "webp", "jpg", "raw", "", "16UC1; compressedDepth png")),
        st.text(_CHARS, max_size=24).filter(lambda f: "jpeg" not in f.lower() and "png" not in f.lower()),
    ))
    return Case("compressed_format", "wrist", {"format": fmt}, "unsupported compressed format")


_words = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz "), max_size=30)


@st.composite
def instruction_whitespace(draw):
    text = draw(st.text(st.sampled_from(" \t\n\r\x0b\x0c\xa0\u2003\u3000"), min_size=1, max_size=40))
    return Case("instruction_whitespace", "goal", {"text": text}, "whitespace-only")


@st.composite
def instruction_too_long(draw):
    if draw(st.booleans()):
        text = draw(st.text(_CHARS, min_size=MAX_INSTRUCTION_BYTES + 1, max_size=2 * MAX_INSTRUCTION_BYTES))
    else:  # one character repeated, up to 100 kB
        char = draw(st.sampled_from(("a", "é", "漢", "🙂")))
        size = len(char.encode())
        text = char * draw(st.integers(MAX_INSTRUCTION_BYTES // size + 1, 100_000 // size))
    return Case("instruction_too_long", "goal", {"text": text}, "over max_instruction_bytes")


@st.composite
def instruction_nul(draw):
    # Text before the NUL (a NUL first is an empty instruction on the wire: instruction_empty's case).
    text = draw(st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz"), min_size=1, max_size=8)) + draw(_words)
    text += "\0" + draw(_words)
    return Case("instruction_nul", "goal", {"text": text}, "NUL character")


@st.composite
def goal_bad_timeout(draw):
    timeout = draw(st.one_of(st.just(math.nan), st.floats(max_value=-1e-9)))
    return Case("goal_bad_timeout", "goal", {"text": "wave the arm", "timeout_s": timeout}, "must be >= 0")


STRATEGIES: dict[str, st.SearchStrategy[Case]] = {
    "joint_nonfinite_position": joint_nonfinite("position"),
    "joint_nonfinite_velocity": joint_nonfinite("velocity"),
    "joint_huge_position": joint_huge("position"),
    "joint_huge_velocity": joint_huge("velocity"),
    "joint_past_limit": joint_past_limit(),
    "joint_missing_name": joint_missing_name(),
    "joint_unknown_name": joint_unknown_name(),
    "joint_duplicate_name": joint_duplicate_name(),
    "joint_length_mismatch": joint_length_mismatch(),
    "stamp_zero": stamp_zero(),
    "stamp_negative": stamp_negative(),
    "stamp_nanosec": stamp_nanosec(),
    "stamp_future": stamp_future(),
    "stamp_backwards": stamp_backwards(),
    "raw_encoding": raw_encoding(),
    "raw_size": raw_size(),
    "raw_truncated": raw_truncated(),
    "image_oversized": image_oversized(),
    "compressed_undecodable": compressed_undecodable(),
    "compressed_empty": compressed_empty(),
    "compressed_format": compressed_format(),
    "instruction_empty": st.just(Case("instruction_empty", "goal", {"text": ""}, "empty instruction")),
    "instruction_whitespace": instruction_whitespace(),
    "instruction_too_long": instruction_too_long(),
    "instruction_nul": instruction_nul(),
    "goal_bad_timeout": goal_bad_timeout(),
}
BAD_CLASSES = tuple(STRATEGIES)
# A burst long enough (25 sets at 30 Hz) outlasts max_observation_age_s + stale_grace_s: the goal faults.
_BURSTY = {c for c in BAD_CLASSES if not c.startswith(("instruction", "goal", "stamp_backwards"))}
_BURSTS = st.sampled_from((1,) * 16 + (4, 25))
# Good sets between two bad cases, picked by the driver's own seeded random.Random: hypothesis never
# generates the same example twice, so it cannot be asked for the one good set over and over.
_GOOD_RUNS = (0, 1, 1, 2, 3)


def _with_burst(cls: str) -> st.SearchStrategy[Case]:
    if cls in _BURSTY:
        return st.tuples(STRATEGIES[cls], _BURSTS).map(lambda pair: replace(pair[0], repeat=pair[1]))
    return STRATEGIES[cls]


def draw_examples(strategy: st.SearchStrategy, count: int, seed: int) -> list:
    """``count`` examples of ``strategy`` from hypothesis' generator, the same ones for the same seed."""
    out: list = []

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate], derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(strategy)
    def collect(example):
        out.append(example)

    collect()
    return out


def generate_cases(messages: int, seed: int) -> list[Case]:
    """Cases holding at least ``messages`` messages: rounds of bad cases, as many of every class,
    shuffled, each followed by a few good sets. The first round has one of each."""
    rng = random.Random(seed)
    cases: list[Case] = []
    total, per_class, bad = 0, 1, []
    while total < messages:
        if not bad:
            bad = [case for i, cls in enumerate(BAD_CLASSES)
                   for case in draw_examples(_with_burst(cls), per_class, seed + 100 * len(cases) + i)]
            rng.shuffle(bad)
            per_class = max(2, (messages - total) // (10 * len(BAD_CLASSES)))
        for case in [bad.pop(), *[GOOD] * rng.choice(_GOOD_RUNS)]:
            cases.append(case)
            total += case.messages
    return cases
