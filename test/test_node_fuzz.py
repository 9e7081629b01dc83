"""The fuzz suite over a running vla_node (vla_ros.bench.fuzz), bounded for CI.

One run for the module, through main() as `python -m vla_ros.bench fuzz` makes it: the tiny model
with random weights, a few hundred messages over DDS, bad ones of every input class among good ones,
the hypothesis seed fixed so every run sends the same cases. The tests read its JSON line: the
node kept spinning and answering, every command was finite, within the limits and one tick's step,
every hold, fault and refusal was named, and after the bad phase a new goal ran.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
pytest.importorskip("hypothesis", reason="needs hypothesis (the dev extra: pip install -e .[dev])")
from vla_ros.bench import fuzz, fuzz_cases  # noqa: E402
from vla_ros.ros.interface_fields import load_interfaces  # noqa: E402

# The fuzzer sends goals over the ExecuteInstruction action: the ~/instruction topic front-end
# (Humble, where the interfaces are not built here) cannot tell a refused goal from a lost one.
_action, _status, _why = load_interfaces()
if _action is None:
    pytest.skip(f"needs the ExecuteInstruction action: {_why}", allow_module_level=True)

pytestmark = pytest.mark.ros

MESSAGES, SEED = 400, 0
KEYS = {"messages", "per_class", "dropped_per_source", "violations", "node_alive", "resumed", "commands",
        "seconds"}


@pytest.fixture(scope="module")
def fuzz_run() -> tuple[int, dict, str]:
    """(exit code, the JSON object of the last stdout line, the whole stdout) of one run."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = fuzz.main(["--messages", str(MESSAGES), "--seed", str(SEED)])
    stdout = out.getvalue()
    return code, json.loads(stdout.strip().splitlines()[-1]), stdout


def test_the_same_seed_generates_the_same_cases():
    first, again = fuzz_cases.generate_cases(MESSAGES, SEED), fuzz_cases.generate_cases(MESSAGES, SEED)
    assert [(c.cls, c.source, repr(c.fields), c.repeat) for c in first] == [
        (c.cls, c.source, repr(c.fields), c.repeat) for c in again]
    assert {c.cls for c in first} == {"good", *fuzz_cases.BAD_CLASSES}
    assert sum(c.messages for c in first) >= MESSAGES


def test_main_prints_one_json_object_with_the_documented_keys(fuzz_run):
    code, result, _ = fuzz_run
    assert set(result) >= KEYS, sorted(KEYS - set(result))
    assert code in (0, 1)
    assert result["messages"] == sum(result["per_class"].values()) >= MESSAGES - 3
    violations = result["violations"]
    assert isinstance(violations["count"], int) and isinstance(violations["examples"], list)
    assert isinstance(result["node_alive"], bool) and isinstance(result["resumed"], bool)
    assert result["seconds"] < 120, result["seconds"]


def test_the_node_survives_bad_input_of_every_class_within_its_invariants(fuzz_run):
    code, result, _ = fuzz_run
    violations = result["violations"]
    assert violations["count"] == 0, violations
    assert result["node_alive"] and result["resumed"], result
    assert result["commands"] > 100 and result["ticks_checked"] > 100, result
    assert code == 0


def test_every_bad_class_was_sent_and_the_node_named_what_it_dropped(fuzz_run):
    _, result, _ = fuzz_run
    assert set(fuzz_cases.BAD_CLASSES) <= set(result["per_class"]), sorted(set(fuzz_cases.BAD_CLASSES)
                                                                     - set(result["per_class"]))
    assert all(result["dropped_per_source"].get(s, 0) > 0 for s in ("scene", "wrist", "joint_states")), result
    # Sensor data is best effort, so a message may be lost on the way; nearly all must be named.
    drops = result["named_drops"].values()
    expected = sum(d["expected"] for d in drops)
    named = sum(d["named"] + d["otherwise"] for d in drops)
    assert expected > 0 and named >= 0.8 * expected, result["named_drops"]
    for cls in [c for c in fuzz_cases.BAD_CLASSES if c.startswith(("instruction", "goal"))]:
        # refused by the node ("bad request: ...") or, for what the wire would corrupt, by the client
        assert result["rejections"].get(cls, "").startswith(("bad request: ", "client: ")), (
            cls, result["rejections"])


def test_an_instruction_with_a_nul_never_runs(fuzz_run):
    """rosidl cuts a string at its NUL on the wire ('go\\0 left' would arrive as 'go', a valid goal):
    InstructionClient refuses it before sending."""
    _, result, _ = fuzz_run
    assert result["per_class"].get("instruction_nul", 0) > 0
    assert "instruction_nul" not in result["bad_input_accepted"]["per_class"], result["bad_input_accepted"]


def test_a_goal_with_a_nan_timeout_is_refused(fuzz_run):
    """A NaN timeout_s would never time out (NaN compares false): refused as a bad request."""
    _, result, _ = fuzz_run
    assert result["per_class"].get("goal_bad_timeout", 0) > 0
    assert "goal_bad_timeout" not in result["bad_input_accepted"]["per_class"], result["bad_input_accepted"]
