"""System identification: excite a simulated robot that differs from its model, record it, and fit the model back."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from s2r.calibration.excitation import ExcitationConfig, excite, multisine, run_excitation
from s2r.calibration.recording import RecordingError, RecordingWriter, read_recording
from s2r.calibration.sysid import SysidError, SysidProblem, identify, parse_bounds
from s2r.sim.model import compile_model
from s2r.sim.randomization import load_randomization
from s2r.sim.sim_robot import SimRobot, load_sim_robot_config
from s2r.spec import load_robot_spec, robot_spec
from s2r.state import Command, RobotState

ROOT = Path(__file__).resolve().parent.parent
PERTURBED = ROOT / "hardware" / "configs" / "arm_perturbed.yaml"
ALL = ["damping", "armature", "frictionloss", "kp", "kd", "command_delay_s"]


def perturbed_arm(**overrides) -> SimRobot:
    config = load_sim_robot_config(PERTURBED)
    config.realtime = False
    for key, value in overrides.items():
        setattr(config, key, value)
    return SimRobot(robot_spec("arm"), config)


def record(path: Path, duration_s: float, **kwargs) -> Path:
    spec = robot_spec("arm")
    with perturbed_arm() as robot:
        return run_excitation(robot, spec, duration_s=duration_s, seed=0, out=path, **kwargs)


def truth(name: str, initial: float) -> float:
    """What arm_perturbed.yaml makes of each parameter."""
    kind = name.split(".")[0]
    return {"damping": 1.8 * initial, "armature": 1.5 * initial, "frictionloss": initial + 0.05,
            "command_delay_s": 0.01}.get(kind, initial)


@pytest.fixture(scope="module")
def arm_recording(tmp_path_factory) -> Path:
    """20 s of multisine excitation of the perturbed arm, stepped as fast as it computes."""
    return record(tmp_path_factory.mktemp("sysid") / "arm.mcap", 20.0)


# --- excitation -------------------------------------------------------------------------------------
def test_the_multisine_stays_inside_the_limits_and_velocity_bound_and_starts_and_ends_at_rest():
    spec = robot_spec("arm")
    config = ExcitationConfig()
    signal = multisine(spec, duration_s=20.0, period=spec.control_period, seed=3, config=config)
    assert signal.excited == spec.actuated_joint_names
    assert np.all(signal.q >= spec.lower + config.margin - 1e-9)
    assert np.all(signal.q <= spec.upper - config.margin + 1e-9)
    assert np.all(np.abs(signal.dq) <= config.velocity_fraction * spec.joint_array("velocity_limit") + 1e-9)
    for end in (0, -1):
        assert np.allclose(signal.q[end], spec.default_q, atol=1e-9)
        assert np.allclose(signal.dq[end], 0.0, atol=1e-9)
    assert np.all(np.ptp(signal.q, axis=0) > 0.5)
    # Each joint moves at its own frequencies: the signals are nearly uncorrelated.
    correlation = np.corrcoef(signal.q.T)
    assert np.all(np.abs(correlation[np.triu_indices(3, 1)]) < 0.5)
    held = multisine(spec, duration_s=5.0, period=spec.control_period, joints=["elbow"])
    assert np.all(held.q[:, :2] == spec.default_q[:2])


def test_every_recorded_command_went_through_the_safety_filter_and_the_recording_reads_back(arm_recording):
    spec = robot_spec("arm")
    rec = read_recording(arm_recording, spec)
    assert rec.duration == pytest.approx(21.0, abs=0.05)  # 1 s soft start + 20 s of signal
    assert len(rec.state_time) == len(rec.command_time) + 1
    commands = rec.commands
    assert np.all(commands.q >= spec.lower) and np.all(commands.q <= spec.upper)
    assert np.all(np.abs(np.diff(commands.q, axis=0)) <= spec.joint_array("velocity_limit") * spec.control_period + 1e-9)
    assert np.all(np.abs(commands.kp * (commands.q - rec.q[:-1])) <= spec.joint_array("effort_limit") + 1e-9)
    assert np.all(commands.kp == spec.joint_array("kp")) and np.all(commands.kd == spec.joint_array("kd"))
    assert np.all(np.ptp(rec.q, axis=0) > 1.0)


def test_recorded_gains_apply_from_their_message_on_and_a_recording_without_them_uses_the_spec(tmp_path):
    spec = robot_spec("arm")
    zeros = np.zeros(3)
    command = Command(q=spec.default_q, dq=zeros, kp=spec.joint_array("kp"), kd=spec.joint_array("kd"), tau_ff=zeros)
    path = tmp_path / "gains.mcap"
    with RecordingWriter(path, spec) as writer:
        for i in range(4):
            writer.write_state(RobotState(stamp=0.02 * i, q=spec.default_q, dq=zeros, tau=zeros))
            weaker = dataclasses.replace(command, kp=command.kp * (0.5 if i >= 2 else 1.0))
            writer.write_command(weaker, 0.02 * i)
    rec = read_recording(path, spec)
    assert np.allclose(rec.commands.kp[:, 1], [60, 60, 30, 30])
    assert np.allclose(rec.command_time, [0.0, 0.02, 0.04, 0.06])

    from mcap_ros2.writer import Writer  # a deploy recording: JointState commands, no gains topic

    from s2r.calibration.recording import JOINT_STATE_DEFINITION

    path = tmp_path / "deploy.mcap"
    with open(path, "wb") as stream, Writer(stream) as writer:
        schema = writer.register_msgdef("sensor_msgs/msg/JointState", JOINT_STATE_DEFINITION)
        header = {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": ""}
        writer.write_message("joint_states", schema, {"header": header, "name": ["elbow", "shoulder", "yaw"],
                                                      "position": [1.0, -0.5, 0.0], "velocity": [0, 0, 0], "effort": []})
        writer.write_message("joint_command", schema, {"header": header, "name": ["yaw", "shoulder", "elbow"],
                                                       "position": [0.1, 0.2, 0.3], "velocity": [], "effort": []},
                             log_time=1)
    rec = read_recording(path, spec)
    assert np.allclose(rec.q[0], [0.0, -0.5, 1.0])  # reordered by name into the spec's order
    assert np.allclose(rec.commands.kp[0], spec.joint_array("kp")) and np.all(rec.commands.kd == 0)


# --- the replay ---------------------------------------------------------------------------------------
def test_the_replay_with_the_true_parameters_reproduces_the_simulated_robot_exactly(tmp_path):
    spec = robot_spec("arm")
    problem = SysidProblem(read_recording(record(tmp_path / "arm.mcap", 4.0), spec), spec, ALL)
    names = problem.params.get_non_frozen_parameter_names()
    initial = problem.params.as_vector()
    exact = np.array([truth(n, v) for n, v in zip(names, initial)])
    assert problem.rmse(exact) < 1e-9
    assert problem.rmse(initial) > 1e-3
    # A batch of candidates (the finite-difference columns) gives each column's own residual.
    batch = problem.residual(np.stack([initial, exact], axis=1))
    assert np.allclose(batch[:, 1], problem.residual(exact)) and np.allclose(batch[:, 0], problem.residual(initial))


# --- the validation --------------------------------------------------------------------------------------
def test_sysid_recovers_the_perturbed_arm_and_writes_a_calibrated_spec_that_training_can_use(arm_recording, tmp_path):
    spec = robot_spec("arm")
    out = tmp_path / "arm_calibrated.yaml"
    result = identify(arm_recording, spec, ALL, out=out)
    assert len(result.params) == 16 and not result.warnings
    for name, estimate in result.params.items():
        expected = truth(name, estimate.initial)
        if name == "command_delay_s":
            assert abs(estimate.value - expected) <= 0.005, estimate  # within one physics step
        else:
            assert estimate.value == pytest.approx(expected, rel=0.10), estimate
        assert estimate.identifiable and estimate.at_bound is None
        assert estimate.ci_low <= estimate.value <= estimate.ci_high
    assert result.rmse_after <= 0.3 * result.rmse_before

    calibrated = load_robot_spec(out)
    model = compile_model(calibrated, "position")
    assert np.allclose(model.dof_damping, [result.params[f"damping.{j}"].value for j in spec.joint_names])
    assert np.allclose(model.dof_armature, [result.params[f"armature.{j}"].value for j in spec.joint_names])
    assert np.allclose(model.dof_frictionloss, [result.params[f"frictionloss.{j}"].value for j in spec.joint_names])
    assert np.allclose(calibrated.joint_array("kp"), spec.joint_array("kp"), rtol=1e-4)
    terms = load_randomization(result.files["randomization"])
    damping = next(t for t in terms if t.target == "damping" and t.names == ("shoulder",))
    assert damping.operation == "set" and damping.dist.a < result.params["damping.shoulder"].value < damping.dist.b
    delay = next(t for t in terms if t.target == "command_delay_s")
    assert delay.dist.a <= 0.01 <= delay.dist.b, "the true delay, 2 physics steps of 5 ms, lies in the range"
    assert result.files["figure"].stat().st_size > 10_000
    saved = json.loads(result.files["result"].read_text())
    assert {"params", "rmse_before", "rmse_after", "wall_s"} <= saved.keys()
    assert {"value", "initial", "ci_low", "ci_high"} <= saved["params"]["kd.elbow"].keys()


def test_with_sensor_noise_the_intervals_widen_and_still_hold_the_truth(tmp_path):
    spec = robot_spec("arm")
    path = tmp_path / "noisy.mcap"
    with perturbed_arm(noise_q=0.002, noise_dq=0.05) as robot:
        run_excitation(robot, spec, duration_s=20.0, seed=0, out=path)
    result = identify(path, spec, ALL)
    for name, estimate in result.params.items():
        half = estimate.ci_high - estimate.value
        assert half > 1e-4 * abs(estimate.value)
        assert abs(estimate.value - truth(name, estimate.initial)) <= 2 * half, estimate
    assert result.rmse_after <= 0.3 * result.rmse_before


def test_a_joint_that_never_moved_is_reported_not_identifiable_instead_of_a_number(tmp_path):
    spec = robot_spec("arm")
    path = record(tmp_path / "still_yaw.mcap", 8.0, joints=["shoulder", "elbow"])
    result = identify(path, spec, ALL)
    for kind in ("damping", "armature", "frictionloss", "kp", "kd"):
        yaw = result.params[f"{kind}.yaw"]
        assert not yaw.identifiable and yaw.ci_low == -math.inf and yaw.ci_high == math.inf
        assert any(w.startswith(f"{kind}.yaw: not identifiable") for w in result.warnings)
        assert result.params[f"{kind}.elbow"].identifiable
    assert result.params["damping.elbow"].value == pytest.approx(0.9, rel=0.1)


def test_bounds_that_exclude_the_optimum_are_flagged(arm_recording):
    result = identify(arm_recording, robot_spec("arm"), ["damping", "command_delay_s"],
                      bounds=parse_bounds(["damping.shoulder=0:0.6"]))
    shoulder = result.params["damping.shoulder"]
    assert shoulder.at_bound == "upper" and shoulder.value == pytest.approx(0.6)
    assert any("damping.shoulder: stuck at its upper bound" in w for w in result.warnings)
    with pytest.raises(SysidError, match=r"bounds damping\.wrist: not a fitted parameter"):
        identify(arm_recording, robot_spec("arm"), ["damping"], bounds={"damping.wrist": (0, 1)})


# --- bad input -------------------------------------------------------------------------------------------
def test_a_recording_missing_a_topic_or_a_joint_is_refused_naming_it(tmp_path):
    spec = robot_spec("arm")
    zeros = np.zeros(3)
    states_only = tmp_path / "states_only.mcap"
    with RecordingWriter(states_only, spec) as writer:
        writer.write_state(RobotState(stamp=0.0, q=spec.default_q, dq=zeros, tau=zeros))
    with pytest.raises(RecordingError, match=r"states_only\.mcap: topic 'joint_command' is missing"):
        identify(states_only, spec, ["damping"])

    two_joints = dataclasses.replace(spec, joints=spec.joints[:2])
    no_elbow = tmp_path / "no_elbow.mcap"
    with RecordingWriter(no_elbow, two_joints) as writer:
        writer.write_state(RobotState(stamp=0.0, q=zeros[:2], dq=zeros[:2], tau=zeros[:2]))
        writer.write_command(Command(q=zeros[:2], dq=zeros[:2], kp=zeros[:2], kd=zeros[:2], tau_ff=zeros[:2]), 0.0)
    with pytest.raises(RecordingError, match=r"no_elbow\.mcap: joint_states\[0\]: joint 'elbow' is missing"):
        read_recording(no_elbow, spec)


def test_a_recording_too_short_or_without_excitation_is_refused_with_the_reason(tmp_path):
    spec = robot_spec("arm")
    with pytest.raises(SysidError, match=r"short\.mcap: too short to identify from: 1\.5\d s"):
        identify(record(tmp_path / "short.mcap", 0.5), spec, ["damping"])
    with pytest.raises(SysidError, match=r"still\.mcap: no excitation: the joint that moved most"):
        identify(record(tmp_path / "still.mcap", 5.0, joints=[]), spec, ["damping"])
    with pytest.raises(SysidError, match=r"params: 'stiffness' is not a parameter kind"):
        identify(record(tmp_path / "ok.mcap", 3.0), spec, ["damping", "stiffness"])


def test_a_truncated_recording_reads_to_its_last_complete_chunk_and_garbage_is_refused(arm_recording, tmp_path):
    truncated = tmp_path / "truncated.mcap"
    data = arm_recording.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    whole, cut = read_recording(arm_recording, robot_spec("arm")), read_recording(truncated, robot_spec("arm"))
    assert 0 < len(cut.state_time) < len(whole.state_time)
    np.testing.assert_array_equal(cut.q, whole.q[:len(cut.state_time)])
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"not an mcap file")
    with pytest.raises(RecordingError, match=r"garbage\.mcap: not a readable MCAP"):
        read_recording(garbage, robot_spec("arm"))


def test_excite_runs_a_sim_robot_from_its_config_and_summarizes_the_recording(tmp_path):
    summary = excite(robot="arm", driver=f"sim:{PERTURBED}", duration_s=3.0, out=tmp_path / "arm.mcap")
    assert summary["commands"] == 50 + 151 and summary["states"] == summary["commands"] + 1  # soft start + signal
    assert min(summary["excursion"].values()) > 0.2
    with pytest.raises(ValueError, match=r"--driver: unknown kind 'ethercat'"):
        excite(robot="arm", driver="ethercat:eth0", out=tmp_path / "x.mcap")


@pytest.mark.slow
def test_a_real_time_excitation_identifies_the_arm_too(tmp_path):
    """The wall-clock path: commands land on whichever physics step is running, as on hardware."""
    spec = robot_spec("arm")
    path = tmp_path / "realtime.mcap"
    config = load_sim_robot_config(PERTURBED)
    with SimRobot(spec, config) as robot:
        run_excitation(robot, spec, duration_s=20.0, seed=0, out=path)
    result = identify(path, spec, ["damping", "armature", "frictionloss", "command_delay_s"])
    for name, estimate in result.params.items():
        assert estimate.value == pytest.approx(truth(name, estimate.initial), rel=0.15, abs=0.005), estimate
    assert result.rmse_after <= 0.3 * result.rmse_before
