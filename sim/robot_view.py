"""RobotView: where a RobotSpec's joints, actuators, base and IMU live in one compiled MjModel.

The spec orders the joints; the MJCF may order them differently. The view resolves the
names once, so that the batched env, SimRobot and system identification read and write
the same columns: joint positions and velocities (`qpos_index`, `dof_index`), the
actuators of the actuated joints (`actuator_ids`), and, for a floating base, the free
joint and the IMU site on it. Reading and writing take MjData-like arrays, single-world
(nq,) or batched (num_envs, nq): every index runs over the last axis.

    view = RobotView(model, spec)
    state = view.read_state(data.qpos, data.qvel, data.qfrc_actuator)   # RobotState, (num_joints,)
    state = view.read_state(batch.bind("qpos"), batch.bind("qvel"), batch.bind("qfrc_actuator"))  # (N, num_joints)
    view.write_joint_state(data.qpos, data.qvel, q, dq)                    # q, dq: (num_joints,)

The base orientation and angular velocity come from the free joint alone (qpos and qvel,
not derived quantities), so they are current right after a step, whatever MuJoCo stage
was computed: the orientation is the IMU site's in the world (w, x, y, z), the angular
velocity the free joint's, expressed in the IMU site's frame (rad/s), as a gyro reads it.
"""

from __future__ import annotations

import mujoco
import numpy as np

from s2r.spec import RobotSpec, SpecError
from s2r.state import RobotState


class RobotView:
    """Index arrays of one robot in one model, resolved once; see the module docstring."""

    def __init__(self, model: mujoco.MjModel, spec: RobotSpec) -> None:
        joints = []
        for i, name in enumerate(spec.joint_names):
            joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if joint < 0:
                raise SpecError(f"{spec.source}: joints[{i}].name: no joint {name!r} in {spec.mjcf.name}")
            joints.append(joint)
        self.spec = spec
        self.joint_ids = np.array(joints, dtype=np.int64)
        """MuJoCo joint ids of the spec's joints in spec order, (num_joints,)."""
        self.qpos_index = model.jnt_qposadr[self.joint_ids]
        """Columns of qpos holding the spec's joints, (num_joints,)."""
        self.dof_index = model.jnt_dofadr[self.joint_ids]
        """Columns of qvel, qfrc_* and the dof_* model fields of the spec's joints, (num_joints,)."""
        actuators = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in spec.actuated_joint_names]
        self._actuator_ids = np.array(actuators, dtype=np.int64) if all(a >= 0 for a in actuators) else None
        self.base_body: int | None = None
        """The body of the floating base's free joint; None for a fixed base."""
        self._base_qpos = self._base_dof = 0
        self._imu_quat = np.array([1.0, 0.0, 0.0, 0.0])
        if spec.floating_base:
            free = np.flatnonzero(model.jnt_type == mujoco.mjtJoint.mjJNT_FREE)
            if len(free) == 0:
                raise SpecError(f"{spec.source}: floating_base: {spec.mjcf.name} has no free joint")
            base = int(free[0])
            self.base_body = int(model.jnt_bodyid[base])
            self._base_qpos, self._base_dof = int(model.jnt_qposadr[base]), int(model.jnt_dofadr[base])
        self.imu_site: int | None = None
        """The IMU's site id; None without an IMU."""
        if spec.imu is not None:
            site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, spec.imu.site)
            if site < 0:
                raise SpecError(f"{spec.source}: imu.site: no site {spec.imu.site!r} in {spec.mjcf.name}")
            if self.base_body is None or model.site_bodyid[site] != self.base_body:
                raise SpecError(f"{spec.source}: imu.site: {spec.imu.site!r} is not on the floating base's body "
                                "(an IMU is read from the free joint)")
            self.imu_site = site
            self._imu_quat = model.site_quat[site].copy()
        self._imu_rotation = _rotation(self._imu_quat)

    @property
    def actuator_ids(self) -> np.ndarray:
        """Actuator ids of the spec's actuated joints in spec order, (num_actuated,): the actuators
        `compile_model` adds, named after their joints."""
        if self._actuator_ids is None:
            raise SpecError(f"{self.spec.source}: this model has no actuators named after the actuated joints "
                            f"{', '.join(self.spec.actuated_joint_names)}")
        return self._actuator_ids

    def read_state(self, qpos: np.ndarray, qvel: np.ndarray, qfrc_actuator: np.ndarray, *,
                   stamp: float = 0.0) -> RobotState:
        """The RobotState in `qpos` (..., nq), `qvel` (..., nv) and `qfrc_actuator` (..., nv) (MjData's fields,
        one world or a batch): q, dq, tau (..., num_joints), copies; base_quat (..., 4) and base_ang_vel
        (..., 3) rad/s with an IMU, else None."""
        state = RobotState(stamp=stamp, q=qpos[..., self.qpos_index], dq=qvel[..., self.dof_index],
                           tau=qfrc_actuator[..., self.dof_index])
        if self.imu_site is not None:
            state.base_quat = _multiply(qpos[..., self._base_qpos + 3:self._base_qpos + 7], self._imu_quat)
            state.base_ang_vel = qvel[..., self._base_dof + 3:self._base_dof + 6] @ self._imu_rotation
        return state

    def write_joint_state(self, qpos: np.ndarray, qvel: np.ndarray, q: np.ndarray, dq: np.ndarray,
                          rows: np.ndarray | None = None) -> None:
        """Write joint positions `q` and velocities `dq` (num_joints,) or (n, num_joints), in spec order,
        into `qpos` and `qvel`: one world's (nq,), (nv,), or the batch rows `rows` of (num_envs, nq) arrays
        (all rows for None). Other columns (a free joint, objects) are left as they are."""
        if rows is None:
            qpos[..., self.qpos_index] = q
            qvel[..., self.dof_index] = dq
        else:
            qpos[np.ix_(rows, self.qpos_index)] = q
            qvel[np.ix_(rows, self.dof_index)] = dq


def _rotation(quat: np.ndarray) -> np.ndarray:
    """The 3×3 rotation matrix of a unit quaternion (w, x, y, z)."""
    matrix = np.zeros(9)
    mujoco.mju_quat2Mat(matrix, quat)
    return matrix.reshape(3, 3)


def _multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quaternion products a ⊗ b, (..., 4) with (4,), as w, x, y, z."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = b
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)
