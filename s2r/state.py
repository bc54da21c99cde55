"""RobotState and Command: one tick of what a robot reports and what it is told.

Both hold numpy arrays whose last axis runs over joints; a leading batch axis
is allowed, so the batched simulator and the single robot share one type.

    state = RobotState(stamp=t, q=q, dq=dq, tau=tau)            # q: (num_joints,)
    batch = RobotState(stamp=t, q=Q, dq=DQ, tau=TAU)            # Q: (num_envs, num_joints)
    command = Command(q=q_target, dq=zeros, kp=kp, kd=kd, tau_ff=zeros)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RobotState:
    """What a robot reports in one tick, in the spec's joint order."""

    stamp: float
    """Seconds, on the clock of whoever measured it."""
    q: np.ndarray
    """Joint positions, (..., num_joints), rad or m."""
    dq: np.ndarray
    """Joint velocities, (..., num_joints)."""
    tau: np.ndarray
    """Measured joint efforts, (..., num_joints), N·m or N."""
    base_quat: np.ndarray | None = None
    """Base orientation in the world, (..., 4) as w, x, y, z; None without an IMU."""
    base_ang_vel: np.ndarray | None = None
    """Base angular velocity in the base frame, (..., 3) rad/s; None without an IMU."""
    base_pos_w: np.ndarray | None = None
    """Base position in the world, (..., 3) m, where motion capture or a state estimator provides it (SimRobot
    reports the truth for a floating base); None otherwise. A multirotor's flight inputs are computed from it."""
    base_lin_vel_w: np.ndarray | None = None
    """Base linear velocity in the world, (..., 3) m/s, from the same source as `base_pos_w`; None otherwise."""
    fault: str | None = None
    """Why the robot's driver latched a fault (a motor lost, or reporting overload or overheating), naming the
    motor; None when it has none. The SafetyFilter damps while it is set."""

    def take(self, ids: np.ndarray) -> RobotState:
        """The states of the batch rows `ids`."""
        pick = lambda a: None if a is None else a[ids]  # noqa: E731
        return RobotState(self.stamp, self.q[ids], self.dq[ids], self.tau[ids], pick(self.base_quat),
                          pick(self.base_ang_vel), pick(self.base_pos_w), pick(self.base_lin_vel_w))


@dataclass
class Command:
    """What a robot is told in one tick, for its actuated joints in spec order.

    The motor driver applies tau = kp (q - q_meas) + kd (dq - dq_meas) + tau_ff.
    """

    q: np.ndarray
    """Position targets, (..., num_actuated)."""
    dq: np.ndarray
    """Velocity targets, (..., num_actuated)."""
    kp: np.ndarray
    """Position gains, (..., num_actuated)."""
    kd: np.ndarray
    """Damping gains, (..., num_actuated)."""
    tau_ff: np.ndarray
    """Feed-forward efforts, (..., num_actuated)."""
    rotor_thrust: np.ndarray | None = None
    """Rotor commands of a multirotor, (..., num_rotors) in spec order, each a fraction of its top thrust in
    [0, 1] (0: motor off); None for a robot without rotors."""
