"""Hardware: RobotInterface, drivers, the safety filter, teleop devices and bus emulators.

Imports only `s2r`, numpy and yaml: it runs on the robot computer. `s2r.sim.sim_robot`
(MuJoCo) is imported by name where a simulated robot is wanted.
"""

from s2r.hardware.safety import EVENTS, SafetyConfig, SafetyFilter
from s2r.interface import RobotError, RobotInterface

__all__ = ["EVENTS", "RobotError", "RobotInterface", "SafetyConfig", "SafetyFilter"]
