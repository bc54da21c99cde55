"""Floating-base readers: what the simulator knows about a legged robot's base and its contacts.

`FloatingBase` resolves, once per env, the free joint of the robot's base and the touch
sensors named after the bodies in the spec's `feet` and beside them, and reads every world
at once from the batch's live MjData fields:

    base = FloatingBase(env)
    base.lin_vel_b()          # (num_envs, 3) m/s, the base's linear velocity in its own frame
    base.pos_w()              # (num_envs, 3) m, the base origin in the world
    base.height()             # (num_envs,) m above the world's z = 0
    base.heading()            # (num_envs,) rad, yaw of the base's x axis
    base.touch("feet")        # (num_envs, 4) N, normal contact force on each foot

Touch sensors are computed inside each physics step (before integration): a force is at most
one physics step old. The MJCF names them `<body>` for each spec foot, each `*_calf`/`*_thigh`
and `base` (see sim/robots/go2/go2.xml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mujoco
import numpy as np

from s2r.spec import SpecError

if TYPE_CHECKING:
    from s2r.sim.env import BatchEnv


class FloatingBase:
    """The base's free joint and the robot's touch sensors in one env; see the module docstring."""

    def __init__(self, env: BatchEnv) -> None:
        model, spec = env.model, env.spec
        if env.view.base_body is None:
            raise SpecError(f"{spec.source}: floating_base: the locomotion terms need a floating base")
        joint = int(model.body_jntadr[env.view.base_body])
        self._qpos_adr, self._dof_adr = int(model.jnt_qposadr[joint]), int(model.jnt_dofadr[joint])
        self._qpos = env.data_field("qpos")
        self._qvel = env.data_field("qvel")
        self._sensordata = env.data_field("sensordata") if model.nsensordata else None
        self.groups: dict[str, np.ndarray] = {}
        """Sensor data columns of each contact group: feet (spec order), undesired (calves and thighs), base."""
        touch = {model.sensor(i).name: int(model.sensor_adr[i]) for i in range(model.nsensor)
                 if model.sensor_type[i] == mujoco.mjtSensor.mjSENS_TOUCH}
        missing = [name for name in (*spec.feet, "base") if name not in touch]
        if missing:
            raise SpecError(f"{spec.mjcf}: no touch sensor named {', '.join(map(repr, missing))} (feet and base)")
        self.groups["feet"] = np.array([touch[name] for name in spec.feet])
        self.groups["undesired"] = np.array([adr for name, adr in touch.items()
                                             if name.endswith(("_calf", "_thigh"))], dtype=np.int64)
        self.groups["base"] = np.array([adr for name, adr in touch.items() if name in ("base", "head")])

    def quat(self) -> np.ndarray:
        """The base's orientation in the world (w, x, y, z), (num_envs, 4)."""
        return self._qpos[:, self._qpos_adr + 3:self._qpos_adr + 7]

    def lin_vel_b(self) -> np.ndarray:
        """The base's linear velocity in its own frame, (num_envs, 3) m/s (MuJoCo's free joint holds it in
        the world frame)."""
        return rotate_inverse(self.quat(), self._qvel[:, self._dof_adr:self._dof_adr + 3])

    def pos_w(self) -> np.ndarray:
        """The base origin's position in the world, (num_envs, 3) m."""
        return self._qpos[:, self._qpos_adr:self._qpos_adr + 3]

    def height(self) -> np.ndarray:
        """The base origin's height above the world's z = 0, (num_envs,) m."""
        return self._qpos[:, self._qpos_adr + 2]

    def heading(self) -> np.ndarray:
        """Yaw of the base's x axis in the world, (num_envs,) rad."""
        w, x, y, z = np.moveaxis(self.quat(), -1, 0)
        return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))

    def touch(self, group: str) -> np.ndarray:
        """Normal contact forces of a group's touch sensors (`groups`), (num_envs, k) N."""
        if self._sensordata is None:
            return np.zeros((len(self._qpos), len(self.groups[group])))
        return self._sensordata[:, self.groups[group]]

    def set_position(self, ids: np.ndarray, pos_w: np.ndarray) -> None:
        """Put the base origin of worlds `ids` (n,) at `pos_w` (n, 3) m in the world (orientation unchanged)."""
        self._qpos[ids, self._qpos_adr:self._qpos_adr + 3] = pos_w

    def set_velocity(self, ids: np.ndarray, lin_vel_w: np.ndarray, ang_vel_b: np.ndarray) -> None:
        """Set the base velocity of worlds `ids` (n,): linear (n, 3) m/s in the world, angular (n, 3) rad/s in
        the base frame."""
        self._qvel[ids, self._dof_adr:self._dof_adr + 3] = lin_vel_w
        self._qvel[ids, self._dof_adr + 3:self._dof_adr + 6] = ang_vel_b


def rotate_inverse(quat: np.ndarray, v: np.ndarray) -> np.ndarray:
    """R(q)ᵀ v for unit quaternions `quat` (..., 4) (w, x, y, z) and vectors `v` (..., 3): world to body."""
    w, u = quat[..., :1], -quat[..., 1:]
    t = 2 * np.cross(u, v)
    return v + w * t + np.cross(u, t)
