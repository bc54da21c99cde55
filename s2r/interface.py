"""RobotInterface: what every robot s2r drives offers, simulated or real.

A robot is connected, enabled, read and commanded in the spec's joint order;
disabling it turns its motors off (zero torque). It is a context manager that
connects on entry and disables and closes on exit, whatever happened:

    with SimRobot(spec) as robot:          # or a hardware driver
        robot.enable()
        state = robot.read_state()         # RobotState, q: (num_joints,)
        robot.write_command(command)       # Command, q: (num_actuated,)

Nothing the policy outputs is written here directly: `hardware.safety.SafetyFilter`
stands between any policy and `write_command`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from s2r.spec import RobotSpec
from s2r.state import Command, RobotState


class RobotError(RuntimeError):
    """A robot cannot do what it was asked: not connected, a malformed command, a bus fault."""


class RobotInterface(ABC):
    """One robot, in the joint order of its `spec`."""

    spec: RobotSpec

    @abstractmethod
    def connect(self) -> None:
        """Open the link to the robot (bus, socket, simulation thread); motors stay disabled."""

    @abstractmethod
    def enable(self) -> None:
        """Power the motors: commands written from now on are obeyed."""

    @abstractmethod
    def read_state(self) -> RobotState:
        """The newest measured state; `stamp` is `time.time()` in seconds when it was measured."""

    @abstractmethod
    def write_command(self, command: Command) -> None:
        """Send one command for the actuated joints, in spec order, arrays of shape (num_actuated,)."""

    @abstractmethod
    def disable(self) -> None:
        """Motors off (zero torque); commands are ignored until `enable()`. Safe to call twice."""

    @abstractmethod
    def close(self) -> None:
        """Release the link and everything it owns. Safe to call twice."""

    def __enter__(self) -> RobotInterface:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.disable()
        finally:
            self.close()
