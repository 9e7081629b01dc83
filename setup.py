"""Shim for tools that look for setup.py: `pip install .` reads everything from pyproject.toml.

The ROS build does not use this file: package.xml declares build_type ament_cmake, so colcon
builds with CMakeLists.txt (interfaces, Python sources, executables).
"""

from setuptools import setup

setup()
