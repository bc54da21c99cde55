"""Teleoperation: devices that give a velocity command, differential IK for arms, and a recording session.

- `devices`: the `TeleopDevice` interface, `TeleopCommand`, `DeviceUnavailable`, `open_device(name)`
- `keyboard` (terminal, no X server), `gamepad` (evdev), `spacemouse` (hidapi): the devices
- `ik`: damped-least-squares differential IK with joint limits
- `session`: `run_teleop(task, device, out=...)` drives the simulator and records a dataset
  (imports MuJoCo and torch; the rest needs only numpy)

The ROS 2 side is `s2r_ros.teleop_node` (geometry_msgs/Twist on cmd_vel).
"""

from hardware.teleop.devices import BUTTONS, DEVICES, DeviceUnavailable, TeleopCommand, TeleopDevice, open_device
from hardware.teleop.ik import DifferentialIK

__all__ = ["BUTTONS", "DEVICES", "DeviceUnavailable", "DifferentialIK", "TeleopCommand", "TeleopDevice",
           "open_device"]
