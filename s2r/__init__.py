"""s2r: one observation/action contract from simulation to the robot.

The core holds the contracts shared by the simulator, training and the robot:
`RobotSpec`, `RobotState`, `Command`, the observation terms, the action
mapping and the `PolicyContract`. It imports numpy and yaml only.
"""

from s2r.actions import ActionMapping
from s2r.contract import ContractError, PolicyContract
from s2r.observations import ObsTerm, build_observation
from s2r.spec import RobotSpec, SpecError, load_robot_spec, robot_spec
from s2r.state import Command, RobotState

__version__ = "0.1.0"

__all__ = [
    "ActionMapping", "Command", "ContractError", "ObsTerm", "PolicyContract", "RobotSpec",
    "RobotState", "SpecError", "build_observation", "load_robot_spec", "robot_spec",
]
