"""The built-in VLA model family (no ROS imports). Heavy modules load lazily."""

from __future__ import annotations

from typing import Any

__all__ = ["load_policy", "default_checkpoint"]


def load_policy(*args: Any, **kwargs: Any):
    from vla_ros.models.policy import load_policy as _load

    return _load(*args, **kwargs)


def default_checkpoint():
    from vla_ros.models.policy import default_checkpoint as _default

    return _default()
