"""ROS tools around the node, not the node: the simulated robot, the session harness, the demo,
closed-loop evaluation, bag record and replay, the goal client (`vla_ros instruct`) and the
DDS self-test. They talk to vla_node over DDS like any user would."""
