"""The Feetech driver against emulated STS3215 servos on a pseudo-terminal, moving the SO-101's MuJoCo model:
real bytes both ways, the vendor's SDK reading the same servos, every injected fault ending safe, and the
bad inputs a user can cause refused in one line."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from s2r.hardware.drivers import open_driver
from s2r.hardware.drivers.feetech import FeetechRobot
from s2r.hardware.drivers.feetech_bus import BusOpenError, FeetechBus
from s2r.hardware.drivers.feetech_protocol import Register
from s2r.hardware.emulators.feetech import FeetechServos
from s2r.hardware.emulators.serial_bus import PtyBus
from s2r.hardware.motors import MotorCalibrationError, default_calibration, write_motor_calibration
from s2r.interface import RobotError
from s2r.sim.motor_plant import MujocoPlant
from s2r.spec import robot_spec
from s2r.state import Command

SPEC = robot_spec("so101")


def hold(q: np.ndarray, kp_scale: float = 1.0) -> Command:
    n = SPEC.num_joints
    return Command(q=np.asarray(q, dtype=float), dq=np.zeros(n), kp=SPEC.joint_array("kp") * kp_scale,
                   kd=SPEC.joint_array("kd"), tau_ff=np.zeros(n))


def emulated(initial_q=None, **servo_options):
    servos = FeetechServos(SPEC, MujocoPlant(SPEC, initial_q=initial_q), **servo_options)
    return servos, PtyBus(servos, baud=1_000_000, faults=servos.faults)


@pytest.fixture
def arm():
    servos, bus = emulated()
    with bus:
        yield servos, bus


def eventually(condition, seconds: float = 1.0) -> bool:
    """Whether `condition()` holds within `seconds` (the emulator reads the wire on its own thread)."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def drive(robot: FeetechRobot, target: np.ndarray, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        robot.read_state()
        robot.write_command(hold(target))
        time.sleep(0.005)


def test_the_arm_goes_where_it_is_told_through_one_sync_read_and_one_sync_write_per_tick(arm):
    servos, bus = arm
    target = np.array([0.4, -0.3, 0.5, -0.4, 1.0, 0.6])
    with open_driver(f"feetech:{bus.port}", SPEC) as robot:
        robot.enable()
        before = dict(servos.counts)
        drive(robot, target, 1.5)
        state = robot.read_state()
        assert np.abs(state.q - target).max() < 0.06, "the servos' position loop holds the joints at their goals"
        assert np.abs(servos.plant.q - state.q).max() < 0.01, "what the driver reads is where the model is"
        reads = servos.counts["sync_reads"] - before["sync_reads"]
        writes = servos.counts["sync_writes"] - before["sync_writes"]
        assert abs(reads - writes) <= 2, "one sync read and one sync write per tick"
        assert servos.counts["instructions"] - before["instructions"] <= reads + writes + 8  # + retries
        temperatures = [status.temperature for status in robot.diagnostics()]
        assert temperatures == [30.0] * 6 and robot.diagnostics()[0].voltage == 12.0
    assert eventually(lambda: not servos.torque_enabled().any()), "leaving the context turns every servo's torque off"


def test_feetechs_own_sdk_reads_the_same_positions_from_the_emulated_servos(arm):
    scservo_sdk = pytest.importorskip("scservo_sdk")
    servos, bus = arm
    port = scservo_sdk.PortHandler(bus.port)
    assert port.openPort()
    try:
        handler = scservo_sdk.sms_sts(port)
        model, result, error = handler.ping(1)
        assert (model, result, error) == (777, scservo_sdk.COMM_SUCCESS, 0), "an STS3215 answers the SDK's ping"
        reader = scservo_sdk.GroupSyncRead(handler, Register.PRESENT_POSITION, 4)
        for motor_id in range(1, 7):
            reader.addParam(motor_id)
        assert reader.txRxPacket() == scservo_sdk.COMM_SUCCESS
        ticks = [reader.getData(i, Register.PRESENT_POSITION, 2) for i in range(1, 7)]
    finally:
        port.closePort()
    expected = np.round(2048 + servos.plant.q * 4096 / (2 * np.pi))
    assert np.abs(np.array(ticks) - expected).max() <= 2


def test_a_missed_reply_is_a_stale_state_and_a_lost_servo_latches_a_hold_in_place(arm):
    servos, bus = arm
    with FeetechRobot(SPEC, bus.port) as robot:
        robot.enable()
        drive(robot, np.zeros(6), 0.3)
        bus.faults.drop.add(3)
        first = robot.read_state()
        time.sleep(0.02)
        second = robot.read_state()
        assert second.stamp == first.stamp, "the state keeps the stale servo's stamp: the watchdog sees it age"
        for _ in range(5):
            robot.read_state()
        assert robot.fault and "motor 3" in robot.fault and "lost" in robot.fault
        robot.write_command(hold(np.full(6, 1.0)))  # a command after the fault is not obeyed
        time.sleep(0.3)
        assert np.abs(servos.plant.q).max() < 0.1, "the servos hold where they were instead of moving"
        assert robot.faults()["elbow_flex"].missed >= 5 and robot.faults()["elbow_flex"].lost
        assert robot.diagnostics()[2].level == "ERROR"


@pytest.mark.parametrize("fault, flag", [("overload", "overload"), ("overheating", "overheating")])
def test_a_servo_reporting_an_error_latches_the_fault_and_refuses_to_enable(arm, fault, flag):
    servos, bus = arm
    with FeetechRobot(SPEC, bus.port) as robot:
        robot.enable()
        getattr(bus.faults, fault).add(5)
        robot.read_state()
        assert robot.fault == f"motor 5 (joint wrist_roll): {flag}"
        status = robot.diagnostics()[4]
        assert status.level == "ERROR" and flag in status.message
        if fault == "overheating":
            robot.read_state()
            assert robot.diagnostics()[4].temperature > 70
        robot.disable()
        with pytest.raises(RobotError, match=f"motor 5 \\(joint wrist_roll\\) reports {flag}"):
            robot.enable()


def test_corrupted_replies_are_counted_as_such_and_read_again_within_the_tick(arm):
    servos, bus = arm
    with FeetechRobot(SPEC, bus.port) as robot:
        bus.faults.corrupt.add(2)
        robot.read_state()
        faults = robot.faults()["shoulder_lift"]
        assert faults.corrupted == 1 and faults.retries == 1 and faults.consecutive == 1
        bus.faults.clear()
        robot.read_state()
        assert robot.faults()["shoulder_lift"].consecutive == 0


def test_a_bus_that_stops_answering_ends_in_a_latched_fault_with_nothing_written_out_of_place(arm):
    servos, bus = arm
    with FeetechRobot(SPEC, bus.port) as robot:
        robot.enable()
        drive(robot, np.zeros(6), 0.2)
        bus.faults.bus_down = True
        stamps = {robot.read_state().stamp for _ in range(6)}
        assert len(stamps) == 1 and robot.fault is not None
        bus.faults.bus_down = False
        robot.write_command(hold(np.full(6, 1.2)))
        time.sleep(0.2)
        assert eventually(lambda: servos.counts["sync_writes"] > 0)
        assert np.abs(servos.goal_angles()).max() < 0.1, "after the fault the goals are the measured pose"


# --- what a user can get wrong -----------------------------------------------------------------------------------
def test_a_port_that_does_not_exist_is_named_in_one_line():
    with pytest.raises(BusOpenError, match=r"^/dev/ttyNOPE9: port does not exist$"):
        FeetechRobot(SPEC, "/dev/ttyNOPE9").connect()


def test_a_port_another_program_holds_is_busy(arm):
    _, bus = arm
    with FeetechBus(bus.port):
        with pytest.raises(BusOpenError, match="is busy"):
            FeetechRobot(SPEC, bus.port).connect()


def test_the_wrong_baud_rate_is_suspected_when_no_servo_answers(arm):
    _, bus = arm
    with pytest.raises(RobotError, match=r"at 115200 baud: no motor answers .*wrong baud rate\? Feetech servos ship "
                                         r"at 1000000"):
        FeetechRobot(SPEC, f"{bus.port}@115200", reply_margin_s=0.002).connect()


def test_a_servo_id_that_does_not_answer_is_named_with_its_joint(arm):
    _, bus = arm
    bus.faults.silent.add(4)
    with pytest.raises(RobotError, match=r"motors\[3\]\.id: 4 does not answer \(expected the STS3215 of joint "
                                         r"wrist_flex at id 4 on /dev/pts/"):
        FeetechRobot(SPEC, bus.port).connect()


def test_a_servo_of_another_model_is_refused():
    _, bus = emulated(model_number=1284)  # an SCS0009
    with bus, pytest.raises(RobotError, match=r"motors\[0\]\.model: STS3215, but id 1 on .* is a servo of model number 1284 "
                                               r"\(joint shoulder_pan\)"):
        FeetechRobot(SPEC, bus.port).connect()


def test_a_calibration_of_another_robot_is_refused_naming_the_motor(tmp_path, arm):
    _, bus = arm
    other = default_calibration(robot_spec("arm"), "XM430-W350")
    path = write_motor_calibration(other, tmp_path / "arm_motors.yaml")
    with pytest.raises(MotorCalibrationError, match=r"robot: 'arm', but the robot is 'so101' \(motor 1 is calibrated "
                                                    r"for joint 'yaw'"):
        open_driver(f"feetech:{bus.port},calibration={path}", SPEC)


def test_a_joint_far_outside_its_calibrated_range_refuses_to_enable_naming_it(tmp_path):
    calibration = default_calibration(SPEC, "STS3215")
    motors = list(calibration.motors)
    motors[2] = replace(motors[2], range=(-0.5, 0.5))
    path = write_motor_calibration(replace(calibration, motors=tuple(motors)), tmp_path / "so101_motors.yaml")
    servos, bus = emulated(initial_q=np.array([0, 0, 1.4, 0, 0, 0]))
    with bus, FeetechRobot(SPEC, f"{bus.port},calibration={path}") as robot:
        with pytest.raises(RobotError, match=r"joint elbow_flex is at 1\.4\d\d rad, outside its calibrated range "
                                             r"\[-0\.500, 0\.500\] \(motor 3\)"):
            robot.enable()
        assert not eventually(lambda: servos.torque_enabled().any(), 0.2)


def test_a_missing_port_through_the_registry_says_how_to_name_one():
    with pytest.raises(RobotError, match="feetech:PORT"):
        open_driver("feetech", SPEC)


def test_an_emulator_in_its_own_process_serves_the_driver_and_takes_fault_switches_on_stdin():
    from s2r.sim.emulate import EmulatorProcess

    with EmulatorProcess("feetech", "so101", initial_q={"elbow_flex": 0.5}) as emulator, \
            FeetechRobot(SPEC, emulator.port) as robot:
        assert abs(robot.read_state().q[2] - 0.5) < 0.2, "the emulated arm starts where it was told (then sags)"
        emulator.fault("overload 6")
        robot.read_state()
        assert robot.fault == "motor 6 (joint gripper): overload"
