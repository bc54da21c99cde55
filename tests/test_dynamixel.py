"""The Dynamixel driver against its emulator, through dynamixel-sdk's real bytes on a pseudo-terminal.

The emulator runs in its own process (`s2r emulate dynamixel --robot arm`), moving the arm's
MuJoCo model with the X-series position law; the tests drive it as a user's loop would:
read → SafetyFilter → write, once per control period.
"""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from s2r.hardware.drivers import DriverError, open_driver, preflight
from s2r.hardware.drivers.dynamixel import MODELS, gain_units
from s2r.hardware.emulators.dynamixel import crc16, packet, stuff, unstuff
from s2r.hardware.safety import SafetyFilter
from s2r.interface import RobotError
from s2r.sim.emulate import EmulatorProcess
from s2r.spec import robot_spec
from s2r.state import Command

ROOT = Path(__file__).resolve().parent.parent
ARM = robot_spec("arm")
CALIBRATION = "hardware/configs/arm_dynamixel.yaml"
"""The arm's motors: XM430-W350 on yaw and elbow, XM540-W270 on the shoulder (as the emulator mounts them)."""


@pytest.fixture(scope="module")
def emulator():
    with EmulatorProcess("dynamixel", "arm") as process:
        yield process


@pytest.fixture
def bus(emulator):
    emulator.fault("clear")
    emulator.fault("power_cycle")  # latched hardware errors (overload) go only with the power
    yield emulator
    emulator.fault("clear")


def _hold(robot, safety, target, ticks, *, on_tick=None):
    """Run the loop for `ticks` control periods toward `target`; the commands sent and the safety modes."""
    spec = robot.spec
    commands, modes = [], []
    policy = Command(q=target, dq=np.zeros(3), kp=spec.joint_array("kp"), kd=spec.joint_array("kd"),
                     tau_ff=np.zeros(3))
    for tick in range(ticks):
        start = time.monotonic()
        if on_tick:
            on_tick(tick)
        state = robot.read_state()
        command = safety.filter(policy, state, time.time())
        robot.write_command(command)
        commands.append(command)
        modes.append(safety.mode)
        time.sleep(max(spec.control_period - (time.monotonic() - start), 0.0))
    return commands, modes


def _within_limits(commands, spec):
    return all(np.all(c.q >= spec.lower) and np.all(c.q <= spec.upper) and np.all(np.abs(c.tau_ff) <= spec.joint_array("effort_limit"))
               for c in commands)


def test_the_driver_moves_the_emulated_arm_to_a_target_through_the_sdk(bus):
    with open_driver(f"dynamixel:{bus.port},calibration={ROOT / CALIBRATION}", ARM) as robot:
        robot.enable()
        target = np.array([0.6, -0.2, 0.7])
        commands, modes = _hold(robot, SafetyFilter(ARM, ARM.control_period), target, 150)
        q = robot.read_state().q
        faults = robot.faults()
    assert modes[-1] == "running"
    assert np.abs(q - target).max() < 0.1, q  # the shoulder sags a little under gravity: the motor's P law
    assert _within_limits(commands, ARM)
    assert all(f.lost is False for f in faults.values())


def test_without_a_calibration_the_models_are_what_the_motors_report(bus):
    with open_driver(f"dynamixel:{bus.port}", ARM) as robot:
        assert [m.model for m in robot.calibration.motors] == ["XM430-W350", "XM540-W270", "XM430-W350"]
        assert [d.voltage for d in robot.diagnostics()] == [12.0, 12.0, 12.0]


def test_a_missed_reply_is_retried_and_counted_and_the_state_stays_fresh(bus):
    with open_driver(f"dynamixel:{bus.port}", ARM) as robot:
        bus.fault("drop_next 2 1")
        state = robot.read_state()
        assert time.time() - state.stamp < ARM.control_period
        assert robot.faults()["shoulder"].retries == 1 and robot.faults()["shoulder"].missed == 1
        assert robot.fault is None


@pytest.mark.parametrize("fault, lost_within", [("drop 2", 5), ("corrupt 2", 5), ("silent 2", 5), ("bus_down", 5),
                                                ("overload 2", 1), ("overheating 3", 1)])
def test_every_injected_fault_ends_in_damping_with_nothing_out_of_limits(bus, fault, lost_within):
    with open_driver(f"dynamixel:{bus.port}", ARM) as robot:
        robot.enable()
        safety = SafetyFilter(ARM, ARM.control_period)
        injected_at = 60
        events = []

        def inject(tick):
            if tick == injected_at:
                bus.fault(fault)
            if robot.fault is not None and not events:
                events.append(tick)

        commands, modes = _hold(robot, safety, np.array([0.3, -0.4, 0.9]), 90, on_tick=inject)
        statuses = robot.diagnostics()
        state = robot.read_state()
    assert events, f"{fault}: the robot never latched a fault"
    assert events[0] - injected_at <= lost_within + 1
    assert _within_limits(commands, ARM)
    assert statuses[int(fault.split()[-1]) - 1 if fault != "bus_down" else 0].level == "ERROR"
    assert modes[-1] == "damping"  # the driver's latched fault reached the SafetyFilter (with the state)
    assert state.fault == robot.fault and safety.events["robot_fault"] > 0
    if fault.startswith(("drop", "corrupt", "silent", "bus_down")):
        assert time.time() - state.stamp > 3 * ARM.control_period  # and the state went stale
    else:
        flagged = [s for s in statuses if s.faults.error_flags]
        assert flagged and flagged[0].faults.error_flags[0] == fault.split()[0]
        assert modes[events[0] - 1] == "damping"  # from the tick that read the error bit: the state is fresh


def test_after_a_hardware_error_is_cleared_the_arm_soft_starts_again(bus):
    with open_driver(f"dynamixel:{bus.port}", ARM) as robot:
        robot.enable()
        safety = SafetyFilter(ARM, ARM.control_period)
        target = np.array([0.3, -0.4, 0.9])
        _hold(robot, safety, target, 70, on_tick=lambda tick: tick == 60 and bus.fault("overload 2"))
        assert safety.mode == "damping" and robot.fault == "motor 2 (joint shoulder): overload"
        bus.fault("clear")
        bus.fault("power_cycle")  # the motors see it at their next physics step
        robot.disable()
        deadline = time.monotonic() + 2.0
        while True:
            try:
                robot.enable()
                break
            except RobotError:  # "reports overload" until that step
                if time.monotonic() > deadline:
                    raise
                time.sleep(ARM.control_period)
        safety.reset()
        _, modes = _hold(robot, safety, target, 5)
    assert robot.fault is None and set(modes) == {"soft_start"}


def test_enabling_refuses_a_joint_outside_its_calibrated_range_naming_it(bus, tmp_path):
    with open_driver(f"dynamixel:{bus.port}", ARM) as robot:
        elbow = float(robot.read_state().q[2])
    data = yaml.safe_load((ROOT / CALIBRATION).read_text())
    data["motors"][2]["range"] = [elbow + 0.5, elbow + 1.0]
    (tmp_path / "narrow.yaml").write_text(yaml.safe_dump(data))
    with open_driver(f"dynamixel:{bus.port},calibration={tmp_path / 'narrow.yaml'}", ARM) as robot:
        with pytest.raises(RobotError, match=r"joint elbow is at -?\d\.\d+ rad, outside its calibrated range "
                                             r"\[-?\d\.\d+, -?\d\.\d+\] \(motor 3\)"):
            robot.enable()


@pytest.mark.parametrize("where, message", [
    ("/dev/nonexistent", r"dynamixel:/dev/nonexistent: no such port"),
    ("{port}@57600", r"no motor answers at 57600 baud"),
    ("{port},calibration=wrong_models.yaml", r"motor 2 \(joint shoulder\) is a XM540-W270 \(model number 1120\), "
                                             r"but .*wrong_models.yaml says XM430-W350"),
    ("{port},calibration=other_robot.yaml", r"robot: 'pendulum', but the robot is 'arm'"),
])
def test_bad_bus_input_is_refused_in_one_line(bus, tmp_path, monkeypatch, where, message):
    monkeypatch.chdir(tmp_path)
    shipped = yaml.safe_load((ROOT / CALIBRATION).read_text())
    wrong = {**shipped, "motors": [{**m, "model": "XM430-W350"} for m in shipped["motors"]]}
    (tmp_path / "wrong_models.yaml").write_text(yaml.safe_dump(wrong))
    (tmp_path / "other_robot.yaml").write_text(yaml.safe_dump({**shipped, "robot": "pendulum"}))
    with pytest.raises(DriverError, match=message) as error:
        preflight(f"dynamixel:{where.format(port=bus.port)}", ARM)
    assert "\n" not in str(error.value)


def test_a_busy_port_a_missing_motor_and_corrupted_replies_are_named(bus):
    with open_driver(f"dynamixel:{bus.port}", ARM):
        with pytest.raises(DriverError, match="port is busy"):
            preflight(f"dynamixel:{bus.port}", ARM)
    bus.fault("silent 3")
    with pytest.raises(DriverError, match=r"motor id 3 \(joint elbow\) does not answer"):
        preflight(f"dynamixel:{bus.port}", ARM)
    bus.fault("clear")
    bus.fault("corrupt 1")
    with pytest.raises(DriverError, match=r"motor 1 \(joint yaw\) answers with corrupted status packets"):
        preflight(f"dynamixel:{bus.port}", ARM)


def one_iteration_reach() -> Path:
    """The run directory of a reach policy after one PPO iteration on 8 worlds, exported as reach.onnx: a contract
    for the arm, not a skill (seconds), cached by source hash as conftest's cartpole."""
    from conftest import CACHE, _source_hash

    from s2r.policies.export import export_onnx
    from s2r.policies.train import default_config, load_policy, train

    run = CACHE / f"reach-1-iteration-{_source_hash()}"
    if not (run / "reach.onnx").is_file():
        train(default_config("reach", num_envs=8, iterations=1), run, progress=False)
        policy, contract, _ = load_policy(run)
        export_onnx(policy, contract, run / "reach.onnx")
    return run


@pytest.fixture(scope="module")
def reach_onnx() -> Path:
    return one_iteration_reach() / "reach.onnx"


def test_s2r_deploy_on_a_port_that_does_not_exist_exits_2_with_one_line(reach_onnx, tmp_path):
    result = subprocess.run([sys.executable, "-m", "s2r.apps.cli", "deploy", str(reach_onnx), "--driver",
                             "dynamixel:/dev/nonexistent", "--out", str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "dynamixel:/dev/nonexistent: no such port" in result.stderr


@given(body=st.binary(max_size=64))
def test_byte_stuffing_round_trips_and_the_crc_is_the_sdks(body):
    assert unstuff(stuff(body)) == body
    raw = packet(1, 0x55, body)
    assert crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")
    assert b"\xff\xff\xfd" not in stuff(body).replace(b"\xff\xff\xfd\xfd", b"")


@given(kp=st.floats(0.0, 40.0), kd=st.floats(0.0, 1.0), model=st.sampled_from(sorted(MODELS)))
def test_gain_units_stay_in_range_and_round_trip_to_a_unit(kp, kd, model):
    m = MODELS[model]
    p, d = gain_units(np.array([kp]), np.array([kd]), [m])
    assert 0 <= p[0] <= 16383 and 0 <= d[0] <= 16383
    if kp / m.kp_per_unit <= 16383:
        assert abs(p[0] * m.kp_per_unit - kp) <= m.kp_per_unit / 2 + 1e-12
    if kd / m.kd_per_unit <= 16383:
        assert abs(d[0] * m.kd_per_unit - kd) <= m.kd_per_unit / 2 + 1e-12


def test_an_installed_s2r_emulates_the_arm_on_its_shipped_mounting(tmp_path):
    """The shipped motor calibrations are package data: s2r installed from its wheel, run away from the source tree,
    mounts the arm's motors as hardware/configs/arm_dynamixel.yaml says (the XM540-W270 on the shoulder)."""
    import zipfile

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    site = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "wheel").glob("s2r-*.whl"))) as wheel:
        wheel.extractall(site)
    probe = ("from s2r.sim.emulate import CONFIGS, default_mounting; from s2r.spec import robot_spec; "
             "print(CONFIGS); print(default_mounting('dynamixel', robot_spec('arm')).motors[1].model)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}, timeout=60)
    assert result.returncode == 0, result.stderr
    configs, model = result.stdout.split()
    assert Path(configs).is_relative_to(site)
    assert model == "XM540-W270"
