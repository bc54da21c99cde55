"""Angles and rotations shared by the simulator, the tasks and the robot side (numpy only).

Quaternions are MuJoCo's (w, x, y, z), unit length; angles are in radians.

    wrap_to_pi(np.array([3.5]))                  # → [-2.783...]
    yaw_from_quat(np.array([[0.7071, 0, 0, 0.7071]]))  # → [1.5708]
    tilt_from_quat(np.array([0.0, 1.0, 0.0, 0.0]))     # → 3.1416 (on its back)
"""

from __future__ import annotations

import numpy as np


def wrap_to_pi(angle: np.ndarray) -> np.ndarray:
    """Angles (...) wrapped to [-π, π)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def yaw_from_quat(quat: np.ndarray) -> np.ndarray:
    """The rotation about z (...) of unit quaternions (..., 4) in (w, x, y, z) order, in [-π, π]."""
    w, x, y, z = np.moveaxis(np.asarray(quat), -1, 0)
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def tilt_from_quat(quat: np.ndarray) -> np.ndarray:
    """The angle (...) between the body's z axis and the world's up axis, in [0, π], of unit quaternions
    (..., 4) in (w, x, y, z) order: 0 upright, π/2 on its side, π upside down."""
    w, x, y, z = np.moveaxis(np.asarray(quat), -1, 0)
    return np.arccos(np.clip(1.0 - 2.0 * (x * x + y * y), -1.0, 1.0))
