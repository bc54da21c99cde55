"""MujocoPlant: the robot's MJCF stepped with the torques of emulated motors (a `s2r.hardware.emulators.plant.Plant`).

The model is compiled in torque mode (`compile_model(spec, "torque")`: one motor per actuated
joint, ctrl clamped to the spec's effort limit) and stepped at the MJCF's timestep; the motors'
control laws (the emulator's) decide the torques, the passive dynamics (damping, armature,
friction, gravity, joint limits) are the MJCF's, as SimRobot's are.

    plant = MujocoPlant(robot_spec("arm"))          # starts at the spec's default pose
    plant.step(np.zeros(3))                         # tau: (num_joints,) N·m for plant.timestep s
    plant.q, plant.dq                               # (num_joints,) rad, rad/s
    quat, gyro = MujocoPlant(robot_spec("go2")).imu()   # a spec with an imu: what the IMU measures
"""

from __future__ import annotations

import mujoco
import numpy as np

from s2r.sim.model import compile_model
from s2r.sim.robot_view import RobotView
from s2r.spec import RobotSpec


class MujocoPlant:
    """The robot's MuJoCo model driven by joint torques, in the spec's joint order."""

    def __init__(self, spec: RobotSpec, *, initial_q: np.ndarray | None = None) -> None:
        self.spec = spec
        self.model = compile_model(spec, "torque")
        self.data = mujoco.MjData(self.model)
        self.view = RobotView(self.model, spec)
        self.timestep = float(self.model.opt.timestep)
        q0 = spec.default_q if initial_q is None else np.asarray(initial_q, dtype=np.float64)
        if q0.shape != (spec.num_joints,):
            raise ValueError(f"MujocoPlant: initial_q: expected shape ({spec.num_joints},), got {q0.shape}")
        self.view.write_joint_state(self.data.qpos, self.data.qvel, q0, np.zeros(spec.num_joints))
        mujoco.mj_forward(self.model, self.data)
        self._actuators = self.view.actuator_ids

    @property
    def q(self) -> np.ndarray:
        """Joint positions, (num_joints,) rad."""
        return self.view.read_state(self.data.qpos, self.data.qvel, self.data.qfrc_actuator, stamp=0.0).q

    @property
    def dq(self) -> np.ndarray:
        """Joint velocities, (num_joints,) rad/s."""
        return self.view.read_state(self.data.qpos, self.data.qvel, self.data.qfrc_actuator, stamp=0.0).dq

    def imu(self) -> tuple[np.ndarray, np.ndarray]:
        """The spec's IMU: its site's orientation in the world, (4,) w, x, y, z, and its angular velocity in its own
        axes, (3,) rad/s (as SimRobot's state carries them); ValueError for a robot without one."""
        state = self.view.read_state(self.data.qpos, self.data.qvel, self.data.qfrc_actuator, stamp=0.0)
        if state.base_quat is None:
            raise ValueError(f"MujocoPlant({self.spec.name}): the spec has no imu")
        return state.base_quat, state.base_ang_vel

    def step(self, tau: np.ndarray) -> None:
        """Apply `tau`, (num_joints,) N·m (clamped to the effort limits), for one timestep."""
        self.data.ctrl[self._actuators] = np.asarray(tau, dtype=np.float64)[self.spec.actuated_index]
        mujoco.mj_step(self.model, self.data)
