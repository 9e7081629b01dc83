#!/usr/bin/env bash
# `make venv`: .venv with Python 3.12, this package editable with all extras, and a ROS 2 runtime
# when no system ROS 2 is sourced (the isaacsim-ros2 wheel: Jazzy and Humble rclpy, Fast DDS,
# launch, launch_testing, common message packages). Safe to run again; pip skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -x .venv/bin/python ]]; then
  if ! .venv/bin/python -c "import sys; assert sys.version_info[:2] == (3, 12)" 2>/dev/null; then
    echo "setup_venv: .venv exists but is not Python 3.12 ($(.venv/bin/python -V 2>&1));" \
         "remove it (rm -rf .venv) and run make venv again" >&2
    exit 1
  fi
else
  python=$(scripts/find_python.sh)
  echo "setup_venv: creating .venv with $python"
  "$python" -m venv .venv
fi

pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
echo "setup_venv: pip install -e .[all] (a fresh .venv downloads about 3.5 GB, mostly torch)"
"${pip[@]}" -e ".[all]"

# A system ROS 2 counts only if its rclpy imports into this venv's Python (a sourced Humble built
# for Python 3.10 does not); rclpy from the wheel itself (a shell that sourced scripts/env.sh)
# does not count either.
if [[ -n "${ROS_DISTRO:-}" ]] && .venv/bin/python -c "
import sys, rclpy
sys.exit('isaacsim' in rclpy.__file__)" 2>/dev/null; then
  echo "setup_venv: using the sourced system ROS 2 $ROS_DISTRO"
else
  # --no-deps: the wheel's metadata pins Isaac Sim packages we do not need; its ROS runtime needs
  # only lark (rosidl_parser), argcomplete and psutil (ros2cli), pytest < 9 (launch_testing's
  # plugin) and empy 3 (rosidl_adapter's .msg -> .idl templates, as in Humble and Jazzy).
  echo "setup_venv: no usable system ROS 2; installing the isaacsim-ros2 wheel's Jazzy/Humble runtime"
  "${pip[@]}" --no-deps "isaacsim-ros2==6.2.0.0"
  "${pip[@]}" lark argcomplete psutil "pytest<9" "empy>=3.3.4,<4"
fi
