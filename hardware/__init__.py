"""Hardware: RobotInterface, drivers, the safety filter, teleop devices and bus emulators.

Imports only `s2r`, numpy and yaml: it runs on the robot computer. `hardware.sim_robot`
(MuJoCo) is imported by name where a simulated robot is wanted.
"""

from hardware.interface import RobotError, RobotInterface
from hardware.safety import EVENTS, SafetyConfig, SafetyFilter

__all__ = ["EVENTS", "RobotError", "RobotInterface", "SafetyConfig", "SafetyFilter"]
