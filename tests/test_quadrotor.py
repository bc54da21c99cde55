"""quadrotor_hover: Learning to Fly's hover task on the Crazyflie, through the env's public API."""

from __future__ import annotations

import math
from dataclasses import replace

import mujoco
import numpy as np
import pytest
import torch

from s2r.flight import rotation_matrix
from s2r.sim.env import BatchEnv, make_env
from s2r.sim.quadrotor import (FlightBox, HoverConfig, HoverInit, QuadrotorHover, RewardCurriculum, WeightRamp,
                               attitude_error)


def still_at_target(max_angle_rad: float) -> QuadrotorHover:
    """The hover task started at the target at rest, motors at hover, attitudes up to `max_angle_rad` (a quarter
    of the worlds level)."""
    init = HoverInit(position_m=0.0, lin_vel=0.0, ang_vel=0.0, max_angle_rad=max_angle_rad,
                     motor_thrust=(0.445, 0.445), at_target_fraction=0.25, disturbance_std=0.0)
    return QuadrotorHover(HoverConfig(init=init))


def hover_action(env: BatchEnv) -> torch.Tensor:
    """The raw action (num_envs, 4) whose thrust holds the weight."""
    return torch.full((env.num_envs, 4), 2 * float(env.task.hover_thrust[0]) - 1)


def test_the_actor_sees_position_error_rotation_matrix_velocities_and_32_actions_the_critic_motors_and_wind():
    env = make_env("quadrotor_hover", 8, seed=1)
    obs = env.reset()
    assert env.obs_dims == {"policy": 3 + 9 + 3 + 3 + 32 * 4, "critic": 146 + 4 + 3}
    qpos = env.data_field("qpos")
    for world in range(8):
        xmat = np.zeros(9)
        mujoco.mju_quat2Mat(xmat, qpos[world, 3:7])          # MuJoCo's own body-to-world matrix
        assert obs["critic"][world, 3:12].numpy() == pytest.approx(xmat, abs=1e-6)
        assert obs["policy"][world, 3:12].numpy() == pytest.approx(xmat, abs=0.006)   # the paper's noise, 0.001
    assert obs["critic"][:, :3].numpy() == pytest.approx(env.task.position_w(), abs=1e-6)
    actions = torch.rand(8, 4) * 2 - 1
    obs, *_ = env.step(actions)
    alive = env.episode_length == 1
    assert obs["policy"][alive, -4:].numpy() == pytest.approx(actions[alive].numpy(), abs=1e-6)
    assert obs["critic"][:, 146:150].numpy() == pytest.approx(env.task.motor_thrust(), abs=1e-6)


def test_after_a_reset_the_action_history_says_what_each_motor_was_commanded_to():
    init = HoverInit(motor_thrust=(0.0, 1.0), at_target_fraction=0.0)
    env = BatchEnv(QuadrotorHover(HoverConfig(init=init)), 16, seed=6)
    obs = env.reset()
    motors = env.task.motor_thrust().copy()
    assert motors.std() > 0.2                                             # the rotors start apart
    history = obs["policy"][:, 18:].numpy().reshape(16, 32, 4)
    assert history == pytest.approx(np.broadcast_to(2 * motors[:, None] - 1, (16, 32, 4)), abs=1e-6)
    # holding that command keeps every motor where it started: the history is the command the motors follow
    env.step(torch.from_numpy(2 * motors - 1).float())
    assert env.task.motor_thrust() == pytest.approx(motors, abs=1e-6)


def test_initial_states_are_the_papers_and_widen_to_every_attitude_up_to_upside_down():
    env = make_env("quadrotor_hover", 512, seed=2)
    env.reset()
    task, state = env.task, env.read_state()
    flown = np.linalg.norm(task.position_w(), axis=-1) > 0      # not the 10 % started at the target
    assert 0.03 < 1 - flown.mean() < 0.2
    assert np.abs(task.position_w()).max() <= 0.2 and np.abs(task.lin_vel_w()).max() <= 1.0
    angles = attitude_error(state.base_quat[flown])
    assert angles.max() > math.radians(80) and angles.max() <= math.pi / 2 + 1e-9
    assert task.motor_thrust()[flown] == pytest.approx(0.25)             # every rotor at half its rpm range
    wide = BatchEnv(QuadrotorHover(HoverConfig(init=HoverInit(max_angle_rad=math.pi))), 512, seed=2)
    wide.reset()
    angles = attitude_error(wide.read_state().base_quat)
    assert angles.max() > math.radians(170) and angles.min() < math.radians(60)   # uniform over rotations
    quat = wide.read_state().base_quat
    assert np.allclose(rotation_matrix(quat) @ rotation_matrix(quat).transpose(0, 2, 1), np.eye(3), atol=1e-9)


def test_a_crazyflie_started_upside_down_is_inside_the_box_until_its_rotors_push_it_out_downward():
    env = BatchEnv(still_at_target(math.pi), 256, seed=3)
    env.reset()
    upside_down = attitude_error(env.read_state().base_quat) > math.radians(160)
    level = attitude_error(env.read_state().base_quat) < math.radians(5)
    assert upside_down.sum() > 0 and level.sum() > 0
    ended = np.zeros(env.num_envs, dtype=bool)
    for step in range(100):   # one second at hover thrust
        _, _, terminated, _, _ = env.step(hover_action(env))
        if step == 0:
            assert not terminated.numpy().any()           # every attitude starts inside the box
        ended |= terminated.numpy()
    assert ended[upside_down].all()                       # thrust points down: it leaves the box
    assert not ended[level].any()                         # level at hover thrust: it stays


def test_an_initial_state_outside_the_box_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"init\.position_m: 1\.2 starts outside the box"):
        HoverConfig(init=HoverInit(position_m=1.2))
    with pytest.raises(ValueError, match=r"curriculum: 'speed' is not a reward term"):
        QuadrotorHover(curriculum=RewardCurriculum(ramps=(WeightRamp("speed", 1.2, 1.0),)))
    with pytest.raises(ValueError, match=r"init\.lin_vel: 3\.0 starts outside the box"):
        HoverConfig(init=HoverInit(lin_vel=3.0), box=FlightBox(lin_vel=2.0))
    with pytest.raises(ValueError, match=r"init\.motor_thrust"):
        HoverInit(motor_thrust=(0.5, 1.5))


def test_nan_actions_turn_that_worlds_motors_off_are_counted_and_leave_rewards_finite():
    env = BatchEnv(still_at_target(0.0), 4, seed=4)
    env.reset()
    actions = hover_action(env)
    actions[1] = float("nan")
    for _ in range(10):
        _, reward, _, _, _ = env.step(actions)
        assert torch.isfinite(reward).all()
    thrust = env.task.motor_thrust()
    assert thrust[1].max() < 0.445 * math.exp(-0.1 / 0.15) * 1.02      # decaying with the motor lag to off
    assert thrust[[0, 2, 3]] == pytest.approx(0.445, abs=1e-3)
    assert env.task.nan_actions.tolist() == [0, 10, 0, 0] and env.task.nan_actions_total == 10
    assert env.task.lin_vel_w()[1, 2] < -0.1 and abs(env.task.lin_vel_w()[0, 2]) < 0.01  # it falls, others hover


def test_the_reward_is_highest_at_the_target_level_and_positive_from_every_initial_state():
    env = BatchEnv(still_at_target(math.pi), 64, seed=5)
    env.reset()
    _, reward, _, _, _ = env.step(hover_action(env))
    angles = attitude_error(env.read_state().base_quat)
    best = np.argmin(angles)
    assert reward[best] == pytest.approx(2.0, abs=0.02)
    assert np.corrcoef(angles, reward.numpy())[0, 1] < -0.9
    # ending an episode (worth 0 from then on) never pays more than flying on from where it starts
    env = make_env("quadrotor_hover", 512, seed=7)
    env.reset()
    _, reward, terminated, _, _ = env.step(torch.rand(512, 4) * 2 - 1)
    assert (reward.numpy() > 0).all() and not terminated.any()


def test_the_reward_curriculum_ramps_position_velocity_and_action_weights_up_to_their_limits():
    curriculum = RewardCurriculum(every_transitions=32, ramps=(WeightRamp("position_error_sq", 2.0, 6.0),
                                                                WeightRamp("lin_vel_sq", 1.4, 1.0)))
    env = BatchEnv(QuadrotorHover(curriculum=curriculum), 16, seed=8)
    env.reset()
    weights = lambda: {r.name: r.weight for r in env.task.config.rewards}   # noqa: E731
    start = weights()
    env.step(hover_action(env))
    assert weights() == start                                             # 16 transitions: not yet
    env.step(hover_action(env))
    assert env.task.stage == 1
    assert weights()["position_error_sq"] == pytest.approx(2 * start["position_error_sq"])
    assert weights()["lin_vel_sq"] == pytest.approx(1.4 * start["lin_vel_sq"])
    assert weights()["alive"] == start["alive"] and weights()["attitude_error_sq_sin"] == start["attitude_error_sq_sin"]
    for _ in range(4):
        env.step(hover_action(env))
    assert env.task.stage == 3 and weights()["position_error_sq"] == -6.0                       # held at its limit


def test_a_hand_written_controller_reading_the_actors_observation_holds_the_target_by_the_success_rule():
    """The task is solvable from what the actor sees (signs and frames of position error, rotation matrix,
    velocities, the action history), from the rule's initial states without the disturbance force (the
    controller has no integral action: a 5 % push would hold it 0.12 m off)."""
    from s2r.policies.episodes import run_episodes
    from s2r.policies.rule import HOVER_RULE
    from s2r.policies.hover_controller import GeometricHoverController

    task = QuadrotorHover(replace(HOVER_RULE, init=replace(HOVER_RULE.init, disturbance_std=0.0)))
    controller = GeometricHoverController()
    with torch.no_grad():
        result = run_episodes(BatchEnv(task, 64, seed=9), "quadrotor_hover", lambda obs: controller(obs["policy"]),
                              lambda done: None)
    assert result["success_rate"] > 0.6


def test_the_figure_eight_reference_is_a_lissajous_curve_whose_velocity_is_its_derivative():
    from s2r.sim.quadrotor import FigureEight

    reference = FigureEight(amplitude_m=0.3, period_s=8.0)
    t, phase = np.linspace(0, 8, 801), np.zeros(801)
    p = reference.position(t, phase)
    assert np.allclose(p[0], 0) and np.allclose(p[400], 0, atol=1e-12)             # crosses itself at the centre
    assert abs(p[:, 0].max() - 0.3) < 1e-6 and abs(p[:, 1].max() - 0.15) < 1e-3 and (p[:, 2] == 0).all()
    finite_difference = np.gradient(p, t, axis=0)
    assert np.abs(finite_difference[1:-1] - reference.velocity(t, phase)[1:-1]).max() < 1e-3
    with pytest.raises(ValueError, match="period_s 0"):
        FigureEight(period_s=0)


def test_a_hover_controller_follows_the_figure_eight_on_quadrotor_track():
    """quadrotor_track's observation (position and velocity relative to the moving reference) lets a hover policy
    track: the hand-written controller stays within 0.1 m of the reference through the last 5 s."""
    from s2r.policies.episodes import run_episodes
    from s2r.policies.rule import HOVER_RULE
    from s2r.policies.hover_controller import GeometricHoverController
    from s2r.sim.quadrotor import QuadrotorTrack

    env = make_env("quadrotor_track", 32, seed=4)
    assert isinstance(env.task, QuadrotorTrack) and env.max_episode_length == 1000
    task = QuadrotorTrack(replace(HOVER_RULE, init=replace(HOVER_RULE.init, disturbance_std=0.0, max_angle_rad=0.5)))
    controller = GeometricHoverController()
    with torch.no_grad():
        result = run_episodes(BatchEnv(task, 32, seed=4), "quadrotor_track", lambda obs: controller(obs["policy"]),
                              lambda done: None)
    assert result["success_rate"] > 0.6


def still_at_the_target(**init) -> QuadrotorHover:
    """The hover task starting every world at the target, level, at rest, without the disturbance force (unless
    `init` says otherwise)."""
    fields = {"position_m": 0.0, "max_angle_rad": 0.0, "lin_vel": 0.0, "ang_vel": 0.0, "at_target_fraction": 0.0,
              "disturbance_std": 0.0, **init}
    return QuadrotorHover(HoverConfig(init=HoverInit(**fields)))


def test_randomized_motor_lags_and_thrust_coefficients_act_per_world():
    from s2r.sim.randomization import Dist, Randomize

    terms = (Randomize("time_constant", Dist("uniform", 0.5, 2.0)), Randomize("thrust_max", Dist("uniform", 0.8, 1.2)))
    env = BatchEnv(still_at_the_target(motor_thrust=(0.0, 0.0)), 16, seed=3, randomization=terms)
    env.reset()
    env.step(torch.ones(16, 4))                                   # full thrust from motors off, one 10 ms period
    tau, thrust_max = env.randomizer.values                       # each world's values (s, N) per rotor
    assert tau.min() < 0.1 < 0.2 < tau.max() and 0.8 * 0.1488 < thrust_max.min() < thrust_max.max() < 1.2 * 0.1489
    assert np.allclose(env.task.motor_thrust(), 1 - np.exp(-0.01 / tau), rtol=0.02)   # the lag of each motor
    assert np.allclose(env.model_field("actuator_gainprm")[:, :, 0], thrust_max)
    with pytest.raises(ValueError, match="no rotor 'rotor9'"):
        BatchEnv(still_at_the_target(), 2, randomization=(Randomize("thrust_max", Dist("uniform", 1, 1),
                                                                    names=("rotor9",)),))


def test_a_randomized_inertia_replaces_the_one_a_mass_term_scaled():
    from s2r.sim.randomization import Dist, Randomize

    terms = (Randomize("mass", Dist("uniform", 1.5, 1.5), names=("base",)),
             Randomize("inertia", Dist("uniform", 2.0, 2.0), names=("base",)))
    env = BatchEnv(still_at_the_target(), 2, randomization=terms)
    env.reset()
    base = env.task.base_body
    assert np.allclose(env.model_field("body_mass")[:, base], 0.027 * 1.5)
    assert np.allclose(env.model_field("body_inertia")[:, base], 2 * np.array([3.85e-6, 3.85e-6, 5.9675e-6]))


def test_the_motion_capture_delay_lags_the_policys_inputs_while_the_rewards_judge_the_truth():
    from s2r.flight import POSITION_ERROR
    from s2r.sim.randomization import Dist, Randomize

    env = BatchEnv(still_at_the_target(), 2, randomization=(Randomize("sensor_delay_s", Dist("uniform", 0.03, 0.03),
                                                                      "set"),))
    env.reset()
    truth, seen = [], []
    for _ in range(10):                                              # motors at a quarter thrust: it sinks
        env.step(-0.5 * torch.ones(2, 4))
        truth.append(env.task.position_error_w[0, 2])
        seen.append(env.inputs[POSITION_ERROR][0, 2])
    assert env.randomizer.values[0][0, 0] == pytest.approx(0.03)
    assert np.allclose(seen[3:], truth[:-3]) and truth[-1] < truth[-4] < 0
    with pytest.raises(ValueError, match="task pendulum delays no sensors"):
        make_env("pendulum", 2).__class__(make_env("pendulum", 1).task, 1,
                                          randomization=(Randomize("sensor_delay_s", Dist("uniform", 0, 0.01)),))


def test_a_wind_gust_adds_to_the_constant_disturbance_and_leaves_it_when_it_ends():
    from s2r.sim.randomization import Dist, Randomize

    gust = Randomize("push", Dist("uniform", 0.01, 0.01), mode="interval", names=("base",), interval_s=(0.05, 0.05),
                     duration_s=0.03)
    env = BatchEnv(still_at_the_target(disturbance_std=0.01), 4, randomization=(gust,))
    env.reset()
    xfrc = env.data_field("xfrc_applied")
    base, hover = env.task.base_body, env.task.hover_thrust[0]
    forces = []
    for _ in range(9):
        env.step(torch.full((4, 4), 2 * hover - 1))
        forces.append(xfrc[:, base, :3] - env.task.disturbance)
    assert np.allclose(forces[3], 0) and np.allclose(np.linalg.norm(forces[5], axis=1), 0.01)   # on at 50 ms
    assert np.allclose(forces[8], 0)                                                            # off 30 ms later


def test_a_ppo_run_keeps_the_best_judged_policy_and_exports_it(tmp_path):
    from s2r.policies.train import default_config, load_policy, train

    cfg = default_config("quadrotor_hover", num_envs=16, iterations=3, evaluate_every=1, eval_episodes=4)
    metrics = train(cfg, tmp_path, progress=False)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    best = checkpoint["extra"]["best_model"]
    assert metrics["best_iteration"] == checkpoint["extra"]["best_iteration"] >= 1
    assert metrics["best_rule_success_rate"] >= metrics["final_rule_success_rate"]
    policy, _, _ = load_policy(tmp_path)
    assert all(torch.equal(value, best[key]) for key, value in policy.state_dict().items())
    if metrics["best_iteration"] < 3:                               # not the last policy
        assert not all(torch.equal(value, checkpoint["model"][key]) for key, value in best.items())


@pytest.mark.slow
def test_ppo_trains_quadrotor_hover_to_the_hover_rule(tmp_path):
    """`s2r train quadrotor_hover`'s defaults: about 7 min on an idle 2-core machine (docs/quadrotor.md)."""
    from s2r.policies.train import default_config, train

    metrics = train(default_config("quadrotor_hover"), tmp_path, progress=False)
    assert metrics["best_rule_success_rate"] >= 0.95, metrics
