"""vla_ros: a small Vision-Language-Action model as a real-time ROS 2 controller."""

__version__ = "0.1.0"
