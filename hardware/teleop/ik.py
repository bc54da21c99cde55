"""Differential inverse kinematics by damped least squares: an end-effector velocity → joint velocities.

For a Jacobian J (m, n) of the end effector (m = 3 for its position, 6 with its orientation),
a commanded velocity v (m,) and the joints' positions q (n,):

    dq = Jᵀ (J Jᵀ + λ² I)⁻¹ v

Far from singularities λ = 0 and dq is the least-norm exact solution; as the smallest singular
value σ of J drops below `singular_threshold` ε, λ² = λ_max² (1 − (σ/ε)²) grows, which bounds
|dq| by about |v| / (2 λ_max) where plain least squares would blow up (Nakamura and Hanafusa's
damping). Joint limits are respected by an active set: a joint that would leave [lower, upper]
within the step stops at its limit and the others are solved again for the rest of the
velocity. Joint speeds are finally capped at `max_joint_speed`, scaling all of dq alike so the
direction of motion is kept.

    ik = DifferentialIK(lower, upper, max_joint_speed=2.0)
    dq = ik.solve(jacobian, velocity, q, dt=0.02)        # rad/s, (n,)
    q_target = q + dq * dt                               # within [lower, upper]

The Jacobian comes from MuJoCo: `env.batch.jac(body, point)` for a BatchEnv (see
`s2r.apps.teleop`), `mujoco.mj_jacSite` for one MjData.
"""

from __future__ import annotations

import numpy as np


class DifferentialIK:
    """Damped-least-squares differential IK with joint limits and a joint speed cap.

    lower, upper: (n,) joint limits, rad or m. damping: λ_max, in the units of J (m/rad for
    position). singular_threshold: ε, the smallest singular value below which damping starts.
    max_joint_speed: rad/s (or m/s) that no joint exceeds.
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, *, damping: float = 0.05,
                 singular_threshold: float = 0.05, max_joint_speed: float = 3.0) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1 or np.any(self.lower > self.upper):
            raise ValueError(f"joint limits: expected lower <= upper, both (n,); got {self.lower} and {self.upper}")
        if not (damping > 0 and singular_threshold > 0 and max_joint_speed > 0):
            raise ValueError(f"damping, singular_threshold and max_joint_speed must be > 0; got {damping}, "
                             f"{singular_threshold}, {max_joint_speed}")
        self.damping = damping
        self.singular_threshold = singular_threshold
        self.max_joint_speed = max_joint_speed

    def damping_squared(self, jacobian: np.ndarray) -> float:
        """λ² for this Jacobian: 0 when it is well conditioned, up to damping² at a singularity."""
        if min(jacobian.shape) == 0:
            return self.damping**2
        sigma = np.linalg.svd(jacobian, compute_uv=False)[min(jacobian.shape) - 1]
        if sigma >= self.singular_threshold:
            return 0.0
        return self.damping**2 * (1.0 - (sigma / self.singular_threshold) ** 2)

    def solve(self, jacobian: np.ndarray, velocity: np.ndarray, q: np.ndarray, dt: float) -> np.ndarray:
        """Joint velocities (n,) that move the end effector at `velocity` (m,) for `dt` seconds.

        jacobian: (m, n) at q; q: (n,) joint positions. q + dq·dt stays within the limits.
        """
        jacobian = np.asarray(jacobian, dtype=np.float64)
        velocity = np.asarray(velocity, dtype=np.float64)
        q = np.asarray(q, dtype=np.float64)
        m, n = jacobian.shape
        if velocity.shape != (m,) or q.shape != (n,) or self.lower.shape != (n,):
            raise ValueError(f"DifferentialIK.solve: jacobian {jacobian.shape}, velocity {velocity.shape}, "
                             f"q {q.shape}, limits {self.lower.shape}: expected (m, n), (m,), (n,), (n,)")
        if not (np.all(np.isfinite(jacobian)) and np.all(np.isfinite(velocity)) and np.all(np.isfinite(q))):
            return np.zeros(n)  # bad input goes safe: hold still
        dq = np.zeros(n)
        free = np.ones(n, dtype=bool)
        for _ in range(n):
            part = jacobian[:, free]
            residual = velocity - jacobian[:, ~free] @ dq[~free]
            gram = part @ part.T + self.damping_squared(part) * np.eye(m)
            dq[free] = part.T @ np.linalg.lstsq(gram, residual, rcond=None)[0]
            reached = q + dq * dt
            over = free & ((reached > self.upper) | (reached < self.lower))
            if not over.any():
                break
            dq[over] = (np.clip(reached[over], self.lower[over], self.upper[over]) - q[over]) / dt
            free &= ~over
            if not free.any():
                break
        fastest = np.max(np.abs(dq))
        if fastest > self.max_joint_speed:
            dq *= self.max_joint_speed / fastest
        return dq
