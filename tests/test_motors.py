"""The bus layer every driver shares: motor calibration files, unit conversions, bus addresses."""

import math

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from s2r.hardware.emulators.serial_bus import BusFaults
from s2r.hardware.motors import (
    MotorCalibration,
    MotorCalibrationError,
    RobotCalibration,
    default_calibration,
    parse_bus_address,
    read_motor_calibration,
    write_motor_calibration,
)
from s2r.spec import robot_spec
from s2r.state import Command


def test_a_calibration_written_and_read_back_is_the_same_and_bound_to_its_robot(tmp_path):
    spec = robot_spec("arm")
    calibration = default_calibration(spec, {"yaw": "XM430-W350", "shoulder": "XM540-W270", "elbow": "XM430-W350"})
    path = write_motor_calibration(calibration, tmp_path / "arm.yaml")
    again = read_motor_calibration(path, spec)
    assert again == calibration
    assert again.ids == (1, 2, 3) and again.robot == "arm" and again.spec_hash == spec.hash


def test_a_calibration_of_another_robot_is_refused_naming_the_motor(tmp_path):
    data = default_calibration(robot_spec("arm"), "XM430-W350").to_dict()
    data["robot"] = "so101"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(MotorCalibrationError, match=r"c\.yaml: robot: 'so101', but the robot is 'arm' \(motor 1 "):
        read_motor_calibration(tmp_path / "c.yaml", robot_spec("arm"))


def test_a_calibration_whose_motor_id_differs_from_the_spec_is_refused_naming_it(tmp_path):
    data = default_calibration(robot_spec("arm"), "XM430-W350").to_dict()
    data["motors"][1]["id"] = 7
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(MotorCalibrationError, match=r"motors\[1\]\.id: 7 drives joint 'shoulder', but .* bus_id 2"):
        read_motor_calibration(tmp_path / "c.yaml", robot_spec("arm"))


def test_a_malformed_calibration_names_the_file_and_field(tmp_path):
    data = default_calibration(robot_spec("arm"), "XM430-W350").to_dict()
    data["motors"][2]["direction"] = 2
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(MotorCalibrationError, match=r"c\.yaml: motors\[2\]\.direction: expected \+1 or -1, got 2"):
        read_motor_calibration(tmp_path / "c.yaml", robot_spec("arm"))


@given(q=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3), direction=st.sampled_from([-1, 1]),
       gear=st.floats(0.1, 50.0), offset=st.floats(-10.0, 10.0), tau=st.floats(-20.0, 20.0))
def test_joint_and_shaft_units_round_trip(q, direction, gear, offset, tau):
    motors = tuple(MotorCalibration(j, i + 1, "XM430-W350", offset=offset, direction=direction, gear_ratio=gear)
                   for i, j in enumerate(("yaw", "shoulder", "elbow")))
    calibration = RobotCalibration("arm", "x", motors)
    q = np.array(q)
    assert np.allclose(calibration.joint_position(calibration.shaft_position(q)), q, atol=1e-9)
    assert np.allclose(calibration.joint_velocity(calibration.shaft_velocity(q)), q)
    torques = np.full(3, tau)
    assert np.allclose(calibration.joint_torque(calibration.shaft_torque(torques)), torques)
    # power is the same on both sides of the gear: tau·dq (joint) = tau·omega (shaft)
    shaft = calibration.shaft_command(Command(q=q, dq=q, kp=np.ones(3), kd=np.ones(3), tau_ff=torques))
    assert np.allclose(shaft.tau_ff * shaft.dq, torques * q)
    assert np.allclose(shaft.kp, 1 / gear**2)


def test_a_reversed_motor_turns_its_joint_the_other_way():
    motor = MotorCalibration("yaw", 1, "XM430-W350", offset=math.pi, direction=-1)
    calibration = RobotCalibration("arm", "x", (motor,))
    assert calibration.joint_position(np.array([math.pi + 0.5]))[0] == pytest.approx(-0.5)


def test_a_bus_address_names_port_baud_and_calibration():
    address = parse_bus_address("/dev/ttyUSB0@57600,calibration=arm.yaml", "dynamixel")
    assert (address.port, address.baud, str(address.calibration)) == ("/dev/ttyUSB0", 57600, "arm.yaml")
    assert parse_bus_address("/dev/ttyUSB0", "dynamixel").baud is None
    with pytest.raises(ValueError, match=r"--driver dynamixel:/dev/x@fast: baud rate 'fast'"):
        parse_bus_address("/dev/x@fast", "dynamixel")


def test_fault_switches_take_text_commands_and_refuse_unknown_ones():
    faults = BusFaults()
    faults.apply("drop_next 2 3")
    assert [faults.lost(2) for _ in range(4)] == [True, True, True, False]
    faults.apply("silent 3")
    assert faults.lost(3) and not faults.lost(1)
    faults.apply("restore 3")
    assert not faults.lost(3)
    with pytest.raises(ValueError, match="expected one of"):
        faults.apply("explode 1")
