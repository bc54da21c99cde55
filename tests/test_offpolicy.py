"""TD3 and SAC: they learn the pendulum in seconds, checkpoint and export like PPO, and stop on NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2r.policies.export import export_onnx
from s2r.policies.offpolicy.runner import OffPolicyRunner
from s2r.policies.offpolicy.sac import SACConfig
from s2r.policies.offpolicy.td3 import TD3Config
from s2r.policies.runner import TrainingDivergedError
from s2r.runtime import load_runtime
from s2r.sim.env import make_env

EPISODE_STEPS = 250   # the pendulum's 5 s at 50 Hz


def deterministic_return(act) -> float:
    """Mean return of 64 pendulum episodes from the same initial states, `act` choosing the actions."""
    env = make_env("pendulum", 64, seed=1)
    obs, total = env.reset(), torch.zeros(64)
    for _ in range(EPISODE_STEPS):
        with torch.no_grad():
            obs, reward, *_ = env.step(act(obs["policy"]))
        total += reward
    return total.mean().item()


def random_return() -> float:
    generator = torch.Generator().manual_seed(0)
    return deterministic_return(lambda obs: 2 * torch.rand(obs.shape[0], 1, generator=generator) - 1)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("algo", [
    TD3Config(learning_starts=320, batch_size=256, gamma=0.98, exploration_noise=0.3, tau=0.01),
    SACConfig(learning_starts=320, batch_size=128, actor_learning_rate=3e-3, critic_learning_rate=3e-3, gamma=0.97),
], ids=["td3", "sac"])
def test_an_off_policy_learner_swings_the_pendulum_better_than_chance_in_seconds(algo):
    runner = OffPolicyRunner(make_env("pendulum", 16, seed=0), algo=algo, log_dir=None, seed=0, progress=False)
    summary = runner.learn(3500)
    assert summary["env_steps"] == 3500 * 16 and summary["updates"] == (3500 - 19) * algo.updates_per_step  # from the 20th step on
    learned, chance = deterministic_return(runner.agent.act_inference), random_return()
    assert learned > chance + 25, (learned, chance)


def test_a_td3_checkpoint_resumes_the_same_actor_targets_and_replay_and_exports_it_with_its_contract(tmp_path):
    env = make_env("pendulum", 8, seed=0)
    runner = OffPolicyRunner(env, algo=TD3Config(learning_starts=64, batch_size=32), log_dir=tmp_path, seed=0,
                             progress=False)
    runner.learn(60)
    runner.save(tmp_path / "checkpoint.pt", extra={"task": "pendulum"}, replay=True)
    resumed = OffPolicyRunner(make_env("pendulum", 8, seed=0), algo=TD3Config(), log_dir=None, seed=1, progress=False)
    assert resumed.load(tmp_path / "checkpoint.pt") == {"task": "pendulum"} and resumed.env_steps == 60
    obs = torch.randn(5, env.obs_dims["policy"])
    runner.agent.eval(), resumed.agent.eval()
    assert torch.equal(runner.agent.act_inference(obs), resumed.agent.act_inference(obs))
    assert torch.equal(runner.alg.target_actor.net(obs), resumed.alg.target_actor.net(obs))
    assert resumed.alg.num_updates == runner.alg.num_updates > 0
    assert resumed.buffer.size == runner.buffer.size == 60 * 8
    mine, theirs = (r.buffer.sample(64, torch.Generator().manual_seed(5)) for r in (runner, resumed))
    assert torch.equal(mine.critic_obs, theirs.critic_obs) and torch.equal(mine.rewards, theirs.rewards)
    with pytest.raises(ValueError, match="algorithm: checkpoint is 'td3'"):
        OffPolicyRunner(make_env("pendulum", 8), algo=SACConfig(), log_dir=None, seed=0,
                        progress=False).load(tmp_path / "checkpoint.pt")

    path = export_onnx(runner.agent, env.contract(provenance={"task": "pendulum", "trainer": "s2r.td3"}),
                       tmp_path / "policy.onnx")
    runtime = load_runtime(path, env.spec, num_envs=8)
    clean = env.reset(seed=3)["critic"][:, : env.obs_dims["policy"]]   # the critic's noise-free policy terms
    from_onnx = runtime.action(env.read_state(), {})
    with torch.no_grad():
        from_torch = runner.agent.act_inference(clean).numpy()
    np.testing.assert_allclose(from_onnx, env.action_mapping.clip_action(from_torch), atol=1e-5)


class NaNRewardAfter:
    """The pendulum env whose reward turns NaN in world 2 after `steps` steps."""

    def __init__(self, steps: int) -> None:
        self.env, self.steps = make_env("pendulum", 4), steps
        self.num_envs, self.num_actions, self.obs_dims = self.env.num_envs, self.env.num_actions, self.env.obs_dims

    def reset(self, seed=None):
        return self.env.reset(seed)

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.steps -= 1
        if self.steps < 0:
            reward[2] = float("nan")
        return obs, reward, terminated, truncated, info


def test_sac_stops_at_a_nan_reward_naming_the_world_and_the_step():
    runner = OffPolicyRunner(NaNRewardAfter(10), algo=SACConfig(learning_starts=8, batch_size=8), log_dir=None,
                             seed=0, progress=False)
    with pytest.raises(TrainingDivergedError, match=r"non-finite reward at iteration 10: env ids \[2\]"):
        runner.learn(100)


def test_off_policy_training_writes_a_run_directory_with_the_rule_judged_on_fresh_episodes(tmp_path):
    from s2r.policies.offpolicy.train import OffPolicyTrainConfig, train_offpolicy

    cfg = OffPolicyTrainConfig(task="quadrotor_hover", num_envs=8, env_steps=400, eval_episodes=16,
                               td3=TD3Config(learning_starts=200, buffer_size=1000, batch_size=32))
    metrics = train_offpolicy(cfg, tmp_path, progress=False)
    for name in ("checkpoint.pt", "config.yaml", "metrics.json", "curve.json", "training_curve.png", "policy.onnx"):
        assert (tmp_path / name).is_file(), name
    assert next(tmp_path.glob("events.*"))
    assert metrics["env_steps"] == 400 and 0.0 <= metrics["final_rule_success_rate"] <= 1.0
    assert metrics["wall_s_to_rule"] is None                     # 400 transitions do not fly
    assert metrics["best_rule_success_rate"] >= metrics["final_rule_success_rate"]
    # the exported policy is the best actor judged, kept in the checkpoint beside the last one
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["replay"]["size"] == 400 and set(checkpoint["extra"]["best_actor"]) > {"actor_normalizer.mean"}


def test_a_reward_curriculum_prices_the_transitions_collected_before_it_with_its_new_weights():
    """Learning to Fly recomputes its replay's rewards when the curriculum raises a weight: s2r's replay keeps each
    reward term's value and prices a sampled transition with the weights in effect when it is sampled."""
    from s2r.sim.env import BatchEnv
    from s2r.sim.quadrotor import QuadrotorHover, RewardCurriculum

    env = BatchEnv(QuadrotorHover(curriculum=RewardCurriculum(every_transitions=320)), 16, seed=0)
    runner = OffPolicyRunner(env, algo=TD3Config(learning_starts=10**9, buffer_size=4000), log_dir=None, seed=0,
                             progress=False)
    runner.learn(10)                                     # 160 transitions at the first stage
    start_weights = torch.from_numpy(env.reward_weights()).float()
    batch = runner.buffer.sample(64, torch.Generator().manual_seed(0))
    then = runner.price(batch).rewards
    np.testing.assert_allclose(then, batch.reward_terms @ start_weights, atol=1e-5)   # what the env paid
    runner.learn(30)                                     # 640 transitions: two stages on
    weights = torch.from_numpy(env.reward_weights()).float()
    position = env.reward_terms.index("position_error_sq")
    assert env.task.stage == 2 and weights[position] == pytest.approx(1.44 * start_weights[position])
    now = runner.price(batch).rewards
    np.testing.assert_allclose(now - then, batch.reward_terms @ (weights - start_weights), atol=1e-5)
    assert (now < then).all()                            # the same flights cost more under the raised weights


def test_s2r_train_refuses_an_algorithm_a_task_cannot_take_and_ppo_options_with_td3_in_one_line():
    import subprocess
    import sys

    def train(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "s2r.apps.cli", "train", *args], capture_output=True, text=True,
                              check=False)

    wrong_task = train("cartpole", "--algo", "td3")
    assert wrong_task.returncode == 2
    assert wrong_task.stderr.strip().splitlines() == [
        "s2r train: task 'cartpole': off-policy training (--algo td3|sac) takes pendulum, quadrotor_hover"]
    ppo_only = train("quadrotor_hover", "--algo", "sac", "--iterations", "3")
    assert ppo_only.returncode == 2 and ppo_only.stderr.strip() == "s2r train: --iterations does not apply to --algo sac"


def test_a_world_that_fails_is_stored_with_the_state_it_failed_in_not_the_one_it_was_reset_to():
    """Across auto-resets the replay pairs each transition with the state its action led to: a failed world's
    next critic view is outside the box (no bootstrapping from the reset state), a flying world's is the next
    policy view (the same state, the actor's noise aside)."""
    env = make_env("quadrotor_hover", 16, seed=3)
    runner = OffPolicyRunner(env, algo=TD3Config(learning_starts=10**9, buffer_size=4000), log_dir=None, seed=0,
                             progress=False)
    runner.learn(150)                                     # uniform random actions: most worlds crash and reset
    batch = runner.buffer.sample(runner.buffer.size, torch.Generator().manual_seed(0))
    failed = batch.terminated > 0
    assert failed.sum() > 16
    box = env.task.config.terminations[0].params
    position, lin_vel = batch.next_critic_obs[:, :3], batch.next_critic_obs[:, 12:15]
    outside = ((position.abs() > box.position_m).any(1) | (lin_vel.abs() > box.lin_vel).any(1)
               | (batch.next_critic_obs[:, 15:18].abs() > box.ang_vel).any(1))
    assert outside[failed].all() and not outside[~failed].any()
    assert batch.next_policy_obs[~failed, :3] == pytest.approx(position[~failed], abs=0.01)
    # a failing step's next state follows from its own state: position moved by at most 0.1 m in 10 ms
    assert (batch.next_critic_obs[:, :3] - batch.critic_obs[:, :3]).abs().max() < 0.1
