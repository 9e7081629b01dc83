"""docs/vla_node.md's parameter table is generated from the one parameter table (ros/params.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_ros.ros import params

DOC = Path(__file__).resolve().parents[1] / params.DOC_PATH


def test_the_documented_parameter_table_is_the_generated_one():
    text = DOC.read_text()
    assert params.document(text) == text, "regenerate it: python -m vla_ros.ros.params --write"


def test_the_generated_table_has_a_row_per_parameter_with_its_default_and_range():
    rows = {line.split("|")[1].strip(" `"): line for line in params.markdown_table().splitlines()[2:]}
    assert len(rows) == len(params.PARAMS) + len(params.CAMERA_PARAMS)
    rate = next(p for p in params.PARAMS if p.name == "control_rate_hz")
    assert f"`{rate.default}`" in rows["control_rate_hz"] and rate.valid in rows["control_rate_hz"]
    assert all(line.count("|") == 5 for line in rows.values()), "a cell holds an unescaped pipe"


def test_a_doc_without_the_markers_is_refused_by_name():
    with pytest.raises(ValueError, match="lacks the markers"):
        params.document("## Parameters\n| parameter | default |\n")
