"""The vla_node ROS shell: parameters, inputs, outputs, action server and diagnostics.

It converts messages and wires threads; the controller logic lives in vla_ros.core.
"""
