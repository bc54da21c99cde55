"""Plant: the physics an emulated bus moves, as its motors see it.

The motors' own control laws (a Dynamixel's position PID, a Feetech servo's, an MIT motor's
PD with feed-forward) compute joint torques from what they measure; the plant integrates them.
`s2r.sim.motor_plant.MujocoPlant` steps the robot's MJCF (the robot side never imports MuJoCo);
any object with these members will do:

    plant = MujocoPlant(spec)             # from s2r.sim.motor_plant
    q, dq = plant.q, plant.dq             # (num_joints,) rad, rad/s, spec order
    plant.step(tau)                       # tau: (num_joints,) N·m applied for plant.timestep s

A plant whose robot has an IMU also has `imu()` → (quat (4,) w, x, y, z in the world, angular
velocity (3,) rad/s in the IMU's axes), which an emulated IMU streams (`MitCanBus(imu_id=...)`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Plant(Protocol):
    """What an emulator's motors drive: joints in the spec's order."""

    timestep: float
    """Seconds one `step` integrates."""

    @property
    def q(self) -> np.ndarray:
        """Joint positions now, (num_joints,) rad or m."""

    @property
    def dq(self) -> np.ndarray:
        """Joint velocities now, (num_joints,) rad/s or m/s."""

    def step(self, tau: np.ndarray) -> None:
        """Apply joint torques `tau`, (num_joints,) N·m or N, for one timestep."""
