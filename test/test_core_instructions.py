"""Instruction checks before a goal starts, and the log preview (no ROS)."""

from __future__ import annotations

import pytest

from vla_ros.core.instructions import instruction_problem, preview


@pytest.mark.parametrize(
    ("text", "limit", "words"),
    [
        ("", 10, "empty instruction"),
        (" \n\t", 10, "whitespace-only instruction (3 characters)"),
        ("abcdefghijk", 10, "11 bytes, over max_instruction_bytes=10"),
        ("ééééé é", 12, "13 bytes, over max_instruction_bytes=12"),  # counted in UTF-8 bytes, not characters
        ("pick\0 up", 100, "NUL character at index 4"),
        (b"go \xff".decode("utf-8", errors="replace"), 100, "not valid UTF-8 (undecodable bytes at index 3)"),
    ],
)
def test_bad_instructions_are_named(text, limit, words):
    assert words in instruction_problem(text, limit)


def test_good_instruction_passes_at_the_limit():
    assert instruction_problem("é" * 5, 10) == ""
    assert instruction_problem("pick up the red cube", 20) == ""


def test_preview_cuts_long_instructions_and_says_how_long():
    assert preview("short") == "'short'"
    long = preview("x" * 1_000_000)
    assert len(long) < 120 and "(1000000 characters)" in long
