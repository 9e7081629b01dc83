"""Recorded demonstrations: the episode format the simulator writes and training reads (ROS-free)."""
