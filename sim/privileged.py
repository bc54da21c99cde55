"""Privileged critic terms: what the simulator knows and the robot cannot measure.

Each term is `fn(env) -> (num_envs, size)`; per-world model values come from
the batch's expanded fields where randomization made them per-world, else
from the shared model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from s2r.sim.env import BatchEnv


def joint_damping(env: BatchEnv) -> np.ndarray:
    """Damping of each joint's dof, (num_envs, num_joints) N·m·s/rad."""
    return env.model_value("dof_damping")[:, env.view.dof_index]


def body_mass(env: BatchEnv) -> np.ndarray:
    """Mass of every body but the world, (num_envs, nbody - 1) kg."""
    return env.model_value("body_mass")[:, 1:]


def ee_error(env: BatchEnv) -> np.ndarray:
    """End effector minus target, (num_envs, 3) m (tasks with an `ee_error` method)."""
    return env.task.ee_error(env)


def base_lin_vel(env: BatchEnv) -> np.ndarray:
    """The base's true linear velocity in its frame, (num_envs, 3) m/s (locomotion tasks)."""
    return env.task.base.lin_vel_b()


def foot_contact_forces(env: BatchEnv) -> np.ndarray:
    """Normal contact force on each foot, (num_envs, num_feet) N (locomotion tasks)."""
    return env.task.base.touch("feet")


def base_height(env: BatchEnv) -> np.ndarray:
    """The base's height above the ground under it, (num_envs, 1) m (locomotion tasks)."""
    return env.task.base_height(env)[:, None]


def height_scan(env: BatchEnv) -> np.ndarray:
    """The base's height above the ground at a grid of points around it (`Terrain.height_scan`),
    (num_envs, points) m, clipped to ±1 m (locomotion tasks on a terrain)."""
    return env.task.height_scan(env)


def rotor_thrust_state(env: BatchEnv) -> np.ndarray:
    """Each rotor's thrust state, (num_envs, num_rotors) fractions of top thrust (quadrotor tasks)."""
    return env.task.motor_thrust()


def disturbance_force(env: BatchEnv) -> np.ndarray:
    """The constant disturbance force on the base, (num_envs, 3) N, world frame (quadrotor tasks)."""
    return env.task.disturbance


PRIVILEGED: dict[str, Callable[[BatchEnv], np.ndarray]] = {
    "joint_damping": joint_damping,
    "body_mass": body_mass,
    "ee_error": ee_error,
    "base_lin_vel": base_lin_vel,
    "foot_contact_forces": foot_contact_forces,
    "base_height": base_height,
    "height_scan": height_scan,
    "rotor_thrust_state": rotor_thrust_state,
    "disturbance_force": disturbance_force,
}
