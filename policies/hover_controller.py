"""A hand-written hover controller for the Crazyflie, as a policy: the quadrotor tests' and deploy's reference.

`GeometricHoverController` reads only the actor's observation of `quadrotor_hover` (146 values, `s2r.flight`'s
layout) and is exported like a trained actor, so it flies wherever a hover policy does (s2r deploy, the
simulator's episodes) without training.

    controller = GeometricHoverController(control_period=0.002)
    export_onnx(controller, env.contract(), "hover.onnx")
"""

from __future__ import annotations

import math

import numpy as np
import torch

from s2r.flight import ACTION_HISTORY_LENGTH
from s2r.sim.quadrotor import G


class GeometricHoverController(torch.nn.Module):
    """A hand-written hover controller that reads only the actor's observation (146 values, `s2r.flight`'s
    layout) and returns raw thrust actions (n, 4) in [-1, 1], Crazyflie constants: position and velocity PD to a
    desired thrust direction, attitude PD on the rotation matrix (geometric control on SO(3), yaw to zero), the
    mixer of L2F's rotor order, and the motors' lag led from the action history (their state estimated by
    running the commands of the history through the first-order motor of `time_constant` at `control_period`).

    It checks that the task is solvable from what the actor sees, and it is a policy that hovers without
    training: exported like an actor (`actor_normalizer` is the identity), it is the deploy tests' policy.
    """

    def __init__(self, *, control_period: float = 0.01, time_constant: float = 0.15, lead: float = 5.0) -> None:
        super().__init__()
        self.actor_normalizer = torch.nn.Identity()
        self.mass, self.thrust_max, self.lead = 0.027, 3.16e-10 * 21702.0**2, lead
        # The motor state after the history's commands, m = (1-g)^31 c_0 + Σ_k g (1-g)^(31-k) c_k: one weighted sum
        gain = 1 - math.exp(-control_period / time_constant)   # the gap to its command a motor closes per period
        age = np.arange(ACTION_HISTORY_LENGTH - 1, -1, -1)
        weights = np.where(age == ACTION_HISTORY_LENGTH - 1, (1 - gain) ** age, gain * (1 - gain) ** age)
        self.register_buffer("history_weights", torch.tensor(weights[:, None], dtype=torch.float32))
        arm, torque_constant = 0.028, 0.005964552
        x, y = arm * np.array([1, -1, -1, 1]), arm * np.array([-1, -1, 1, 1])          # rotor0..3, L2F's order
        mixer = np.stack([np.ones(4), y, -x, torque_constant * np.array([-1, 1, -1, 1])])
        self.register_buffer("unmix", torch.tensor(np.linalg.inv(mixer).T / self.thrust_max, dtype=torch.float32))
        self.register_buffer("inertia", torch.tensor([3.85e-6, 3.85e-6, 5.9675e-6]))
        self.register_buffer("gravity", torch.tensor([0.0, 0.0, G]))

    @property
    def actor(self) -> GeometricHoverController:
        """What export writes after the (identity) normalizer: the controller itself."""
        return self

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw actions (n, 4) for observations (n, 146)."""
        p, rot, v, w = obs[:, 0:3], obs[:, 3:12].reshape(-1, 3, 3), obs[:, 12:15], obs[:, 15:18]
        accel = torch.clamp(-4.0 * p - 3.0 * v, -5.0, 5.0) + self.gravity
        accel_norm = torch.linalg.vector_norm(accel, dim=1, keepdim=True)
        z_desired = accel / accel_norm
        tilt = torch.clamp((z_desired * rot[:, :, 2]).sum(dim=1, keepdim=True), 0.3, 1.0)
        thrust = self.mass * accel_norm * tilt
        y_desired = _cross(z_desired, torch.zeros_like(z_desired) + torch.tensor([1.0, 0.0, 0.0]))
        y_desired = y_desired / torch.linalg.vector_norm(y_desired, dim=1, keepdim=True)
        desired = torch.stack([_cross(y_desired, z_desired), y_desired, z_desired], dim=-1)
        error = desired.transpose(1, 2) @ rot - rot.transpose(1, 2) @ desired
        e_rot = 0.5 * torch.stack([error[:, 2, 1], error[:, 0, 2], error[:, 1, 0]], dim=-1)
        torque = self.inertia * (-(15.0**2) * e_rot - 2 * 0.8 * 15.0 * w)
        wanted = torch.clamp(torch.cat([thrust, torque], dim=1) @ self.unmix, 0.0, 1.0)
        commands = (obs[:, 18:].reshape(-1, ACTION_HISTORY_LENGTH, 4) + 1) / 2
        motors = (commands * self.history_weights).sum(dim=1)  # the motors' state, from the commands they followed
        return 2 * torch.clamp(motors + self.lead * (wanted - motors), 0.0, 1.0) - 1


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cross products of (n, 3) tensors (written out: ONNX has no cross product)."""
    return torch.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                        a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], dim=1)
