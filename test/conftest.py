"""Shared test set-up: DDS isolation per session and the `ros` marker.

- Each pytest session gets its own ROS_DOMAIN_ID (derived from its pid) unless one is set, and DDS
  discovery is kept on this host, so parallel sessions and other machines never cross-talk.
- Tests marked `ros` (and every launch_testing module, test_launch_*.py) are skipped with the
  reason when rclpy is not importable, i.e. when pytest runs outside `make test` / `. scripts/env.sh`.
  With CI=true or VLA_ROS_REQUIRE_ROS=1 a missing rclpy is an error instead: CI must not pass by
  skipping the ROS tests.
- launch_testing tests live in files named test_launch_*.py: launch_testing's pytest plugin imports
  every collected module to look for a launch test, which here would import torch and transformers
  for every `pytest -k` run; `pytest_pycollect_makemodule` below lets it see only those files.
- triton (torch's compiler backend, imported by transformers) is loaded first: loading it after
  MuJoCo made an EGL context (Mesa's llvmpipe loads its own libLLVM) segfaults the process, and
  the suite renders before it builds models.
- Fixture `rclpy_context`: an initialised rclpy Context of its own, shut down afterwards.
- A failed `ros` test is run again, up to VLA_ROS_TEST_RERUNS times (default 2), as ROS 2's own CI
  does (`colcon test --retest-until-pass`): these tests run real DDS, threads and separate processes
  on the wall clock, and on a loaded 2-core CI machine a delivery or a scheduling stall of a
  second or more happens now and then. Each rerun is listed in the summary ("RERUN"); a test that
  fails every time fails the run. Other tests are not rerun.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

# MuJoCo picks its GL backend when first imported, and a test module may import mujoco before
# vla_ros.sim sets this: headless EGL unless the caller chose otherwise.
os.environ.setdefault("MUJOCO_GL", "egl")

with contextlib.suppress(ImportError):  # see the module docstring; 0.2 s; absent on some builds
    import triton  # noqa: F401

# Set before anything imports rclpy; launched child processes inherit os.environ.
if not os.environ.get("ROS_DOMAIN_ID"):
    # 1..100: inside the range every platform allows, and never the default domain 0.
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
if os.environ.get("ROS_DISTRO") == "humble":
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
else:  # Jazzy and later replaced ROS_LOCALHOST_ONLY with this
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def _rclpy_missing() -> str | None:
    """Why rclpy cannot be used here, or None when it can."""
    try:
        import rclpy  # noqa: F401
    except ImportError as exc:
        return (f"rclpy not importable ({exc}); run the tests through `make test` or after "
                "`. scripts/env.sh`")
    return None


RCLPY_MISSING = _rclpy_missing()
RERUNS = int(os.environ.get("VLA_ROS_TEST_RERUNS", "2"))


def _ros_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("VLA_ROS_REQUIRE_ROS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ros: needs a ROS 2 runtime (rclpy, DDS, launch); skipped when rclpy is missing")
    if RCLPY_MISSING and _ros_required():
        raise pytest.UsageError(f"CI/VLA_ROS_REQUIRE_ROS set but {RCLPY_MISSING}")


def pytest_report_header(config: pytest.Config) -> str:
    runtime = os.environ.get("VLA_ROS_RUNTIME", "not from scripts/env.sh")
    rclpy_state = RCLPY_MISSING or "rclpy importable"
    return (f"ROS: {runtime}; ROS_DISTRO={os.environ.get('ROS_DISTRO', '')}, "
            f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}; {rclpy_state}")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    if module_path.name.startswith("test_launch_") or module_path.name == "__init__.py":
        return None  # launch_testing's hook (or pytest's default) decides
    return pytest.Module.from_parent(parent, path=module_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name.startswith("test_launch_"):
            item.add_marker(pytest.mark.ros)
        if RCLPY_MISSING and item.get_closest_marker("ros"):
            item.add_marker(pytest.mark.skip(reason=RCLPY_MISSING))
        elif (item.get_closest_marker("ros") and isinstance(item, pytest.Function) and RERUNS > 0
              and not item.get_closest_marker("flaky") and config.pluginmanager.hasplugin("rerunfailures")):
            item.add_marker(pytest.mark.flaky(reruns=RERUNS, reruns_delay=1))


@pytest.fixture
def rclpy_context() -> Iterator[object]:
    """A fresh rclpy Context (isolated from the global one), shut down after the test."""
    if RCLPY_MISSING:
        pytest.skip(RCLPY_MISSING)
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
