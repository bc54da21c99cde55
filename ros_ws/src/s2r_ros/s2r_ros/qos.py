"""The QoS of every s2r topic, chosen once, with the reason.

Sensor data and commands: best effort, keep only the newest. A state or a command that is
late is worth less than the next one, due a control period later; a reliable stream would
resend a lost sample behind newer ones and, with a slow reader, hold the writer back. A lost
command is covered by the SafetyFilter's watchdog, a lost state by the next one. A
best-effort subscription also hears reliable publishers (a teleop tool's cmd_vel).

What robot_node publishes about its loop (joint_states, imu, and the hosted policy's
joint_command) is offered reliably, keep last 1: a subscriber with rclpy's default QoS
(reliable, depth 10: a user's own node, `ros2 topic echo`) matches it, and so does a
best-effort one; with keep-last the writer never waits for a slow reader, and it writes from
the telemetry thread, so a resend never touches the control loop.

Diagnostics: reliable with a short history, as diagnostic aggregators expect.
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
"""Subscriptions to joint_states and imu (policy_node), cmd_vel, target, object_pose."""
COMMAND_QOS = SENSOR_QOS
"""joint_command from policy_node (the two-process mode), and what robot_node subscribes with."""
TELEMETRY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.VOLATILE)
"""robot_node's joint_states, imu and (hosted policy) joint_command: offered reliably, newest only."""
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
"""/diagnostics."""
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
"""The recorder's subscriptions: best effort to match every publisher, a deep queue so that a
burst waits instead of being dropped while a chunk is compressed."""
