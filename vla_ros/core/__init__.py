"""ROS-free runtime core: policy interface, action buffer, control loop, safety, task runner.

Nothing in this package imports rclpy; the ROS shell in ``vla_ros.ros`` wires it to topics.
"""
