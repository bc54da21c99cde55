"""SimRobot: a MuJoCo robot that behaves like hardware, and stays the model a policy was trained on."""

import time

import mujoco
import numpy as np
import pytest

from s2r.interface import RobotError
from s2r.sim.model import compile_model
from s2r.sim.sim_robot import SimRobot, SimRobotConfig, SimRobotConfigError, load_sim_robot_config
from s2r.spec import robot_spec
from s2r.state import Command

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
"""sim/robots/arm/arm.xml has no <compiler angle="radian"/>, so its ranges (-2.6 2.6) compile as degrees."""


def manual(spec, **config) -> SimRobot:
    robot = SimRobot(spec, SimRobotConfig(realtime=False, **config))
    robot.connect()
    return robot


def torque(spec, tau) -> Command:
    zeros = np.zeros(len(spec.actuated_index))
    return Command(q=zeros, dq=zeros, kp=zeros, kd=zeros, tau_ff=np.asarray(tau, dtype=float))


def test_a_held_pd_command_with_gravity_feed_forward_brings_the_arm_to_its_target():
    spec = robot_spec("arm")
    target = np.array([0.5, -0.2, 0.8])
    model = compile_model(spec, "position")
    data = mujoco.MjData(model)
    data.qpos[:] = target
    mujoco.mj_forward(model, data)
    with manual(spec) as robot:
        robot.enable()
        robot.write_command(Command(q=target, dq=np.zeros(3), kp=spec.joint_array("kp"), kd=spec.joint_array("kd"),
                                    tau_ff=data.qfrc_bias.copy()))
        robot.step(600)
        state = robot.read_state()
    assert np.allclose(state.q, target, atol=5e-3)
    assert np.allclose(state.dq, 0.0, atol=1e-2)
    assert np.allclose(state.tau, data.qfrc_bias, atol=0.3)


def swing_speed(config: dict) -> float:
    """Mean |dq| of the pendulum falling freely from 1 rad off upright for 2 s."""
    spec = robot_spec("pendulum")
    with manual(spec, initial_q={"hinge": 1.0}, **config) as robot:
        speeds = []
        for _ in range(400):
            robot.step()
            speeds.append(abs(robot.read_state().dq[0]))
    return float(np.mean(speeds))


def test_overrides_make_the_robot_differ_from_the_training_model():
    assert swing_speed({"joints": {"hinge": {"damping": {"scale": 3.0}}}}) < 0.9 * swing_speed({})
    spec = robot_spec("arm")
    nominal = compile_model(spec, "position")
    robot = SimRobot(spec, SimRobotConfig(realtime=False, bodies={"link3": {"mass": {"add": 0.4}}},
                                          joints={"elbow": {"armature": {"add": 0.01}}}))
    link3, elbow = nominal.body("link3").id, nominal.joint("elbow").dofadr[0]
    assert robot.model.body_mass[link3] == pytest.approx(0.8)
    assert np.allclose(robot.model.body_inertia[link3], 2 * nominal.body_inertia[link3])
    assert robot.model.body_subtreemass[nominal.body("link2").id] == pytest.approx(1.6)
    assert robot.model.dof_armature[elbow] == pytest.approx(0.03)


def test_unknown_names_in_the_config_are_refused_naming_the_file_and_field(tmp_path):
    spec = robot_spec("cartpole")
    path = tmp_path / "robot.yaml"
    path.write_text("joints: {pole_hinge: {damping: {scale: 2}}}\n")
    with pytest.raises(SimRobotConfigError, match=r"robot\.yaml: joints\.pole_hinge: no joint"):
        SimRobot(spec, load_sim_robot_config(path))
    path.write_text("bodies: {pole: {mass: {scale: 2}}, wheel: {mass: {add: 1}}}\n")
    with pytest.raises(SimRobotConfigError, match=r"robot\.yaml: bodies\.wheel: no body"):
        SimRobot(spec, load_sim_robot_config(path))
    path.write_text("joints: {hinge: {stiffness: {scale: 2}}}\n")
    with pytest.raises(SimRobotConfigError, match=r"robot\.yaml: joints\.hinge\.stiffness: unknown field"):
        load_sim_robot_config(path)
    path.write_text("latency: 0.01\n")
    with pytest.raises(SimRobotConfigError, match=r"robot\.yaml: latency: unknown field"):
        load_sim_robot_config(path)
    path.write_text("noise_q: -1\n")
    with pytest.raises(SimRobotConfigError, match=r"robot\.yaml: noise_q: expected >= 0"):
        load_sim_robot_config(path)
    path.write_text("initial_q: {cart: 0.5}\n")
    with pytest.raises(SimRobotConfigError, match=r"robot\.yaml: initial_q\.cart: not a joint"):
        SimRobot(spec, load_sim_robot_config(path))


def test_the_shipped_cartpole_config_loads_and_hangs_the_pole():
    config = load_sim_robot_config(ROOT / "hardware" / "configs" / "cartpole_hanging.yaml")
    config.realtime = False
    with SimRobot(robot_spec("cartpole"), config) as robot:
        assert robot.read_state().q[1] == pytest.approx(np.pi, abs=0.01)


def test_command_and_state_delays_delay_the_response_by_the_configured_time():
    spec = robot_spec("pendulum")
    with manual(spec, command_delay_s=0.1, state_delay_s=0.05) as robot:
        robot.enable()
        robot.write_command(torque(spec, [1.0]))
        taus = []
        for _ in range(60):
            robot.step()
            taus.append(robot.read_state().tau[0])
    first = int(np.flatnonzero(taus)[0]) + 1  # steps until a state shows the torque
    assert first == round((0.1 + 0.05) / robot.timestep) + 1
    assert taus[-1] == pytest.approx(1.0)


def test_the_robot_announces_one_measurement_per_period_the_moment_it_becomes_readable():
    spec = robot_spec("pendulum")  # 5 ms physics steps, 20 ms control period
    with manual(spec, state_delay_s=0.01) as robot:
        announced = []
        robot.set_state_callback(lambda: announced.append((robot.stats()["physics_steps"], robot.read_state().stamp)),
                                 period=spec.control_period)
        robot.step(20)
        with pytest.raises(RobotError, match=r"period 0\.012 s is not a multiple of the physics timestep 0\.005 s"):
            robot.set_state_callback(print, period=0.012)
        robot.set_state_callback(None)
        robot.step(8)
    # Measured after steps 4, 8, ..., each announced 2 steps (10 ms) later, as read_state returns it.
    assert [steps for steps, _ in announced] == [6, 10, 14, 18]
    assert [stamp for _, stamp in announced] == pytest.approx([0.02, 0.04, 0.06, 0.08])


def test_a_realtime_robot_announces_each_measurement_no_earlier_than_its_state_delay():
    spec = robot_spec("cartpole")
    announced = []
    with SimRobot(spec, SimRobotConfig(state_delay_s=0.001)) as robot:
        robot.set_state_callback(lambda: announced.append((time.time(), robot.read_state().stamp)),
                                 period=spec.control_period)
        time.sleep(0.3)
    stamps = [stamp for _, stamp in announced]
    assert len(stamps) >= 5 and len(set(stamps)) == len(stamps)
    assert all(now - stamp >= 0.001 for now, stamp in announced)


def test_a_disabled_robot_ignores_commands_until_enabled():
    spec = robot_spec("pendulum")
    with manual(spec, initial_q={"hinge": np.pi}) as robot:
        robot.write_command(torque(spec, [1.0]))
        robot.step(5)
        assert robot.read_state().tau[0] == 0.0
        robot.enable()
        robot.write_command(torque(spec, [1.0]))
        robot.step(5)
        assert robot.read_state().tau[0] == pytest.approx(1.0)
        robot.disable()
        robot.step()
        robot.write_command(torque(spec, [1.0]))
        robot.step(5)
        assert robot.read_state().tau[0] == 0.0
        assert robot.stats()["commands_received"] == 3 and robot.stats()["commands_ignored"] == 2


def test_malformed_commands_and_calls_before_connect_are_refused():
    spec = robot_spec("arm")
    robot = SimRobot(spec, SimRobotConfig(realtime=False))
    with pytest.raises(RobotError, match="not connected"):
        robot.read_state()
    robot.connect()
    robot.enable()
    with pytest.raises(RobotError, match=r"Command\.tau_ff: expected shape \(3,\)"):
        robot.write_command(torque(spec, [1.0, 2.0]))
    with pytest.raises(RobotError, match=r"Command\.tau_ff: non-finite"):
        robot.write_command(torque(spec, [1.0, np.nan, 0.0]))
    robot.close()


def test_a_realtime_robot_steps_in_real_time_on_its_thread_and_closes_cleanly():
    spec = robot_spec("cartpole")
    robot = SimRobot(spec, SimRobotConfig(initial_q={"hinge": np.pi}))
    with robot:
        robot.enable()
        start = time.monotonic()
        time.sleep(0.3)
        steps = robot.stats()["physics_steps"]
        elapsed = time.monotonic() - start
        state = robot.read_state()
        with pytest.raises(RobotError, match="real time"):
            robot.step()
    assert abs(steps - elapsed / robot.timestep) <= 0.2 * elapsed / robot.timestep + 2
    assert abs(state.stamp - time.time()) < 1.0
    closed_at = robot.stats()["physics_steps"]
    time.sleep(0.05)
    assert robot.stats()["physics_steps"] == closed_at


def test_torque_commands_give_the_trajectory_of_the_training_env():
    torch = pytest.importorskip("torch")
    from s2r.sim.env import BatchEnv
    from s2r.sim.tasks import make_task

    env = BatchEnv(make_task("cartpole"), num_envs=1, seed=0)
    env.reset()
    q0 = np.array([0.1, 2.8])
    env.set_joint_state(np.array([0]), q0[None], np.zeros((1, 2)))
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, size=(100, 1, 1)).astype(np.float32)
    with manual(env.spec, initial_q={"slider": q0[0], "hinge": q0[1]}) as robot:
        robot.enable()
        for action in actions:
            robot.write_command(torque(env.spec, env.action_mapping.targets(action.astype(np.float64))[0]))
            robot.step(env.decimation)
            env.step(torch.from_numpy(action))
            expected, state = env.read_state(), robot.read_state()
            for key in ("q", "dq", "tau"):
                np.testing.assert_allclose(getattr(state, key), getattr(expected, key)[0], rtol=0, atol=1e-9)
    assert env.episode_length[0] == len(actions)
