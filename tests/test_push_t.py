"""push_t: the T's coverage of the goal, the simulated task, and the scripted expert that demonstrates it."""

import numpy as np
import pytest
import torch

from s2r.dataset import ACTION, ACTION_PLAN, OBS_ENV_STATE, OBS_STATE, load_dataset, policy_observation
from s2r.observations import OBJECT_POSE
from s2r.sim.demos import ExpertPlanner, evaluate_expert, make_expert, record_demos
from s2r.sim.env import BatchEnv
from s2r.sim.push_t import GOAL_POSE, T_AREA, T_RECTS, coverage, rotate
from s2r.sim.tasks import make_task


def test_a_block_on_the_goal_covers_all_of_it_and_one_far_away_none():
    assert coverage(GOAL_POSE[None]) == pytest.approx([1.0])
    assert coverage(np.array([[0.2, -0.2, 0.3]])) == pytest.approx([0.0])
    # The same T turned by a full turn is the same T.
    assert coverage(GOAL_POSE + np.array([0.0, 0.0, 2 * np.pi])) == pytest.approx([1.0])


def test_a_block_slid_26_25_mm_along_its_stem_covers_half_of_the_goal():
    # Slid by d along the T's own y axis the overlap is 0.0063 m² − 0.12 m · d, half the area at d = 26.25 mm.
    d = T_AREA / 2 / 0.12
    shifted = GOAL_POSE + np.array([*rotate(np.array([0.0, d]), GOAL_POSE[2]), 0.0])
    poses = np.stack([GOAL_POSE, shifted, [0.3, 0.3, 0.0]])
    assert coverage(poses) == pytest.approx([1.0, 0.5, 0.0], abs=0.01)


def test_the_scene_draws_the_t_and_the_goal_that_coverage_measures():
    env = BatchEnv(make_task("push_t"), 1)
    model = env.model
    for name, (cx, cy, hx, hy) in zip(("block_bar", "block_stem"), T_RECTS, strict=True):
        geom = model.geom(name)
        assert np.allclose(geom.size[:2], [hx, hy]) and np.allclose(geom.pos[:2], [cx, cy])
    goal = model.body("goal")
    assert np.allclose(goal.pos[:2], GOAL_POSE[:2])
    assert np.isclose(2 * np.arctan2(goal.quat[3], goal.quat[0]), GOAL_POSE[2])


def test_the_policy_sees_the_pusher_and_the_block_pose_and_is_rewarded_with_coverage():
    env = BatchEnv(make_task("push_t"), 4, seed=3)
    obs = env.reset()["policy"].numpy()
    assert obs.shape == (4, 8)
    pose = env.task.block_pose(env)
    assert np.allclose(obs[:, 4:], np.column_stack([pose[:, :2], np.sin(pose[:, 2]), np.cos(pose[:, 2])]), atol=1e-6)
    assert (coverage(pose) < 0.5).all(), "episodes start away from the goal"
    obs, reward, *_ = env.step(torch.zeros(4, 2))
    assert np.allclose(obs["policy"].numpy()[:, 4:], env.inputs[OBJECT_POSE], atol=1e-6)
    assert np.allclose(reward.numpy(), env.task.coverage(env), atol=1e-6)
    assert np.allclose(obs["policy"].numpy()[:, :2], env.read_state().q, atol=1e-6)


def test_the_scripted_expert_solves_most_push_t_episodes():
    result = evaluate_expert("push_t", episodes=8, seed=5)
    assert result["success_rate"] >= 0.5
    assert result["mean_final_reward"] > 0.9


def _expert_on_frames(episode: dict) -> np.ndarray:
    """The scripted expert's raw actions for recorded frames, each frame on its own."""
    env = BatchEnv(make_task("push_t"), 1)
    expert = make_expert("push_t", "scripted", env)
    return expert(policy_observation(episode))


def test_the_scripted_expert_acts_on_what_the_policy_sees_and_nothing_else(tmp_path):
    # A recorded frame's action is the expert applied to that frame's observation alone: no hidden phase.
    record_demos("push_t", episodes=2, out=tmp_path / "demos", seed=4, num_envs=2)
    for episode in load_dataset(tmp_path / "demos").episodes:
        assert np.allclose(_expert_on_frames(episode), episode[ACTION], atol=1e-6)


def test_recorded_push_t_frames_hold_the_pusher_as_state_the_block_as_environment_and_the_contract(tmp_path):
    # LeRobot's push-T layout: observation.state the agent, observation.environment_state the object's pose.
    record_demos("push_t", episodes=1, out=tmp_path / "demos", seed=4, num_envs=1)
    dataset = load_dataset(tmp_path / "demos")
    state, environment = dataset.features[OBS_STATE], dataset.features[OBS_ENV_STATE]
    assert state["names"] == ["joint_pos.x", "joint_pos.y", "joint_vel.x", "joint_vel.y"]
    assert environment["names"] == ["object_pose.x", "object_pose.y", "object_pose.sin_yaw", "object_pose.cos_yaw"]
    contract = BatchEnv(make_task("push_t"), 1).contract()
    assert dataset.contract.observation == contract.observation
    assert dataset.contract.observation_sizes == (2, 2, 4) and dataset.contract.action == contract.action
    assert dataset.contract.robot == dataset.robot == "pusher"
    assert dataset.contract.provenance["recorder"] == "s2r.sim.demos"
    block = dataset.episodes[0][OBS_ENV_STATE]
    assert np.allclose(np.square(block[:, 2:]).sum(1), 1.0, atol=1e-5), "sin² + cos² of the block's yaw"


def test_diffusion_training_windows_are_the_policy_observations_the_env_gave_for_the_recorded_states(tmp_path):
    # The dataset splits the observation into state and environment state; training joins it back to
    # exactly what the policy observes (terms in order, same values), so the documented results stay true.
    from s2r.policies.diffusion.train import make_windows

    record_demos("push_t", episodes=2, out=tmp_path / "demos", seed=6, num_envs=2)
    episodes = load_dataset(tmp_path / "demos").episodes
    env = BatchEnv(make_task("push_t"), 2, seed=6, nthread=1)
    expert = make_expert("push_t", "scripted", env)
    obs = env.reset()["policy"].numpy()
    seen = [[], []]
    for _ in range(max(len(e[ACTION]) for e in episodes)):
        for world in range(2):
            seen[world].append(obs[world].astype(np.float32))
        obs = env.step(torch.from_numpy(expert(obs)))[0]["policy"].numpy()
    expected = np.concatenate([np.stack(seen[world][:len(e[ACTION])]) for world, e in enumerate(episodes)])
    windows, _ = make_windows(episodes, obs_horizon=2, pred_horizon=16)
    assert windows.shape == (len(expected), 2, 8)
    assert np.array_equal(windows[:, -1], expected.astype(np.float64))


def test_noise_injected_demonstrations_execute_perturbed_actions_and_record_the_clean_expert_action(tmp_path):
    clean = record_demos("push_t", episodes=2, out=tmp_path / "clean", seed=4, num_envs=2)
    noisy = record_demos("push_t", episodes=2, out=tmp_path / "noisy", seed=4, num_envs=2, action_noise=0.02)
    assert noisy["action_noise"] == 0.02 and clean["action_noise"] == 0.0
    clean_episode, noisy_episode = (load_dataset(tmp_path / name).episodes[0] for name in ("clean", "noisy"))
    steps = min(len(clean_episode[OBS_STATE]), len(noisy_episode[OBS_STATE]))
    # The same start, then the noise moves the pusher elsewhere than the clean expert would have.
    assert np.allclose(clean_episode[OBS_STATE][0], noisy_episode[OBS_STATE][0])
    assert not np.allclose(clean_episode[OBS_STATE][:steps], noisy_episode[OBS_STATE][:steps], atol=1e-3)
    # What is recorded is the expert's own action in the state the noise led to.
    assert np.allclose(_expert_on_frames(noisy_episode), noisy_episode[ACTION], atol=1e-6)
    with pytest.raises(ValueError, match="action_noise"):
        record_demos("push_t", episodes=1, out=tmp_path / "bad", action_noise=-0.1)


def test_successful_demonstrations_end_once_the_expert_has_placed_the_block_and_rested(tmp_path):
    # Not at the 95 % threshold: the success held for hold_s, the expert pushed on to its own stop
    # coverage and backed off, so an imitator learns where the placement really ends.
    result = record_demos("push_t", episodes=2, out=tmp_path / "demos", seed=4, num_envs=2, hold_s=2.0)
    assert result["success_rate"] == 1.0
    for episode in load_dataset(tmp_path / "demos").episodes:
        block = episode[OBS_ENV_STATE]
        pose = np.column_stack([block[:, :2], np.arctan2(block[:, 2], block[:, 3])])
        assert (coverage(pose[-15:]) > 0.95).all()
        assert coverage(pose[-1:])[0] >= 0.98
        assert np.allclose(episode[ACTION][-1], episode[OBS_STATE][-1, :2] / 0.25, atol=1e-3), \
            "the last action holds still"
    with pytest.raises(ValueError, match="hold_s"):
        record_demos("push_t", episodes=1, out=tmp_path / "bad", hold_s=0.1)


def test_an_env_copied_mid_episode_continues_exactly_as_the_original_under_the_same_actions():
    env, copy = (BatchEnv(make_task("push_t"), 3, seed=seed, nthread=1) for seed in (0, 9))
    expert = make_expert("push_t", "scripted", env)
    obs = env.reset()["policy"].numpy()
    copy.reset()
    for _ in range(20):
        obs = env.step(torch.from_numpy(expert(obs)))[0]["policy"].numpy()
    copy.copy_state(env)
    for _ in range(10):
        action = torch.from_numpy(expert(obs))
        obs, reward, *_ = env.step(action)
        copy_obs, copy_reward, *_ = copy.step(action)
        assert torch.equal(obs["policy"], copy_obs["policy"]) and torch.equal(reward, copy_reward)
        obs = obs["policy"].numpy()
    assert (copy.episode_length == env.episode_length).all()
    with pytest.raises(ValueError, match="push_t × 2"):
        BatchEnv(make_task("push_t"), 2, nthread=1).copy_state(env)
    randomized = BatchEnv(make_task("reach"), 1, nthread=1, randomization=make_task("reach").config.randomization)
    with pytest.raises(NotImplementedError, match="randomized model parameters are not copied"):
        randomized.copy_state(randomized)
    with pytest.raises(ValueError, match="plan_horizon: expected >= 1, got 0"):
        ExpertPlanner(env, "scripted", 0)


def test_expert_plans_are_what_the_expert_does_next_without_the_recordings_noise(tmp_path):
    # Without noise a frame's plan is the episode's own next actions (the copy runs the same physics);
    # with noise its first action is the recorded one and the rest leave out the noise that followed.
    clean = record_demos("push_t", episodes=2, out=tmp_path / "clean", seed=4, num_envs=2, plan_horizon=5)
    assert clean["plan_horizon"] == 5
    for episode in load_dataset(tmp_path / "clean").episodes:
        actions = episode[ACTION]
        plans = episode[ACTION_PLAN].reshape(len(actions), 5, 2)
        for k in range(5):
            assert np.array_equal(plans[:len(actions) - k, k], actions[k:])
    record_demos("push_t", episodes=2, out=tmp_path / "noisy", seed=4, num_envs=2, plan_horizon=5, action_noise=0.03)
    for episode in load_dataset(tmp_path / "noisy").episodes:
        actions = episode[ACTION]
        plans = episode[ACTION_PLAN].reshape(len(actions), 5, 2)
        assert np.array_equal(plans[:, 0], actions)
        assert not np.allclose(plans[:-1, 1], actions[1:], atol=1e-3)
    with pytest.raises(ValueError, match="plan_horizon"):
        record_demos("push_t", episodes=1, out=tmp_path / "bad", plan_horizon=-1)


def test_push_t_mirrored_is_push_t_the_expert_does_the_mirror_image_of_what_it_does():
    task, rng = make_task("push_t"), np.random.default_rng(0)
    env = BatchEnv(task, 1)
    expert = make_expert("push_t", "scripted", env)
    n = 500
    pose = np.column_stack([rng.uniform(-0.15, 0.15, (n, 2)), rng.uniform(-np.pi, np.pi, n)])
    obs = np.column_stack([rng.uniform(-0.2, 0.2, (n, 2)), rng.normal(0, 0.1, (n, 2)), pose[:, :2],
                           np.sin(pose[:, 2]), np.cos(pose[:, 2])])
    mirrored_obs, mirrored_actions = task.mirror(obs, expert(obs))
    mirrored_pose = np.column_stack([mirrored_obs[:, 4:6], np.arctan2(mirrored_obs[:, 6], mirrored_obs[:, 7])])
    assert np.allclose(coverage(mirrored_pose), coverage(pose))
    assert np.allclose(expert(mirrored_obs), mirrored_actions, atol=1e-6)
    assert np.allclose(task.mirror(*task.mirror(obs, expert(obs)))[0], obs), "a reflection undoes itself"
    with pytest.raises(NotImplementedError, match="cartpole"):
        make_task("cartpole").mirror(obs, obs)
