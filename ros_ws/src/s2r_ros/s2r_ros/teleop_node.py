"""teleop_node: a teleop device (keyboard, gamepad, SpaceMouse) → geometry_msgs/Twist on `cmd_vel`.

For robots driven through ROS 2 (a mobile base, a velocity-controlled arm, a policy with a
`cmd_vel` input). Every `1 / rate_hz` seconds the node reads the device and publishes its
command scaled to `linear_speed` m/s and `angular_speed` rad/s at full deflection.

    topic     type                  dir  QoS
    cmd_vel   geometry_msgs/Twist   out  reliable, keep last 1 (heard by reliable and best-effort subscribers)

The device's "quit" button (Esc on the keyboard) publishes a zero Twist and ends the node
(exit status 0). A device missing at start refuses to start (exit status 2, the reason logged). A device lost
while running (unplugged, terminal closed): the node publishes a zero Twist, so that whatever
it drove stops, and exits with status 1. It also publishes a zero Twist when it shuts down.

    s2r-teleop-node --ros-args -p device:=keyboard -p linear_speed:=0.3
"""

from __future__ import annotations

from collections.abc import Callable

from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from s2r.hardware.teleop import DEVICES, DeviceUnavailable, TeleopCommand, TeleopDevice, open_device

from .parameters import Param, declare, one_of, positive
from .spin import StartupError, run_node

TWIST_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
"""Reliable so that reliable subscribers (most base controllers) match too; depth 1: only the newest matters."""

PARAMS = (
    Param("device", "keyboard", f"Teleop device: {', '.join(DEVICES)}.", one_of(*DEVICES)),
    Param("rate_hz", 20.0, "Rate at which the device is read and cmd_vel published, Hz.", positive),
    Param("linear_speed", 0.2, "Linear velocity at full deflection, m/s.", positive),
    Param("angular_speed", 0.5, "Angular velocity at full deflection, rad/s.", positive),
)


def twist_from_command(command: TeleopCommand) -> Twist:
    msg = Twist()
    msg.linear.x, msg.linear.y, msg.linear.z = (float(v) for v in command.linear)
    msg.angular.x, msg.angular.y, msg.angular.z = (float(v) for v in command.angular)
    return msg


class TeleopNode(Node):
    """Publishes a device's velocity command on cmd_vel at a fixed rate.

    open_device: how the device is opened from its name (the tests pass a scripted one).
    """

    def __init__(self, open_device: Callable[[str], TeleopDevice] = open_device) -> None:
        super().__init__("teleop_node")
        self.params = p = declare(self, PARAMS)
        self.failure: str | None = None
        """Set when the device is lost; the process then exits with status 1."""
        self.finished = False
        """Set when the operator quits; the process then exits with status 0."""
        self.closed = False
        try:
            self.device = open_device(p["device"])
        except DeviceUnavailable as error:
            raise StartupError(str(error)) from None
        self.publisher = self.create_publisher(Twist, "cmd_vel", TWIST_QOS)
        # One timer on the executor's thread: a device read is a non-blocking poll, far shorter than the period.
        self.timer = self.create_timer(1.0 / p["rate_hz"], self.on_tick)
        self.get_logger().info(f"{p['device']} → cmd_vel at {p['rate_hz']:g} Hz, {p['linear_speed']:g} m/s, "
                               f"{p['angular_speed']:g} rad/s at full deflection")

    def on_tick(self) -> None:
        if self.failure is not None or self.finished:
            return
        try:
            command = self.device.read()
        except DeviceUnavailable as error:
            self.publisher.publish(Twist())
            self.failure = str(error)
            self.get_logger().error(f"{error}; published a zero Twist")
            return
        if "quit" in command.buttons:
            self.publisher.publish(Twist())
            self.finished = True
            self.get_logger().info("quit: published a zero Twist")
            return
        scaled = command.scaled(linear=self.params["linear_speed"], angular=self.params["angular_speed"])
        self.publisher.publish(twist_from_command(scaled))

    def close(self) -> None:
        """Publish a zero Twist and release the device. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.timer.cancel()
        self.publisher.publish(Twist())
        self.device.close()


def main(args: list[str] | None = None) -> int:
    return run_node(TeleopNode, args, name="teleop_node")


if __name__ == "__main__":
    raise SystemExit(main())
