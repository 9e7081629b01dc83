"""The colcon install of `make interfaces` (scripts/build_interfaces.sh) is what the Jazzy suite runs.

Checks the CMake install rules on the real build: the generated interfaces and their type
supports, our sources in the same installed `vla_ros` package, the executables and share/, and
that a process started anywhere (not only from the repository root) imports the generated types.
On Humble nothing is built (README, "The colcon build"): these tests skip there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install" / "vla_ros"

if os.environ.get("ROS_DISTRO") == "humble":
    pytest.skip("no colcon build for Humble (the fallback layout is tested)", allow_module_level=True)


def test_install_holds_interfaces_sources_executables_and_share():
    assert (REPO / "install" / ".vla_ros_distro").read_text().strip() == os.environ["ROS_DISTRO"]
    (site,) = INSTALL.glob("lib/python3*/site-packages")
    package = site / "vla_ros"
    assert (package / "action" / "_execute_instruction.py").is_file()
    assert (package / "msg" / "_vla_status.py").is_file()
    assert list(package.glob("vla_ros_s__rosidl_typesupport_fastrtps_c*.so"))
    assert (package / "ros" / "vla_node.py").resolve() == REPO / "vla_ros" / "ros" / "vla_node.py"
    assert (INSTALL / "lib" / "libvla_ros__rosidl_typesupport_cpp.so").is_file()
    for line in (REPO / "resource" / "executables").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            executable = INSTALL / "lib" / "vla_ros" / line.split()[0]
            assert os.access(executable, os.X_OK), executable
    for folder in ("launch", "config", "checkpoints"):
        for source in (REPO / folder).iterdir():
            assert (INSTALL / "share" / "vla_ros" / folder / source.name).exists(), source
    assert (INSTALL / "share" / "ament_index" / "resource_index" / "packages" / "vla_ros").is_file()


def test_generated_types_import_from_any_directory(tmp_path):
    probe = subprocess.run(
        [sys.executable, "-c", "import vla_ros; from vla_ros.action import ExecuteInstruction; "
         "from vla_ros.msg import VlaStatus; import vla_ros.tools.goal_client; print(vla_ros.__file__); "
         "print(ExecuteInstruction.Goal().timeout_s, VlaStatus().state == '')"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    where, values = probe.stdout.split("\n")[:2]
    assert Path(where).is_relative_to(INSTALL), where
    assert values == "0.0 True"
