"""PPO trainer: normalization, GAE, checkpoints, divergence guard, learning and determinism.

These tests need no simulator: `PointMassToZero` is a small batched torch
environment that follows the runner's `VecEnv` protocol.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from s2r.policies.normalization import EmpiricalNormalization
from s2r.policies.ppo import PPO, ActorCritic, ActorCriticConfig, PPOConfig
from s2r.policies.runner import OnPolicyRunner, TrainingDivergedError

SMALL_MODEL = ActorCriticConfig(actor_hidden=(32, 32), critic_hidden=(32, 32))
FAST_PPO = PPOConfig(num_steps_per_env=16, num_mini_batches=2, num_learning_epochs=4, learning_rate=3e-3)


class PointMassToZero:
    """Point masses on a line, each pushed by its action; the reward is −|position|.

    Positions start uniform in [−1, 1] and move by 0.1·clip(action, ±1) per
    step. An episode terminates past |x| > 2 and is truncated after
    `episode_length` steps; it succeeds if it ends within 0.1 of zero. The
    critic also sees the fraction of the episode left. A broken sensor can be
    simulated: env `sensor_fault_env` then reads NaN from step `sensor_fault_step` on.
    """

    num_actions = 1
    obs_dims = {"policy": 1, "critic": 2}

    def __init__(self, num_envs: int = 64, episode_length: int = 20, *,
                 sensor_fault_env: int | None = None, sensor_fault_step: int = 0) -> None:
        self.num_envs, self.episode_length = num_envs, episode_length
        self.sensor_fault_env, self.sensor_fault_step = sensor_fault_env, sensor_fault_step

    def reset(self, seed: int | None = None) -> dict[str, torch.Tensor]:
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self.pos = self._initial_positions(self.num_envs)
        self.t = torch.zeros(self.num_envs, dtype=torch.int64)
        self.episode_return = torch.zeros(self.num_envs)
        self.total_steps = 0
        return self._obs()

    def step(self, actions: torch.Tensor):
        self.pos = self.pos + 0.1 * actions[:, 0].clamp(-1.0, 1.0)
        self.t += 1
        self.total_steps += 1
        reward = -self.pos.abs()
        self.episode_return += reward
        terminated = self.pos.abs() > 2.0
        truncated = self.t >= self.episode_length
        done = terminated | truncated
        info = {
            "final_critic_obs": self._obs()["critic"],
            "episode": {
                "return": self.episode_return[done].clone(),
                "length": self.t[done].float(),
                "success": (self.pos[done].abs() < 0.1).float(),
            },
        }
        self.pos[done] = self._initial_positions(int(done.sum()))
        self.t[done] = 0
        self.episode_return[done] = 0.0
        return self._obs(), reward, terminated, truncated, info

    def _initial_positions(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * 2.0 - 1.0

    def _obs(self) -> dict[str, torch.Tensor]:
        policy = self.pos[:, None].clone()
        if self.sensor_fault_env is not None and self.total_steps >= self.sensor_fault_step:
            policy[self.sensor_fault_env] = torch.nan
        time_left = 1.0 - self.t[:, None].float() / self.episode_length
        return {"policy": policy, "critic": torch.cat([self.pos[:, None], time_left], dim=1)}


def make_runner(seed: int = 0, env: PointMassToZero | None = None) -> OnPolicyRunner:
    return OnPolicyRunner(env or PointMassToZero(), ppo=FAST_PPO, model=SMALL_MODEL, log_dir=None, seed=seed,
                          progress=False)


def greedy_return(policy: ActorCritic, num_envs: int = 256) -> float:
    """Mean undiscounted return of the mean action over one episode per env."""
    env = PointMassToZero(num_envs)
    obs = env.reset(seed=123)
    total = torch.zeros(num_envs)
    with torch.no_grad():
        for _ in range(env.episode_length):
            obs, reward, *_ = env.step(policy.act_inference(obs["policy"]))
            total += reward
    return total.mean().item()


def test_normalizer_tracks_the_mean_and_variance_of_everything_it_saw():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[3.0, -1.0, 0.0], scale=[2.0, 0.5, 1e-3], size=(n, 3)) for n in (7, 50, 1, 300)]
    norm = EmpiricalNormalization(3)
    for batch in batches:
        norm.update(torch.tensor(batch, dtype=torch.float32))
    seen = np.concatenate(batches)
    np.testing.assert_allclose(norm.mean.numpy(), seen.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.var.numpy(), seen.var(0), rtol=1e-4)
    assert int(norm.count) == len(seen)

    merged = EmpiricalNormalization(3)
    merged.merge(norm.mean, norm.var, int(norm.count))
    torch.testing.assert_close(merged.mean, norm.mean)

    norm.eval()
    norm.update(torch.full((10, 3), 1e6))
    assert int(norm.count) == len(seen), "eval mode must not change the statistics"
    assert norm(torch.full((1, 3), 1e6)).max().item() == norm.clip


def test_gae_handles_terminations_and_bootstraps_time_outs():
    # Critic fixed at V ≡ 1, γ = λ = 0.5, three steps of reward 1.
    # env 0 terminates at t=1: A = [0.5 + 0.25·0, 1 + 0 − 1, 1 + 0.5 − 1] = [0.5, 0, 0.5]
    # env 1 times out at t=1 with V(final) = 4, so r_1 = 1 + 0.5·4 = 3: A = [0.5 + 0.25·2, 3 − 1, 0.5] = [1, 2, 0.5]
    # env 2 terminates and is truncated at t=1: a termination, no bootstrap, same as env 0.
    policy = ActorCritic(SMALL_MODEL, num_policy_obs=1, num_critic_obs=1, num_actions=1)
    with torch.no_grad():
        policy.critic[-1].weight.zero_()
        policy.critic[-1].bias.fill_(1.0)
    ppo = PPO(policy, PPOConfig(num_steps_per_env=3, gamma=0.5, lam=0.5), num_envs=3)
    obs = torch.zeros(3, 1)
    no = torch.zeros(3, dtype=torch.bool)
    ends_at_1 = (torch.tensor([True, False, True]), torch.tensor([False, True, True]))  # (terminated, truncated)
    for terminated, truncated in [(no, no), ends_at_1, (no, no)]:
        ppo.act(obs, obs)
        ppo.process_env_step(torch.ones(3), terminated, truncated, final_values=torch.full((3,), 4.0))
    ppo.compute_returns(obs)

    advantages = torch.tensor([[0.5, 1.0, 0.5], [0.0, 2.0, 0.0], [0.5, 0.5, 0.5]])
    torch.testing.assert_close(ppo.storage.returns, advantages + 1.0)
    torch.testing.assert_close(ppo.storage.advantages, (advantages - advantages.mean()) / advantages.std(),
                               atol=1e-6, rtol=1e-5)


def test_checkpoint_round_trip_restores_parameters_and_resumes_counting(tmp_path: Path):
    trained = make_runner(seed=0)
    trained.learn(2)
    path = tmp_path / "model.pt"
    trained.save(path, extra={"task": "point_mass", "ppo": asdict(FAST_PPO), "obs_names": ["pos"]})
    assert not path.with_suffix(".tmp").exists()

    raw = torch.load(path, weights_only=True)
    assert raw["iteration"] == 2

    resumed = make_runner(seed=1)
    extra = resumed.load(path)
    assert extra == {"task": "point_mass", "ppo": asdict(FAST_PPO), "obs_names": ["pos"]}
    for name, tensor in trained.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert resumed.alg.learning_rate == trained.alg.learning_rate
    resumed.learn(1)
    assert resumed.current_iteration == 3


def test_a_checkpoint_with_objects_weights_only_refuses_is_not_written(tmp_path: Path):
    runner = make_runner()
    path = tmp_path / "model.pt"
    runner.save(path, extra={"task": "point_mass"})
    with pytest.raises(TypeError, match="weights_only"):
        runner.save(path, extra={"config": FAST_PPO})
    assert torch.load(path, weights_only=True)["extra"] == {"task": "point_mass"}
    assert not path.with_suffix(".tmp").exists()


def test_a_broken_sensor_stops_training_and_names_env_column_and_iteration():
    # 16 steps per iteration: step 40 falls in iteration 2 (steps 33–48).
    runner = make_runner(env=PointMassToZero(sensor_fault_env=3, sensor_fault_step=40))
    with pytest.raises(TrainingDivergedError, match=r"policy observation at iteration 2: env ids \[3\], columns \[0\]"):
        runner.learn(5)
    assert runner.current_iteration == 2


def test_ppo_learns_to_drive_the_point_mass_to_zero():
    runner = make_runner(seed=0)
    before = greedy_return(runner.policy)
    summary = runner.learn(40)
    after = greedy_return(runner.policy)
    assert after > before + 2.0 and after > -3.0, (before, after)
    assert summary["success_rate"] > 0.5
    assert summary["iterations"] == 40 and summary["env_steps"] == 40 * 64 * FAST_PPO.num_steps_per_env


def test_two_runs_with_the_same_seed_end_with_identical_parameters():
    def train(seed: int) -> dict[str, torch.Tensor]:
        runner = make_runner(seed=seed)
        runner.learn(3)
        return runner.policy.state_dict()

    same, also_same, other = train(7), train(7), train(8)
    for name in same:
        torch.testing.assert_close(also_same[name], same[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(other[name], same[name]) for name in same)


def test_time_outs_are_bootstrapped_from_the_critic_only_in_steps_where_a_world_timed_out():
    runner = make_runner()
    critic_obs = torch.randn(4, 2)
    no = torch.zeros(4, dtype=torch.bool)
    timed_out = torch.tensor([False, True, False, False])
    with torch.no_grad():
        torch.testing.assert_close(runner._final_values(critic_obs, no, timed_out),
                                   runner.policy.evaluate(critic_obs), rtol=0, atol=0)
        # a world that failed in its last step is no time-out: nothing to bootstrap, the critic does not run
        critic_obs[:] = torch.nan
        assert runner._final_values(critic_obs, timed_out, timed_out).tolist() == [0.0] * 4
        assert runner._final_values(critic_obs, no, no).tolist() == [0.0] * 4


def test_finite_observations_whose_sum_overflows_do_not_stop_training():
    runner = make_runner()
    runner._check_finite("critic observation", torch.full((4, 2), 3e38))   # the sum is inf in float32
    with pytest.raises(TrainingDivergedError, match=r"critic observation at iteration 0: env ids \[2\], columns \[1\]"):
        runner._check_finite("critic observation", torch.zeros(4, 2).index_put_((torch.tensor(2), torch.tensor(1)),
                                                                                 torch.tensor(torch.inf)))


def test_every_epoch_trains_on_each_transition_once_with_its_own_fields():
    storage = PPO(ActorCritic(SMALL_MODEL, num_policy_obs=1, num_critic_obs=2, num_actions=1),
                  PPOConfig(num_steps_per_env=3, num_mini_batches=2, num_learning_epochs=2), num_envs=5).storage
    ids = torch.arange(15, dtype=torch.float32).reshape(3, 5)      # transition t·5 + env, in every field
    storage.policy_obs[:], storage.critic_obs[:], storage.actions[:] = ids[..., None], ids[..., None], ids[..., None]
    storage.log_probs[:], storage.values[:], storage.returns[:], storage.advantages[:] = ids, ids, ids, ids
    batches = list(storage.minibatches(num_mini_batches=2, num_epochs=2))
    assert [len(mb.values) for mb in batches] == [8, 7, 8, 7]
    for epoch in (batches[:2], batches[2:]):
        assert sorted(torch.cat([mb.values for mb in epoch]).tolist()) == list(range(15))
    for mb in batches:
        for field in (mb.policy_obs[:, 0], mb.critic_obs[:, 0], mb.critic_obs[:, 1], mb.actions[:, 0], mb.log_probs,
                      mb.returns, mb.advantages):
            assert torch.equal(field, mb.values)
