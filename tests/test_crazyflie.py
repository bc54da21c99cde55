"""The Crazyflie: Learning to Fly's parameters in MuJoCo, rotor actuators with the motor lag, thrust actions."""

from __future__ import annotations

import math
import shutil

import mujoco
import numpy as np
import pytest

from s2r.actions import ActionMapping
from s2r.sim.model import compile_model
from s2r.spec import SpecError, load_robot_spec, robot_spec

G = 9.81


def hovering(model: mujoco.MjModel, thrust_fraction: float) -> mujoco.MjData:
    """The vehicle level at rest with every motor already spun up to `thrust_fraction` of top thrust."""
    data = mujoco.MjData(model)
    data.ctrl[:] = data.act[:] = thrust_fraction
    mujoco.mj_forward(model, data)
    return data


def test_the_thrust_that_holds_the_crazyflie_in_hover_equals_its_weight_within_one_percent():
    spec = robot_spec("crazyflie")
    model = compile_model(spec, "thrust")
    weight = model.body("base").mass[0] * G
    rotor = spec.rotors[0]
    hover_fraction = weight / 4 / rotor.thrust_max
    assert math.sqrt(hover_fraction * rotor.thrust_max / rotor.thrust_coefficient) == pytest.approx(14_475, abs=5)
    data = hovering(model, hover_fraction)
    thrust = data.actuator_force.sum()
    assert thrust == pytest.approx(weight, rel=0.01)
    assert abs(data.qacc[2]) < 0.01 * G and np.abs(data.qacc[3:]).max() < 1e-6   # no climb, no spin
    for _ in range(500):   # one second
        mujoco.mj_step(model, data)
    assert np.abs(data.qpos[:3]).max() < 1e-3                            # at the origin, where it started


def test_a_thrust_step_reaches_63_percent_after_the_motor_time_constant():
    spec = robot_spec("crazyflie")
    model = compile_model(spec, "thrust")
    data = hovering(model, 0.0)
    data.ctrl[:] = 1.0
    steps = round(spec.rotors[0].time_constant / model.opt.timestep)
    for _ in range(steps):
        mujoco.mj_step(model, data)
    assert data.act == pytest.approx(1 - math.exp(-1), rel=0.01)
    assert data.actuator_force == pytest.approx((1 - math.exp(-1)) * spec.rotors[0].thrust_max, rel=0.01)


def test_opposite_rotor_directions_cancel_yaw_and_one_pair_spins_the_vehicle_the_way_the_spec_says():
    spec = robot_spec("crazyflie")
    model = compile_model(spec, "thrust")
    data = hovering(model, 0.5)
    assert abs(data.qacc[5]) < 1e-9
    data.act[:] = [0.6, 0.4, 0.6, 0.4]    # the direction -1 rotors push harder: a negative yaw torque
    mujoco.mj_forward(model, data)
    assert data.qacc[5] < 0


def test_a_spec_whose_rotor_direction_disagrees_with_its_mjcf_is_refused_naming_the_rotor(tmp_path):
    source = robot_spec("crazyflie").mjcf.parent
    shutil.copy(source / "crazyflie.xml", tmp_path)
    text = (source / "crazyflie.yaml").read_text().replace("{name: rotor1, site: rotor1, direction: 1,",
                                                           "{name: rotor1, site: rotor1, direction: -1,")
    (tmp_path / "crazyflie.yaml").write_text(text)
    with pytest.raises(SpecError, match=r"crazyflie.yaml: rotors\[1\].direction: -1 but crazyflie.xml's site 'rotor1'"):
        compile_model(load_robot_spec(tmp_path / "crazyflie.yaml"), "thrust")


def test_thrust_actions_span_motors_off_to_full_thrust_and_keep_nan_for_the_safety_filter():
    mapping = ActionMapping.for_robot(robot_spec("crazyflie"), "thrust", 1.0)
    assert mapping.joint_names == ("rotor0", "rotor1", "rotor2", "rotor3")
    command = mapping.to_command(np.array([-1.0, 0.0, 1.0, 3.0]))
    np.testing.assert_allclose(command.rotor_thrust, [0.0, 0.5, 1.0, 1.0])
    assert command.q.shape == (0,)
    assert np.isnan(mapping.targets(np.array([np.nan, 0, 0, 0]))[0])
    with pytest.raises(ValueError, match="rotors: action mode 'torque' needs thrust"):
        ActionMapping.for_robot(robot_spec("crazyflie"), "torque", 1.0)
    with pytest.raises(ValueError, match="action mode 'thrust' needs a spec with rotors"):
        ActionMapping.for_robot(robot_spec("pendulum"), "thrust", 1.0)


def test_adding_rotors_leaves_every_other_robots_spec_hash_as_it_was():
    assert {name: robot_spec(name).hash for name in ("pendulum", "cartpole", "arm", "go2", "pusher")} == {
        "pendulum": "0252481a02ae7ea0", "cartpole": "9170584c04e79840", "arm": "13368925f4601682",
        "go2": "b66098241b080d8e", "pusher": "9612191afa8fdfe4"}
