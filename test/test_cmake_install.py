"""The CMake install rules, run with the ROS runtime's own ament_cmake.

A full colcon build cannot run here (no C headers / Fast CDR CMake config for rosidl's type
support), so CMakeLists.txt is configured with -DVLA_ROS_SKIP_INTERFACES=ON, which leaves out only
rosidl_generate_interfaces. Everything else runs as in a colcon build: ament_cmake, the Python
install into the package directory, the executables from resource/executables, share/ data and the
ament index entry. The interface generation itself stays unverified here (README, Development).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent


def _ament_cmake_prefix() -> Path:
    for entry in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if entry and (Path(entry) / "share" / "ament_cmake" / "cmake").is_dir():
            return Path(entry)
    pytest.skip("no ament_cmake on AMENT_PREFIX_PATH")


def _run(command: list[str], **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"


def test_cmake_installs_python_package_executables_and_share(tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not installed")
    pytest.importorskip("catkin_pkg", reason="ament_cmake reads package.xml with catkin_pkg")
    build, install = tmp_path / "build", tmp_path / "install"
    _run([cmake, "-S", str(REPO), "-B", str(build), f"-DCMAKE_PREFIX_PATH={_ament_cmake_prefix()}",
          f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
          "-DVLA_ROS_SKIP_INTERFACES=ON", f"-DCMAKE_INSTALL_PREFIX={install}"])
    _run([cmake, "--build", str(build)])
    _run([cmake, "--install", str(build)])

    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "vla_ros").is_file()
    assert (install / "share" / "vla_ros" / "package.xml").is_file()
    for folder in ("launch", "config"):
        if (REPO / folder).is_dir():
            for source in (REPO / folder).iterdir():
                assert (install / "share" / "vla_ros" / folder / source.name).exists(), source

    table = (REPO / "resource" / "executables").read_text().splitlines()
    for line in (row for row in table if row.strip() and not row.startswith("#")):
        name, target = line.split()
        module, function = target.split(":")
        executable = install / "lib" / "vla_ros" / name
        assert executable.is_file() and os.access(executable, os.X_OK), executable
        text = executable.read_text()
        assert text.startswith("#!/usr/bin/env python3\n")
        assert f"from {module} import {function}\n" in text

    (site_packages,) = install.glob("lib/python3*/site-packages")
    package = site_packages / "vla_ros"
    assert (package / "ros" / "interface_fields.py").is_file()
    # The installed copy, not the source tree, is what imports from the install prefix.
    probe = subprocess.run(
        [sys.executable, "-c", "import vla_ros.ros.interface_fields as f, vla_ros; print(vla_ros.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{site_packages}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(site_packages), probe.stdout
