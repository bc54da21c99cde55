"""Observation terms of a multirotor (Learning to Fly's policy inputs), on the robot and in simulation.

The actor of a hovering quadrotor sees its position error, its attitude as a rotation matrix,
its linear velocity (world frame), its angular velocity (body frame, `base_ang_vel`) and the last
`ACTION_HISTORY_LENGTH` actions. Position and linear velocity are not in `RobotState` (an IMU does
not measure them): a motion-capture system or a state estimator provides them as task inputs,
`POSITION_ERROR` and `BASE_LIN_VEL_W`, as a tracker provides push-T's `object_pose`; the simulator
writes the truth into them. `s2r.observations.TERMS` lists these terms with the robot's others, and
`INPUT_SIZES` these inputs: every reader of a contract knows them, whatever it imported first.

    from s2r import flight
    inputs = {flight.POSITION_ERROR: p_w - target_w, flight.BASE_LIN_VEL_W: v_w,
              flight.ACTION_HISTORY: history.values}
    obs = build_observation(contract.terms, state, inputs, spec)       # 146 values for the Crazyflie
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from s2r.spec import RobotSpec
from s2r.state import RobotState

POSITION_ERROR = "position_error"
"""The base position minus its target, in the world frame, (..., 3) m."""
BASE_LIN_VEL_W = "base_lin_vel_w"
"""The base's linear velocity in the world frame, (..., 3) m/s."""
ACTION_HISTORY = "action_history"
"""The last `ACTION_HISTORY_LENGTH` raw actions, oldest first, flattened: (..., length * num_rotors)."""
ACTION_HISTORY_LENGTH = 32
"""Control steps of past actions the actor sees (Learning to Fly: 32 at 100 Hz)."""


def rotation_matrix(quat: np.ndarray) -> np.ndarray:
    """The rotation matrices (..., 3, 3), body to world, of unit quaternions (..., 4) (w, x, y, z)."""
    w, x, y, z = np.moveaxis(quat, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def position_error(state: RobotState, inputs: Mapping[str, np.ndarray], spec: RobotSpec) -> np.ndarray:
    """Base position minus target, world frame, (..., 3) m."""
    return inputs[POSITION_ERROR]


def base_rotation_matrix(state: RobotState, inputs: Mapping[str, np.ndarray], spec: RobotSpec) -> np.ndarray:
    """The base's attitude as its rotation matrix (body to world), row-major, (..., 9), from the IMU."""
    matrix = rotation_matrix(state.base_quat)
    return matrix.reshape(*matrix.shape[:-2], 9)


def base_lin_vel_w(state: RobotState, inputs: Mapping[str, np.ndarray], spec: RobotSpec) -> np.ndarray:
    """Base linear velocity, world frame, (..., 3) m/s."""
    return inputs[BASE_LIN_VEL_W]


def action_history(state: RobotState, inputs: Mapping[str, np.ndarray], spec: RobotSpec) -> np.ndarray:
    """The last ACTION_HISTORY_LENGTH raw actions, oldest first, (..., 32 * num_rotors)."""
    return inputs[ACTION_HISTORY]

