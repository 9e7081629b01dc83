"""Where the tests find lerobot: .venv-lerobot (`make lerobot-venv`), a venv of its own because
lerobot pins torch < 2.12, numpy < 2.3, huggingface-hub < 2, av 15 and datasets < 5. Without it
the tests that need it are skipped, except with CI=true, where they fail: CI must not pass by
skipping them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LEROBOT_PYTHON = Path(__file__).resolve().parents[1] / ".venv-lerobot" / "bin" / "python"


def lerobot_python() -> Path:
    if not LEROBOT_PYTHON.exists():
        reason = f"{LEROBOT_PYTHON} missing; build it with `make lerobot-venv`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return LEROBOT_PYTHON
