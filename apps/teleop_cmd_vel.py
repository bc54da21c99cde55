"""`s2r teleop --cmd-vel`: a keyboard or gamepad drives a deployed legged robot through `cmd_vel`.

The teleop node (`s2r.ros.teleop_node`) runs in this process on the domain a deploy joins
(`--domain-id`, else $ROS_DOMAIN_ID, else 0: `s2r.ros.resolve_domain_id`), on loopback like the
deploy's nodes. Every 1 / rate_hz s it reads the device and publishes geometry_msgs/Twist on
`cmd_vel`: linear.x, linear.y and angular.z, at `linear_speed` m/s and `angular_speed` rad/s at
full deflection. The go2 policy reads those as its command (docs/locomotion.md); when the
session ends, however it ends, a zero Twist is published last, and the deploy also falls back to
a zero command once the newest Twist is older than its input timeout.

    s2r teleop --cmd-vel --device keyboard --linear-speed 0.8 --angular-speed 1.0
    # keyboard: w/s ±x, a/d ±y, q/e ±yaw (held keys repeat), space: stop, Esc: quit

Exit status: 0 after Esc (or Ctrl-C), 1 when the device is lost while running, 2 when it is
missing at the start (`gamepad: none found ...`).
"""

from __future__ import annotations

import os


def publish_cmd_vel(device: str, *, linear_speed: float, angular_speed: float, rate_hz: float, domain_id: int) -> int:
    """Run the teleop node for `device` ("keyboard" or "gamepad") on ROS domain `domain_id` until quit; its exit
    status."""
    from s2r.ros import environment

    os.environ.update(environment(domain_id))  # before rclpy reads them
    from s2r.ros.teleop_node import main

    return main(["--ros-args", "-p", f"device:={device}", "-p", f"linear_speed:={float(linear_speed)}",
                 "-p", f"angular_speed:={float(angular_speed)}", "-p", f"rate_hz:={float(rate_hz)}"])
