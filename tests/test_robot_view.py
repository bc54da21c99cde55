"""One robot view and one parameter table: the env, SimRobot and sysid find the same joints, and a
parameter named in any of them lands in the same MuJoCo field."""

import shutil
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from s2r import Command, robot_spec
from s2r.calibration.recording import Recording
from s2r.calibration.sysid import SysidProblem
from s2r.sim.env import BatchEnv
from s2r.sim.model import compile_model
from s2r.sim.parameters import PARAMETERS, ParameterError, combine
from s2r.sim.robot_view import RobotView
from s2r.sim.sim_robot import SimRobot, SimRobotConfig
from s2r.sim.tasks import make_task
from s2r.spec import load_robot_spec


def arm_in_reverse(tmp_path: Path):
    """The arm with its spec listing the joints in the opposite order to its MJCF."""
    arm = robot_spec("arm")
    data = yaml.safe_load(Path(arm.source).read_text())
    data["joints"] = data["joints"][::-1]
    shutil.copy(arm.mjcf, tmp_path / arm.mjcf.name)
    (tmp_path / "arm.yaml").write_text(yaml.safe_dump(data))
    return load_robot_spec(tmp_path / "arm.yaml")


def swinging_recording(spec, seconds: float = 3.0) -> Recording:
    """A synthetic recording whose every joint swings (enough excitation for sysid)."""
    t = np.arange(0.0, seconds, 0.02)
    phase = np.arange(spec.num_joints) + 1.0
    q = 0.3 * np.sin(2.0 * t[:, None] * phase)
    n = len(spec.actuated_joint_names)
    zeros = np.zeros((len(t), n))
    command = Command(q=q[:, spec.actuated_index], dq=zeros, kp=zeros + spec.joint_array("kp", actuated_only=True),
                      kd=zeros + spec.joint_array("kd", actuated_only=True), tau_ff=zeros)
    return Recording(Path("swing.mcap"), t, q, 0.6 * phase * np.cos(2.0 * t[:, None] * phase), np.zeros_like(q),
                     t, command)


def test_the_env_simrobot_and_sysid_agree_on_joints_listed_in_another_order_than_the_mjcf(tmp_path):
    spec = arm_in_reverse(tmp_path)
    assert spec.joint_names == ("elbow", "shoulder", "yaw")
    env = BatchEnv(make_task("reach"), 2, spec=spec)
    env.reset()
    robot = SimRobot(spec, SimRobotConfig(realtime=False, initial_q={"elbow": 0.5, "yaw": -0.2}))
    problem = SysidProblem(swinging_recording(spec), spec, ["damping"])
    for view in (robot.view, problem.view):
        np.testing.assert_array_equal(view.qpos_index, env.view.qpos_index)
        np.testing.assert_array_equal(view.dof_index, env.view.dof_index)
    model = env.model
    for i, name in enumerate(spec.joint_names):
        column = model.joint(name).qposadr[0]
        np.testing.assert_array_equal(env.read_state().q[:, i], env.data_field("qpos")[:, column])
        # sysid starts its replay from the recording's first state, each joint in its own column
        assert problem.initial_state[1 + column] == problem.recording.q[0, i]
    with robot:
        state = robot.read_state()
    assert state.q[0] == 0.5 and state.q[2] == -0.2 and state.q[1] == spec.default_q[1]
    assert robot.view.actuator_ids.tolist() == [model.actuator(n).id for n in spec.actuated_joint_names]


def test_a_floating_base_reads_the_imu_orientation_and_gyro_from_the_free_joint():
    spec = robot_spec("go2")
    model = compile_model(spec, "position")
    data = mujoco.MjData(model)
    view = RobotView(model, spec)
    quat = np.array([np.cos(0.3), 0.0, 0.0, np.sin(0.3)])         # yawed 0.6 rad
    data.qpos[3:7], data.qvel[3:6] = quat, [0.1, -0.2, 0.7]
    state = view.read_state(data.qpos, data.qvel, data.qfrc_actuator)
    mujoco.mj_forward(model, data)
    site = model.site(spec.imu.site).id
    expected = np.zeros(4)
    mujoco.mju_mat2Quat(expected, data.site_xmat[site])
    np.testing.assert_allclose(state.base_quat, expected, atol=1e-12)
    np.testing.assert_allclose(state.base_ang_vel, [0.1, -0.2, 0.7])   # the IMU sits unrotated on the base
    batched = view.read_state(np.stack([data.qpos] * 3), np.stack([data.qvel] * 3), np.stack([data.qfrc_actuator] * 3))
    assert batched.q.shape == (3, 12) and batched.base_quat.shape == (3, 4) and batched.base_ang_vel.shape == (3, 3)


@pytest.mark.parametrize(("operation", "value", "expected"), [("set", 0.7, 0.7), ("scale", 3.0, 1.5), ("add", 0.25, 0.75)])
def test_a_parameter_written_through_the_table_lands_in_its_mujoco_field(operation, value, expected):
    spec = robot_spec("arm")
    model = compile_model(spec, "position")
    elbow = PARAMETERS["damping"]
    ids = elbow.resolve(model, spec, ("elbow",), where="test")
    assert model.dof_damping[model.joint("elbow").dofadr[0]] == 0.5
    elbow.write(lambda field: getattr(model, field)[None], np.array([0]), ids,
                combine(operation, elbow.nominal(model, ids), value)[None], model)
    assert model.dof_damping[model.joint("elbow").dofadr[0]] == pytest.approx(expected)
    kd = PARAMETERS["kd"]
    ids = kd.resolve(model, spec, ("elbow",), where="test")
    kd.write(lambda field: getattr(model, field)[None], np.array([0]), ids, combine(operation, kd.nominal(model, ids),
                                                                               value)[None], model)
    nominal_kd = spec.joints[spec.joint_names.index("elbow")].kd
    assert -model.actuator_biasprm[model.actuator("elbow").id, 2] == pytest.approx(
        combine(operation, np.array([nominal_kd]), value)[0])


def test_randomization_simrobot_and_sysid_name_the_same_parameters_and_write_the_same_fields(tmp_path):
    from s2r.calibration.sysid import PARAM_KINDS
    from s2r.sim.randomization import TARGETS, Dist, Randomize

    assert set(PARAM_KINDS) - {"command_delay_s"} <= set(PARAMETERS) <= set(TARGETS)
    env = BatchEnv(make_task("reach"), 2, randomization=(
        Randomize("damping", Dist("uniform", 1.8, 1.8), names=("elbow",), mode="startup"),
        Randomize("mass", Dist("uniform", 0.4, 0.4), "add", names=("link3",), mode="startup")))
    robot = SimRobot(robot_spec("arm"), SimRobotConfig(realtime=False, joints={"elbow": {"damping": {"scale": 1.8}}},
                                                       bodies={"link3": {"mass": {"add": 0.4}}}))
    for field in ("dof_damping", "body_mass", "body_inertia", "dof_invweight0"):
        np.testing.assert_allclose(env.model_value(field)[1], getattr(robot.model, field), rtol=1e-12, err_msg=field)
    with pytest.raises(ParameterError, match="no body 'gripper'"):
        PARAMETERS["mass"].resolve(robot.model, robot.spec, ("gripper",), where="test")
    with pytest.raises(ParameterError, match="torque motor"):
        PARAMETERS["kp"].resolve(compile_model(robot.spec, "torque"), robot.spec, (), where="test")
