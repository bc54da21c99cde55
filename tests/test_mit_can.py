"""The MIT CAN driver against emulated Damiao motors moving the Go2 in MuJoCo, frame by frame on python-can's buses."""

from __future__ import annotations

import dataclasses
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import mujoco
import numpy as np
import pytest

from s2r.geometry import tilt_from_quat, yaw_from_quat
from s2r.hardware.drivers import DriverError, load_driver_config, open_driver, preflight
from s2r.hardware.drivers.can_imu import DEFAULT_IMU_ID
from s2r.hardware.drivers.mit_can import MitCanRobot, parse_can_address
from s2r.hardware.emulators.mit_can import MitCanBus
from s2r.hardware.motors import (
    MotorCalibrationError,
    default_calibration,
    read_motor_calibration,
    write_motor_calibration,
)
from s2r.hardware.safety import SafetyFilter
from s2r.interface import RobotError
from s2r.sim.emulate import EmulatorProcess
from s2r.sim.motor_plant import MujocoPlant
from s2r.spec import robot_spec
from s2r.state import Command

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "hardware/configs/go2_mit_can.yaml"
SPEC = robot_spec("go2")
SLACK_S = 0.015
"""Seconds the driver waits for replies past their wire time: more than on a real adapter, for a loaded test host."""
LYING = np.tile([0.0, 1.25, -2.7], 4)
"""Belly on the ground, legs folded: (12,) rad."""


def base_height(plant: MujocoPlant) -> float:
    return float(plant.data.qpos[2])


@contextmanager
def emulated_go2(*, initial_q=None, calibration=None, faults=(), can_timeout_s=0.1, imu_id=DEFAULT_IMU_ID,
                 base_quat=None):
    """A Go2 of 12 emulated DM-J8009P motors and its IMU on a fresh virtual bus; yields (bus, plant, driver WHERE).

    `base_quat` (w, x, y, z) turns the base before it starts (raised to 0.3 m, so that it falls onto its feet, back
    or side)."""
    channel = f"go2-{uuid.uuid4().hex[:8]}"
    plant = MujocoPlant(SPEC, initial_q=initial_q)
    if base_quat is not None:
        plant.data.qpos[2], plant.data.qpos[3:7] = 0.3, base_quat
        mujoco.mj_forward(plant.model, plant.data)
    bus = MitCanBus(plant, calibration or read_motor_calibration(CALIBRATION, SPEC), channel=channel,
                    can_timeout_s=can_timeout_s, imu_id=imu_id)
    for fault in faults:
        bus.faults.apply(fault)
    with bus:
        yield bus, plant, f"virtual:{channel},calibration={CALIBRATION}"


@contextmanager
def enabled_go2(*, settle_s: float = 0.0, **emulator):
    """`emulated_go2(**emulator)` with its driver connected and, after `settle_s`, enabled; yields
    (bus, plant, robot, a fresh SafetyFilter)."""
    with emulated_go2(**emulator) as (bus, plant, where):
        with MitCanRobot(SPEC, where, reply_slack_s=SLACK_S) as robot:
            time.sleep(settle_s)
            robot.enable()
            yield bus, plant, robot, SafetyFilter(SPEC, SPEC.control_period)


def run(robot, safety: SafetyFilter, seconds: float, *, command=None, on_tick=None) -> list[Command]:
    """read → safety filter → write at the spec's 50 Hz for `seconds`; the commands written."""
    written = []
    period = SPEC.control_period
    start = time.monotonic()
    for tick in range(round(seconds / period)):
        state = robot.read_state()
        if on_tick is not None:
            on_tick(tick)
        out = safety.filter(command, state, time.time())
        robot.write_command(out)
        written.append(out)
        time.sleep(max(0.0, start + (tick + 1) * period - time.monotonic()))
    return written


def hold(q: np.ndarray) -> Command:
    return Command(q=q, dq=np.zeros(12), kp=SPEC.joint_array("kp"), kd=SPEC.joint_array("kd"), tau_ff=np.zeros(12))


def within_limits(commands: list[Command], safety: SafetyFilter) -> bool:
    return all((c.q >= safety.lower - 1e-9).all() and (c.q <= safety.upper + 1e-9).all()
               and (c.kp <= safety.kp_max + 1e-9).all() and (np.abs(c.tau_ff) <= safety.effort_limit + 1e-9).all()
               for c in commands)


def test_the_soft_start_stands_the_emulated_go2_up_from_lying_through_the_can_bus():
    with emulated_go2(initial_q=LYING) as (bus, plant, where):
        with MitCanRobot(SPEC, where, reply_slack_s=SLACK_S) as robot:
            time.sleep(0.3)  # let it settle on its belly
            lying_height, lying_q = base_height(plant), robot.read_state().q
            robot.enable()
            safety = SafetyFilter(SPEC, SPEC.control_period)
            written = run(robot, safety, 2.5)
            state, plant_q = robot.read_state(), plant.q
        standing_height = base_height(plant)
    knees = [2, 5, 8, 11]  # through their 2:1 linkage, the right legs' motors mirrored
    assert lying_height < 0.12 and standing_height > lying_height + 0.07
    assert (np.abs(state.q - SPEC.default_q)[knees] < 0.5 * np.abs(lying_q - SPEC.default_q)[knees]).all()
    assert np.allclose(state.q, plant_q, atol=0.01), "the driver reads the plant's joints (a tick ago, 16 bits)"
    assert within_limits(written, safety)
    assert robot.fault is None and not any(f.lost or f.corrupted for f in robot.faults().values()), \
        "no motor lost (a loaded host may make a reply late, and the retry asks again)"


@pytest.mark.parametrize("fault, motor, expect", [
    ("drop_next", 4, "recovers"),        # two replies lost: the retry gets them, nothing goes stale
    ("drop", 4, "damping"),              # replies lost for good: lost after 5 ticks, damping
    ("drop_commands", 4, "damping"),     # the motor hears nothing: no reply, and its CAN timeout stops it
    ("corrupt", 7, "damping"),           # malformed replies: counted, lost, damping
    ("silent", 7, "damping"),            # the motor disappeared
    ("overheating", 2, "damping"),       # rotor over-temperature: the motor stops, the flag latches damping
    ("bus_down", None, "motors off"),    # nothing crosses: every motor's own CAN timeout switches it off
])
def test_every_bus_fault_ends_in_its_safe_state_with_no_command_out_of_limits(fault, motor, expect):
    with enabled_go2(initial_q=SPEC.default_q) as (bus, plant, robot, safety):
        injected = {}

        def inject(tick: int) -> None:
            if tick == 40:
                bus.faults.apply(f"{fault} {motor} 2" if fault == "drop_next" else
                                 fault if motor is None else f"{fault} {motor}")
                injected["tick"] = tick
            if "tick" in injected and robot.fault is not None and "fault_tick" not in injected:
                injected["fault_tick"] = tick

        written = run(robot, safety, 1.6, command=hold(SPEC.default_q), on_tick=inject)
        faults, diagnostics = robot.faults(), robot.diagnostics()
        joint = SPEC.joint_names[motor] if motor is not None else None
        assert within_limits(written, safety)
        assert ((plant.q >= SPEC.lower - 0.05) & (plant.q <= SPEC.upper + 0.05)).all()
        if expect == "recovers":
            assert robot.fault is None and faults[joint].missed >= 2 and faults[joint].retries >= 1  # (+ late ones)
            assert not faults[joint].lost and base_height(plant) > 0.18, "still standing"
        elif expect == "damping":
            assert injected["fault_tick"] - injected["tick"] <= 6, robot.fault
            assert robot.fault.startswith(f"motor {motor} (joint {joint})")
            assert faults[joint].lost or faults[joint].error_flags
            if fault == "corrupt":
                assert faults[joint].corrupted >= 5
            if fault == "overheating":
                assert faults[joint].error_flags == ("overheating (rotor)",)
                status = diagnostics[motor]
                assert (status.level, status.temperature) == ("ERROR", 120.0), "the rotor's 120 °C reaches diagnostics"
            if fault in ("silent", "drop_commands", "overheating"):
                assert not bus.motors[motor].enabled, "the faulty motor itself is off"
        else:
            assert all(f.lost for f in faults.values()) and safety.report()["mode"] == "damping"
            assert not any(m.enabled for m in bus.motors), "every motor left motor mode on its CAN timeout"


def test_cubemars_ak_motors_answer_in_the_cheetah_layout_and_move_the_arm_to_its_target(tmp_path):
    arm = robot_spec("arm")  # ids 1-3: the cheetah layout's replies go to the host's id 0
    calibration = default_calibration(arm, "AK80-6", gear_ratios={"shoulder": 2.0, "elbow": 2.0}, offset=0.0)
    path = write_motor_calibration(calibration, tmp_path / "arm_ak.yaml")
    channel = f"arm-{uuid.uuid4().hex[:8]}"
    target = arm.default_q + np.array([0.4, 0.3, -0.3])
    # AK firmware reports no state: a motor whose CAN timeout fired during a stall of a loaded test host would drop
    # the arm unseen, so these motors wait 0.5 s (the timeout's own test is the Damiao Go2's)
    with MitCanBus(MujocoPlant(arm), calibration, channel=channel, can_timeout_s=0.5) as bus, \
            MitCanRobot(arm, f"virtual:{channel},calibration={path}", reply_slack_s=SLACK_S) as robot:
        robot.enable()
        safety = SafetyFilter(arm, arm.control_period)
        command = Command(q=target, dq=np.zeros(3), kp=arm.joint_array("kp"), kd=arm.joint_array("kd"),
                          tau_ff=np.zeros(3))
        start = time.monotonic()
        while time.monotonic() - start < 3.0:
            robot.write_command(safety.filter(command, robot.read_state(), time.time()))
            time.sleep(arm.control_period)
        state, plant_q = robot.read_state(), bus.plant.q
    assert np.abs(state.q - target).max() < 0.05 and np.allclose(state.q, plant_q, atol=0.01)
    assert all(s.temperature is None for s in robot.diagnostics()), "the cheetah layout carries no temperature"


def test_a_channel_that_does_not_exist_is_one_line():
    for where in ("socketcan:can_s2r_missing", "slcan:/dev/s2r-no-such-adapter"):
        with pytest.raises(RobotError) as error:
            MitCanRobot(SPEC, f"{where},calibration={CALIBRATION}").connect()
        message = str(error.value)
        assert message.startswith(f"--driver mit_can:{where}: cannot open") and "\n" not in message


def test_a_motor_that_does_not_answer_is_named_with_its_joint():
    with emulated_go2(faults=["silent 7"]) as (_, _, where):
        with pytest.raises(RobotError, match=r"go2_mit_can.yaml: motors\[7\].id: 7 does not answer \(expected a "
                                             r"DM-J8009P for joint RL_thigh_joint on virtual:go2-"):
            MitCanRobot(SPEC, where).connect()
    with emulated_go2(faults=["silent 7"]) as (_, _, where):
        with pytest.raises(DriverError, match=r"motors\[7\].id: 7 does not answer"):
            preflight(f"mit_can:{where}", SPEC)  # what s2r deploy checks before any node starts


def test_a_motor_of_another_model_than_calibrated_is_refused_by_its_ranges():
    calibration = read_motor_calibration(CALIBRATION, SPEC)
    motors = list(calibration.motors)
    motors[4] = dataclasses.replace(motors[4], model="DM-J4310")
    with emulated_go2(calibration=dataclasses.replace(calibration, motors=tuple(motors))) as (_, _, where):
        with pytest.raises(RobotError, match=r"motors\[4\].model: DM-J8009P \(±12.5 rad, ±45 rad/s, ±54 N·m\), but "
                                             r"motor 4 \(joint FR_thigh_joint\) maps ±12.5 rad, ±30 rad/s, ±10 N·m"):
            MitCanRobot(SPEC, where).connect()


def test_a_damiao_motor_without_a_can_timeout_is_refused_since_a_dead_bus_would_leave_it_holding():
    with emulated_go2(can_timeout_s=0.0) as (_, _, where):
        with pytest.raises(RobotError, match=r"motors\[0\]: motor 0 \(joint FL_hip_joint\) has no CAN timeout "
                                             r"\(TIMEOUT register 0"):
            MitCanRobot(SPEC, where).connect()


def test_a_calibration_of_another_robot_is_refused_naming_a_motor(tmp_path):
    other = dataclasses.replace(read_motor_calibration(CALIBRATION, SPEC), robot="mini_cheetah")
    path = write_motor_calibration(other, tmp_path / "mini_cheetah.yaml")
    with pytest.raises(MotorCalibrationError, match=r"robot: 'mini_cheetah', but the robot is 'go2' \(motor 0 is "
                                                    r"calibrated for joint 'FL_hip_joint'"):
        MitCanRobot(SPEC, f"virtual:x,calibration={path}")


def test_an_unknown_motor_model_is_refused_naming_the_field(tmp_path):
    calibration = read_motor_calibration(CALIBRATION, SPEC)
    motors = (dataclasses.replace(calibration.motors[0], model="GO-M8010-6"),) + calibration.motors[1:]
    path = write_motor_calibration(dataclasses.replace(calibration, motors=motors), tmp_path / "go2.yaml")
    with pytest.raises(RobotError, match=r"motors\[0\].model: unknown MIT motor model 'GO-M8010-6' \(known: AK80-6"):
        MitCanRobot(SPEC, f"virtual:x,calibration={path}")


def test_corrupted_replies_are_refused_at_connect():
    with emulated_go2(faults=["corrupt 3"]) as (_, _, where):
        with pytest.raises(RobotError, match=r"motors\[3\].model: DM-J8009P, but motor 3 \(joint FR_hip_joint\) "
                                             r"answers with malformed replies"):
            MitCanRobot(SPEC, where).connect()


def test_a_motor_zeroed_elsewhere_reads_far_outside_its_range_and_enabling_refuses_naming_the_joint():
    truth = read_motor_calibration(CALIBRATION, SPEC)
    motors = list(truth.motors)
    motors[2] = dataclasses.replace(motors[2], offset=-6.0)  # the knee motor was zeroed 3 rad of joint away (2:1)
    with emulated_go2(calibration=dataclasses.replace(truth, motors=tuple(motors))) as (bus, _, where):
        with MitCanRobot(SPEC, where, reply_slack_s=SLACK_S) as robot:
            with pytest.raises(RobotError, match=r"cannot enable: joint FL_calf_joint is at -4\.[0-9]+ rad, outside "
                                                 r"its calibrated range \[-2.723, -0.838\]"):
                robot.enable()
            assert not any(m.enabled for m in bus.motors), "no motor entered motor mode"


def test_the_driver_is_opened_by_the_registry_and_its_address_errors_name_the_flag():
    assert load_driver_config(f"mit_can:udp_multicast:239.0.0.1:43200@500000,calibration={CALIBRATION}") == \
        parse_can_address(f"udp_multicast:239.0.0.1:43200@500000,calibration={CALIBRATION}")
    assert isinstance(open_driver(f"mit_can:virtual:x,calibration={CALIBRATION}", SPEC), MitCanRobot)
    with pytest.raises(ValueError, match=r"--driver mit_can:can0: expected mit_can:INTERFACE:CHANNEL"):
        load_driver_config("mit_can:can0")
    with pytest.raises(ValueError, match=r"--driver mit_can:virtual:go2: no calibration"):
        load_driver_config("mit_can:virtual:go2")


def test_across_processes_through_udp_multicast_the_driver_moves_a_leg():
    with EmulatorProcess("mit_can", "go2") as emulator:  # s2r emulate mit_can --robot go2
        assert emulator.port.startswith("udp_multicast:239.0.0.1:")
        with MitCanRobot(SPEC, f"{emulator.port},calibration={CALIBRATION}", reply_slack_s=SLACK_S) as robot:
            robot.enable()
            target = SPEC.default_q.copy()
            target[0] = 0.5  # FL hip out
            safety = SafetyFilter(SPEC, SPEC.control_period)
            run(robot, safety, 1.0)  # the soft start
            run(robot, safety, 1.5, command=hold(target))
            q = robot.read_state().q
            emulator.fault("silent 3")
            run(robot, safety, 0.3, command=hold(target))
            assert robot.fault == "motor 3 (joint FR_hip_joint): lost"
    assert q[0] > 0.35 and abs(q[3] - SPEC.default_q[3]) < 0.1, "the FL hip went out from 0.1 rad, FR stayed"


# --- the IMU on the CAN bus ----------------------------------------------------------------------------------------
def yawed(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def test_the_can_imu_gives_the_go2_its_base_orientation_and_rate_as_the_plant_has_them():
    with enabled_go2(initial_q=SPEC.default_q, base_quat=yawed(1.0)) as (bus, plant, robot, safety):
        run(robot, safety, 1.0, command=hold(SPEC.default_q))  # lands, stands
        state = robot.read_state()
        quat, gyro, age = *plant.imu(), time.time() - state.stamp
        assert bus.stats()["imu_frames"] > 300, "200 samples a second, two frames each"
    assert state.base_quat.shape == (4,) and state.base_ang_vel.shape == (3,)
    assert abs(float(yaw_from_quat(state.base_quat)) - 1.0) < 0.05 and float(tilt_from_quat(state.base_quat)) < 0.5
    assert 2 * np.arccos(min(1.0, abs(float(quat @ state.base_quat)))) < 0.01, "the plant's IMU, a sample ago"
    assert np.abs(state.base_ang_vel - gyro).max() < 0.05
    assert age < 0.05, "stamped when its frames came"


def test_a_go2_on_its_back_on_can_motors_is_not_stood_up():
    # settle_s: it lands on its back before the driver is enabled
    with enabled_go2(initial_q=LYING, base_quat=np.array([0.0, 1.0, 0.0, 0.0]), settle_s=0.5) as (_, _, robot, safety):
        written = run(robot, safety, 0.6)
    assert "refuses to stand up a robot lying on its back" in safety.fault
    assert safety.report()["mode"] == "damping" and all((c.kp == 0).all() for c in written)
    assert within_limits(written, safety)


def test_a_fall_seen_by_the_can_imu_trips_the_orientation_limit_and_damps():
    with enabled_go2(initial_q=SPEC.default_q) as (_, plant, robot, safety):
        base = plant.view.base_body
        run(robot, safety, 1.0, command=hold(SPEC.default_q))
        assert safety.fault is None
        plant.data.xfrc_applied[base, 3] = 150.0  # a shove about the roll axis (N·m) for 0.3 s: it rolls over
        written = run(robot, safety, 0.3, command=hold(SPEC.default_q))
        plant.data.xfrc_applied[base, 3] = 0.0
        written += run(robot, safety, 1.0, command=hold(SPEC.default_q))
    assert safety.fault is not None and "(a fall)" in safety.fault
    assert safety.events["orientation_limit"] > 0 and safety.report()["mode"] == "damping"
    assert within_limits(written, safety)


def test_an_imu_that_goes_silent_latches_the_robots_fault_and_damping():
    with enabled_go2(initial_q=SPEC.default_q) as (bus, _, robot, safety):
        ticks = {}

        def inject(tick: int) -> None:
            if tick == 40:
                bus.faults.apply(f"silent {DEFAULT_IMU_ID}")
            if tick > 40 and robot.fault is not None:
                ticks.setdefault("fault", tick)

        written = run(robot, safety, 1.2, command=hold(SPEC.default_q), on_tick=inject)
    assert robot.fault.startswith("imu (CAN id 0x50): lost") and ticks["fault"] - 40 <= 6
    assert safety.report()["mode"] == "damping", "the state's stamp ages with the IMU's: the watchdog damps too"
    assert within_limits(written, safety)


def test_a_go2_bus_without_its_imu_is_refused_at_connect_and_imu_none_runs_without_one():
    with emulated_go2(imu_id=None) as (_, _, where):
        with pytest.raises(RobotError) as error:
            MitCanRobot(SPEC, where).connect()
        assert "cannot connect: the IMU (CAN id 0x50) sent no rate and angle frames in 0.2 s" in str(error.value)
        assert "\n" not in str(error.value)
        with MitCanRobot(SPEC, f"{where},imu=none") as robot:
            assert robot.imu_id is None and robot.read_state().base_quat is None
    with pytest.raises(ValueError, match=r"imu=banana: expected a CAN id \(0x50, 0..0x7FF\) or none"):
        parse_can_address(f"virtual:x,calibration={CALIBRATION},imu=banana")
    assert parse_can_address(f"virtual:x,imu=0x51,calibration={CALIBRATION}").imu == "0x51"
