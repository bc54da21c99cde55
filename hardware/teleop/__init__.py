"""Teleoperation: devices that give a velocity command, differential IK for arms, and a recording session.

- `devices`: the `TeleopDevice` interface, `TeleopCommand`, `DeviceUnavailable`
- `open_device(name)` (here): a device by name
- `keyboard` (terminal, no X server), `gamepad` (evdev), `spacemouse` (hidapi): the devices
- `ik`: damped-least-squares differential IK with joint limits
- `leader_follower`: a torque-free leader arm driving a follower arm through the safety filter (`s2r teleop
  --leader KIND:PORT --follower KIND:PORT`), recorded as a LeRobot v3 dataset

`s2r.apps.teleop.run_teleop(task, device, out=...)` drives the simulator with a device and
records a dataset (it needs MuJoCo and torch; this package needs only numpy).

The ROS 2 side is `s2r.ros.teleop_node` (geometry_msgs/Twist on cmd_vel).
"""

from s2r.hardware.teleop.devices import BUTTONS, DeviceUnavailable, TeleopCommand, TeleopDevice
from s2r.hardware.teleop.ik import DifferentialIK

__all__ = ["BUTTONS", "DEVICES", "DeviceUnavailable", "DifferentialIK", "TeleopCommand", "TeleopDevice",
           "open_device"]


DEVICES = ("keyboard", "gamepad", "spacemouse")
"""The devices `open_device` knows."""


def open_device(name: str, **options) -> TeleopDevice:
    """Open a device by name (`keyboard`, `gamepad`, `spacemouse`); DeviceUnavailable if it is not there."""
    if name == "keyboard":
        from s2r.hardware.teleop.keyboard import KeyboardDevice

        return KeyboardDevice(**options)
    if name == "gamepad":
        from s2r.hardware.teleop.gamepad import GamepadDevice

        return GamepadDevice(**options)
    if name == "spacemouse":
        from s2r.hardware.teleop.spacemouse import SpaceMouseDevice

        return SpaceMouseDevice(**options)
    raise ValueError(f"unknown teleop device {name!r}; known: {', '.join(DEVICES)}")
