"""Training on the real simulator: PPO learns, runs are reproducible, bad runs stop loudly."""

import json

import pytest
import torch

from s2r.observations import TARGET
from s2r.policies.evaluate import evaluate
from s2r.policies.export import export_onnx
from s2r.policies.ppo import ActorCriticConfig, PPOConfig
from s2r.policies.runner import OnPolicyRunner, TrainingDivergedError
from s2r.policies.train import CheckpointError, default_config, load_policy, train
from s2r.sim.env import make_env


def test_ppo_learns_pendulum_swing_up_and_the_exported_policy_keeps_it(tmp_path):
    metrics = train(default_config("pendulum", iterations=100), tmp_path / "run", progress=False)
    assert metrics["success_rate"] >= 0.75
    assert {"mean_return", "success_rate", "env_steps", "wall_s", "env_steps_per_s"} <= set(metrics)
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 0
    policy, contract, _ = load_policy(tmp_path / "run")
    export_onnx(policy, contract, tmp_path / "pendulum.onnx")
    result = evaluate(tmp_path / "pendulum.onnx", episodes=64)
    assert result["task"] == "pendulum" and result["success_rate"] >= 0.75


def test_the_same_seed_trains_the_same_policy(tmp_path):
    def weights(name, seed=5):
        train(default_config("pendulum", num_envs=32, iterations=3, seed=seed), tmp_path / name, progress=False)
        return load_policy(tmp_path / name)[0].state_dict()

    first, second, other = weights("a"), weights("b"), weights("c", seed=6)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first), "another seed trains another policy"


def test_training_resumes_and_refuses_another_tasks_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(default_config("pendulum", num_envs=16, iterations=2), run, progress=False)
    metrics = train(default_config("pendulum", num_envs=16, iterations=2), run, resume=True, progress=False)
    assert metrics["iterations"] == 4 and json.loads((run / "metrics.json").read_text())["iterations"] == 4
    with pytest.raises(CheckpointError, match="checkpoint is for 'pendulum', asked to train 'cartpole'"):
        train(default_config("cartpole", num_envs=16, iterations=1), run, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="checkpoint is for 'pendulum', not 'reach'"):
        load_policy(run, task="reach")
    with pytest.raises(CheckpointError, match="no checkpoint.pt"):
        load_policy(tmp_path / "nothing")


def test_a_position_controlled_task_trains_and_saves(tmp_path):
    metrics = train(default_config("reach", num_envs=16, iterations=1), tmp_path / "reach", progress=False)
    assert metrics["iterations"] == 1
    _, contract, _ = load_policy(tmp_path / "reach")
    assert contract.action.mode == "position" and contract.action.offset == (0.0, -0.5, 1.0)


def small_runner(task: str) -> tuple[OnPolicyRunner, object]:
    env = make_env(task, 16, seed=0)
    return OnPolicyRunner(env, ppo=PPOConfig(num_steps_per_env=8), model=ActorCriticConfig(), log_dir=None,
                          seed=0, progress=False), env


def test_a_nan_observation_stops_training_and_names_the_iteration():
    runner, env = small_runner("reach")
    runner.learn(1)
    env.inputs[TARGET][3] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"non-finite policy observation at iteration 1: env ids \[3\]"):
        runner.learn(1)


def test_a_nan_action_stops_training_and_names_the_iteration():
    runner, _ = small_runner("cartpole")
    runner.learn(2)
    with torch.no_grad():
        runner.policy.actor[0].weight[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="non-finite action at iteration 2"):
        runner.learn(1)


def test_a_world_whose_physics_blows_up_ends_its_episode_and_is_counted():
    env = make_env("pendulum", 4, seed=0)
    env.reset()
    env.model_field("dof_damping")[1, 0] = float("inf")
    _, _, terminated, _, info = env.step(torch.zeros(4, 1))
    assert terminated.tolist() == [False, True, False, False] and info["diverged"] == 1
