"""vla_ros: a small Vision-Language-Action model as a real-time ROS 2 controller."""

import pkgutil

# One package in two places: these sources, and the colcon install that adds the generated
# vla_ros.msg / vla_ros.action (scripts/build_interfaces.sh). Run from the repository root the
# sources shadow the install, so let the package span every `vla_ros` directory on sys.path.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
