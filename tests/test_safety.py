"""The SafetyFilter: nothing a policy outputs reaches a motor beyond a limit of the spec."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2r.hardware.safety import EVENTS, SafetyConfig, SafetyFilter
from s2r.spec import robot_spec
from s2r.state import Command, RobotState

ROBOTS = ("pendulum", "cartpole", "arm")


def policy_command(spec, q=None, kp=None, kd=None, tau_ff=None) -> Command:
    """A policy's command: the spec's gains around the default pose unless told otherwise."""
    a = spec.actuated_index
    pick = lambda value, default: np.asarray(default if value is None else value, dtype=float)  # noqa: E731
    return Command(q=pick(q, spec.default_q[a]), dq=np.zeros(len(a)), kp=pick(kp, spec.joint_array("kp", actuated_only=True)),
                   kd=pick(kd, spec.joint_array("kd", actuated_only=True)), tau_ff=pick(tau_ff, np.zeros(len(a))))


def state_at(spec, q, stamp) -> RobotState:
    q = np.asarray(q, dtype=float)
    return RobotState(stamp=stamp, q=q, dq=np.zeros_like(q), tau=np.zeros_like(q))


def assert_within_limits(safety: SafetyFilter, out: Command, previous_q, state) -> None:
    tol = 1e-9
    for key in ("q", "dq", "kp", "kd", "tau_ff"):
        assert np.isfinite(getattr(out, key)).all(), key
    assert (out.kp >= 0).all() and (out.kp <= safety.kp_max + tol).all()
    assert (out.kd >= 0).all() and (out.kd <= safety.kd_max + tol).all()
    assert (out.q >= safety.lower - tol).all() and (out.q <= safety.upper + tol).all()
    if previous_q is not None:
        assert (np.abs(out.q - previous_q) <= safety.max_position_step * (1 + tol) + tol).all()
    assert (np.abs(out.dq) <= safety.velocity_limit + tol).all()
    assert (np.abs(out.tau_ff) <= safety.effort_limit + tol).all()
    if state is not None and np.isfinite(state.q).all():
        implied = np.abs(out.kp * (out.q - state.q[safety.spec.actuated_index]))
        assert (implied <= safety.effort_limit * (1 + tol) + tol).all()


any_float = st.one_of(st.floats(-50.0, 50.0), st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def ticks(draw, spec):
    """A run of ticks: per tick, a policy command (or None) and a measured state (or None, maybe stale)."""
    n_act, n = len(spec.actuated_index), spec.num_joints
    lower = np.where(np.isfinite(spec.lower), spec.lower - 0.3, -10.0)
    upper = np.where(np.isfinite(spec.upper), spec.upper + 0.3, 10.0)
    run = []
    for _ in range(draw(st.integers(1, 25))):
        command = None
        if draw(st.booleans()):
            fields = {k: np.array(draw(st.lists(any_float, min_size=n_act, max_size=n_act)))
                      for k in ("q", "dq", "kp", "kd", "tau_ff")}
            command = Command(**fields)
        state = None
        if draw(st.integers(0, 9)) > 0:
            q = np.array([draw(st.floats(lo, hi)) for lo, hi in zip(lower, upper)])
            if draw(st.integers(0, 19)) == 0:
                q[draw(st.integers(0, n - 1))] = np.nan
            age = draw(st.sampled_from([0.0, 0.01, 0.2, 5.0]))
            state = (q, age)
        run.append((command, state))
    return run


@pytest.mark.parametrize("robot", ROBOTS)
def test_no_command_leaving_the_filter_exceeds_a_limit_whatever_the_policy_outputs(robot):
    spec = robot_spec(robot)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(run=ticks(spec), soft_start=st.sampled_from([0.0, 0.04, 1.0]), fade=st.sampled_from([0.0, 0.06]))
    def check(run, soft_start, fade):
        safety = SafetyFilter(spec, spec.control_period, SafetyConfig(soft_start_s=soft_start, fade_in_s=fade))
        previous_q = None
        for k, (command, measured) in enumerate(run):
            now = 100.0 + k * spec.control_period
            state = None if measured is None else state_at(spec, measured[0], now - measured[1])
            out = safety.filter(command, state, now)
            assert_within_limits(safety, out, previous_q, state)
            previous_q = out.q

    check()


def test_a_stale_state_drops_to_damping_and_fresh_state_recovers_through_soft_start():
    spec = robot_spec("arm")
    period = spec.control_period
    safety = SafetyFilter(spec, period, SafetyConfig(watchdog_periods=3, soft_start_s=0.1, fade_in_s=0.1))
    q = spec.default_q
    policy = policy_command(spec, q=spec.default_q + 0.05)
    for k in range(20):
        safety.filter(policy, state_at(spec, q, k * period), k * period)
    assert safety.mode == "running"

    stale = state_at(spec, q, 19 * period)
    out = safety.filter(policy, stale, 19 * period + 4 * period)
    assert safety.mode == "damping" and safety.events["watchdog"] == 1
    assert (out.kp == 0).all() and (out.kd > 0).all() and (out.dq == 0).all() and (out.tau_ff == 0).all()
    out = safety.filter(policy, None, 24 * period)
    assert safety.events["watchdog"] == 2 and (out.kp == 0).all()

    out = safety.filter(policy, state_at(spec, q, 25 * period), 25 * period)
    assert safety.mode == "soft_start" and (out.kp > 0).all()
    for k in range(26, 40):
        safety.filter(policy, state_at(spec, q, k * period), k * period)
    assert safety.mode == "running" and safety.report()["watchdog"] == 2


def test_a_policy_that_stops_sending_gets_damping_too():
    spec = robot_spec("cartpole")
    period = spec.control_period
    safety = SafetyFilter(spec, period, SafetyConfig(fade_in_s=0.0))
    state = lambda t: state_at(spec, [0.0, np.pi], t)  # noqa: E731
    safety.filter(policy_command(spec, tau_ff=[5.0]), state(0.0), 0.0)
    assert safety.mode == "running"
    for k in range(1, 4):
        assert safety.filter(None, state(k * period), k * period).tau_ff[0] == 5.0
    out = safety.filter(None, state(4 * period), 4 * period)
    assert safety.mode == "damping" and out.tau_ff[0] == 0 and out.kd[0] > 0


def test_estop_is_latched_until_reset_even_with_fresh_state_and_good_commands():
    spec = robot_spec("cartpole")
    period = spec.control_period
    safety = SafetyFilter(spec, period, SafetyConfig(fade_in_s=0.0))
    policy = policy_command(spec, tau_ff=[3.0])
    state = lambda t: state_at(spec, [0.0, np.pi], t)  # noqa: E731
    assert safety.filter(policy, state(0.0), 0.0).tau_ff[0] == 3.0
    safety.estop()
    for k in range(1, 30):
        out = safety.filter(policy, state(k * period), k * period)
        assert safety.mode == "estop" and out.tau_ff[0] == 0 and out.kp[0] == 0 and out.kd[0] > 0
    assert safety.events["estop"] == 29
    safety.reset_estop()
    assert safety.filter(policy, state(30 * period), 30 * period).tau_ff[0] == 3.0
    assert safety.mode == "running"


def test_soft_start_ramps_from_the_measured_pose_to_the_default_pose_then_fades_the_policy_in():
    spec = robot_spec("arm")
    period = spec.control_period
    config = SafetyConfig(soft_start_s=0.4, fade_in_s=0.4)
    safety = SafetyFilter(spec, period, config)
    measured = spec.default_q + np.array([0.2, 0.15, -0.15])
    target = spec.default_q + np.array([-0.1, 0.1, 0.1])
    policy = policy_command(spec, q=target)
    outputs = []
    for k in range(60):
        outputs.append(safety.filter(policy, state_at(spec, measured, k * period), k * period))
    first = outputs[0].q
    assert np.allclose(first, measured)
    ramp_end = round(config.soft_start_s / period)
    assert np.allclose(outputs[ramp_end - 1].q, measured + (ramp_end - 1) / ramp_end * (spec.default_q - measured))
    for k, out in enumerate(outputs):
        reached = np.allclose(out.q, target)
        assert reached == (k * period >= config.soft_start_s + config.fade_in_s - 1e-9), k
    ticks_before_target = sum(not np.allclose(out.q, target) for out in outputs)
    assert safety.mode == "running" and safety.events["soft_start"] == ticks_before_target == 40  # 0.8 s at 50 Hz


def test_torque_commands_fade_in_from_zero_torque():
    spec = robot_spec("pendulum")
    period = spec.control_period
    safety = SafetyFilter(spec, period, SafetyConfig(fade_in_s=0.2))
    taus = [safety.filter(policy_command(spec, tau_ff=[2.0]), state_at(spec, [np.pi], k * period), k * period).tau_ff[0]
            for k in range(12)]
    np.testing.assert_allclose(taus, 2.0 * np.minimum(np.arange(12) * period / 0.2, 1.0), atol=1e-12)  # a linear fade
    assert taus[0] == 0.0 and taus[11] == 2.0


def test_nan_from_the_policy_is_counted_and_never_passed_through():
    spec = robot_spec("arm")
    period = spec.control_period
    safety = SafetyFilter(spec, period, SafetyConfig(soft_start_s=0.0, fade_in_s=0.0))
    good = policy_command(spec)
    safety.filter(good, state_at(spec, spec.default_q, 0.0), 0.0)
    for k, bad in enumerate([np.nan, np.inf, -np.inf], start=1):
        command = policy_command(spec, tau_ff=[0.0, bad, 0.0])
        out = safety.filter(command, state_at(spec, spec.default_q, k * period), k * period)
        assert all(np.isfinite(getattr(out, key)).all() for key in ("q", "dq", "kp", "kd", "tau_ff"))
        assert (out.kp == 0).all() and (out.kd > 0).all()
    assert safety.events["nan_guard"] == 3
    safety.filter(good, state_at(spec, spec.default_q, 4 * period), 4 * period)
    assert safety.mode == "running" and set(safety.report()) == {"mode", *EVENTS}


def test_damping_command_holds_the_measured_pose_with_no_stiffness():
    spec = robot_spec("arm")
    safety = SafetyFilter(spec, spec.control_period, SafetyConfig(damping_kd=0.5))
    out = safety.damping_command(state_at(spec, [0.1, 0.2, 0.3], 0.0))
    assert np.allclose(out.q, [0.1, 0.2, 0.3]) and (out.kp == 0).all() and np.allclose(out.kd, 0.5)
    assert np.allclose(safety.damping_command(None).q, spec.default_q)


def test_bad_safety_config_names_the_field():
    with pytest.raises(ValueError, match="SafetyConfig.watchdog_periods"):
        SafetyConfig(watchdog_periods=0)
    with pytest.raises(ValueError, match="SafetyConfig.damping_kd"):
        SafetyConfig(damping_kd=-1.0)


def test_a_huge_target_on_a_continuous_joint_becomes_the_nearest_angle_and_the_rate_limit_stays_exact():
    spec = robot_spec("pendulum")  # one continuous joint, torque-controlled: q* passes with kp = 0
    safety = SafetyFilter(spec, spec.control_period, SafetyConfig(soft_start_s=0.0, fade_in_s=0.0))
    previous = None
    for k, target in enumerate([1.1e15, -3e12, 1.1e15 + 7.0]):
        now = 100.0 + k * spec.control_period
        state = state_at(spec, [0.1 + 0.01 * k], now)
        out = safety.filter(policy_command(spec, q=[target], kp=[0.0]), state, now)
        assert abs(out.q[0] - state.q[0]) <= np.pi
        assert_within_limits(safety, out, previous, state)
        previous = out.q


# --- rotors (the Crazyflie) -----------------------------------------------------------------------

def rotor_command(thrust) -> Command:
    """A multirotor policy's command: thrust fractions per rotor, no joints."""
    none = np.zeros(0)
    return Command(q=none, dq=none, kp=none, kd=none, tau_ff=none, rotor_thrust=np.asarray(thrust, dtype=float))


def flying(stamp, ang_vel=(0.0, 0.0, 0.0)) -> RobotState:
    none = np.zeros(0)
    return RobotState(stamp=stamp, q=none, dq=none, tau=none, base_quat=np.array([1.0, 0.0, 0.0, 0.0]),
                      base_ang_vel=np.asarray(ang_vel, dtype=float))


def running_rotor_filter(**config) -> SafetyFilter:
    """The Crazyflie's filter past its fade-in, its motors at hover (0.45)."""
    safety = SafetyFilter(robot_spec("crazyflie"), 0.01, SafetyConfig(fade_in_s=0.0, **config))
    t = 0.0
    for t in np.arange(0.0, 0.2, 0.01):
        safety.filter(rotor_command([0.45] * 4), flying(t), t)
    assert safety.mode == "running"
    return safety


def test_rotor_commands_of_the_wrong_size_are_refused_naming_the_field():
    safety = SafetyFilter(robot_spec("crazyflie"), 0.01)
    with pytest.raises(ValueError, match=r"Command\.rotor_thrust: expected shape \(4,\) for the rotors, got \(3,\)"):
        safety.filter(rotor_command([0.5] * 3), flying(0.0), 0.0)
    with pytest.raises(ValueError, match=r"Command\.rotor_thrust: expected shape \(4,\) for the rotors, got None"):
        safety.filter(policy_command(robot_spec("crazyflie")), flying(0.0), 0.0)
    with pytest.raises(ValueError, match=r"Command\.rotor_thrust: pendulum has no rotors"):
        pendulum = robot_spec("pendulum")
        SafetyFilter(pendulum, 0.01).filter(Command(**vars(policy_command(pendulum)) | {"rotor_thrust": np.ones(4)}),
                                            state_at(pendulum, [0.0], 0.0), 0.0)


def test_rotor_thrust_stays_within_zero_and_full_and_moves_no_faster_than_its_rate_limit():
    safety = running_rotor_filter(rotor_thrust_rate=20.0)      # 0.2 of top thrust per 10 ms tick
    before = dict(safety.events)
    out = safety.filter(rotor_command([5.0, -3.0, 0.5, 0.46]), flying(0.2), 0.2)
    assert out.rotor_thrust == pytest.approx([0.65, 0.25, 0.5, 0.46])
    for t in (0.21, 0.22, 0.23):
        out = safety.filter(rotor_command([5.0, -3.0, 0.5, 0.46]), flying(t), t)
    assert out.rotor_thrust == pytest.approx([1.0, 0.0, 0.5, 0.46])
    assert safety.events["effort_clamp"] - before["effort_clamp"] == 4
    assert safety.events["rate_limit"] - before["rate_limit"] == 2


def test_a_nan_thrust_turns_every_motor_off_at_once_and_is_counted():
    safety = running_rotor_filter()
    out = safety.filter(rotor_command([0.45, np.nan, 0.45, 0.45]), flying(0.2), 0.2)
    assert out.rotor_thrust.tolist() == [0.0] * 4 and safety.events["nan_guard"] == 1 and safety.mode == "damping"


def test_a_stale_or_broken_state_turns_the_motors_off_then_the_thrust_fades_back_in():
    safety = SafetyFilter(robot_spec("crazyflie"), 0.01, SafetyConfig(fade_in_s=0.1))
    for t in np.arange(0.0, 0.3, 0.01):
        safety.filter(rotor_command([0.45] * 4), flying(t), t)
    out = safety.filter(rotor_command([0.45] * 4), flying(0.25), 0.3)          # state 5 periods old
    assert out.rotor_thrust.tolist() == [0.0] * 4 and safety.events["watchdog"] == 1
    out = safety.filter(rotor_command([0.45] * 4), flying(0.31, ang_vel=(np.nan, 0, 0)), 0.31)   # a broken IMU
    assert out.rotor_thrust.tolist() == [0.0] * 4 and safety.events["watchdog"] == 2
    thrust = [safety.filter(rotor_command([0.45] * 4), flying(t), t).rotor_thrust[0] for t in np.arange(0.32, 0.5, 0.01)]
    assert thrust[0] == pytest.approx(0.0) and np.all(np.diff(thrust) >= -1e-12) and thrust[-1] == pytest.approx(0.45)
    assert safety.mode == "running"
