"""`pip install .` (the top-level setup.py shim with pyproject.toml's metadata) builds a working wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_pip_builds_a_wheel_with_the_package_and_its_entry_point(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--disable-pip-version-check", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("vla_ros-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("vla_ros/__init__.py", "vla_ros/tools/goal_client.py", "vla_ros/core/runtime.py",
                   "vla_ros/models/vla.py"):
        assert module in names, module
    assert not any(name.startswith(("test/", "install/", "build/")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vla_ros = vla_ros.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
