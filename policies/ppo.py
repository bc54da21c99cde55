"""Proximal Policy Optimization with an asymmetric actor-critic.

The actor sees the policy observations `(N, P)`, the critic the (possibly
privileged) critic observations `(N, C)`; each has its own running normalizer
inside the model, so an exported actor carries its statistics. `PPO` is driven
by the runner in four verbs per iteration:

    actions = ppo.act(policy_obs, critic_obs)                      # × num_steps_per_env
    ppo.process_env_step(rewards, terminated, truncated, final_values)
    ppo.compute_returns(last_critic_obs)
    metrics = ppo.update()
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from s2r.policies.distributed import Distributed
from s2r.policies.normalization import EmpiricalNormalization

ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class ActorCriticConfig:
    """Network shapes and initial exploration noise of the actor-critic."""

    actor_hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths of the actor MLP."""
    critic_hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths of the critic MLP."""
    activation: Literal["elu", "relu", "tanh"] = "elu"
    """Nonlinearity between hidden layers."""
    init_noise_std: float = 1.0
    """Initial standard deviation of the Gaussian action noise, in action units."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if self.init_noise_std <= 0:
            raise ValueError(f"init_noise_std={self.init_noise_std} must be positive")


def build_mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str) -> nn.Sequential:
    """Linear layers of widths `hidden` with `activation` between them and a linear output."""
    widths = (in_dim, *hidden)
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Gaussian actor on policy observations, value critic on critic observations."""

    def __init__(self, cfg: ActorCriticConfig, *, num_policy_obs: int, num_critic_obs: int, num_actions: int) -> None:
        super().__init__()
        self.num_policy_obs, self.num_critic_obs, self.num_actions = num_policy_obs, num_critic_obs, num_actions
        self.actor_normalizer = EmpiricalNormalization(num_policy_obs)
        self.critic_normalizer = EmpiricalNormalization(num_critic_obs)
        self.actor = build_mlp(num_policy_obs, cfg.actor_hidden, num_actions, cfg.activation)
        self.critic = build_mlp(num_critic_obs, cfg.critic_hidden, 1, cfg.activation)
        self.log_std = nn.Parameter(torch.full((num_actions,), math.log(cfg.init_noise_std)))

    @property
    def noise_std(self) -> Tensor:
        """Action noise standard deviation `(A,)`."""
        return self.log_std.exp()

    def act_inference(self, policy_obs: Tensor) -> Tensor:
        """Mean action `(N, A)` for policy observations `(N, P)`."""
        return self.actor(self.actor_normalizer(policy_obs))

    def distribution(self, policy_obs: Tensor) -> Normal:
        """Diagonal Gaussian over actions `(N, A)`."""
        mean = self.act_inference(policy_obs)
        return Normal(mean, self.noise_std.expand_as(mean), validate_args=False)

    def act(self, policy_obs: Tensor) -> tuple[Tensor, Tensor]:
        """Sampled actions `(N, A)` and their log-probabilities `(N,)`."""
        dist = self.distribution(policy_obs)
        actions = dist.sample()
        return actions, dist.log_prob(actions).sum(-1)

    def log_prob_and_entropy(self, policy_obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities `(N,)` of `actions` `(N, A)` and the policy entropy `(N,)`."""
        dist = self.distribution(policy_obs)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def evaluate(self, critic_obs: Tensor) -> Tensor:
        """State values `(N,)` for critic observations `(N, C)`."""
        return self.critic(self.critic_normalizer(critic_obs)).squeeze(-1)

    def update_normalizers(self, policy_obs: Tensor, critic_obs: Tensor) -> None:
        """Folds `(N, P)` and `(N, C)` into the running statistics (training mode only)."""
        self.actor_normalizer.update(policy_obs)
        self.critic_normalizer.update(critic_obs)


@dataclass(frozen=True)
class Minibatch:
    """A random slice of the flattened rollout; every field has `B` rows."""

    policy_obs: Tensor
    """Policy observations `(B, P)`."""
    critic_obs: Tensor
    """Critic observations `(B, C)`."""
    actions: Tensor
    """Actions taken `(B, A)`."""
    log_probs: Tensor
    """Log-probabilities of the actions under the rollout policy `(B,)`."""
    values: Tensor
    """Critic values at rollout time `(B,)`."""
    returns: Tensor
    """GAE returns, the critic's regression targets `(B,)`."""
    advantages: Tensor
    """Normalized GAE advantages `(B,)`."""


class RolloutStorage:
    """Transitions of one iteration, shaped `(num_steps, num_envs, ...)`."""

    def __init__(self, num_steps: int, num_envs: int, *, num_policy_obs: int, num_critic_obs: int,
                 num_actions: int, device: torch.device | str = "cpu") -> None:
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, torch.device(device)
        zeros = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=self.device)  # noqa: E731
        self.policy_obs = zeros(num_steps, num_envs, num_policy_obs)
        self.critic_obs = zeros(num_steps, num_envs, num_critic_obs)
        self.actions = zeros(num_steps, num_envs, num_actions)
        self.log_probs = zeros(num_steps, num_envs)
        self.values = zeros(num_steps, num_envs)
        self.rewards = zeros(num_steps, num_envs)
        self.dones = zeros(num_steps, num_envs, dtype=torch.bool)
        self.returns = zeros(num_steps, num_envs)
        self.advantages = zeros(num_steps, num_envs)
        self.step = 0

    def add(self, *, policy_obs: Tensor, critic_obs: Tensor, actions: Tensor, log_probs: Tensor,
            values: Tensor, rewards: Tensor, dones: Tensor) -> None:
        """Stores one step for all envs; `dones` `(N,)` marks episodes that ended after this step."""
        if self.step >= self.num_steps:
            raise RuntimeError(f"rollout storage is full ({self.num_steps} steps); call clear() after update")
        t = self.step
        self.policy_obs[t], self.critic_obs[t], self.actions[t] = policy_obs, critic_obs, actions
        self.log_probs[t], self.values[t], self.rewards[t], self.dones[t] = log_probs, values, rewards, dones
        self.step += 1

    def clear(self) -> None:
        """Starts a new rollout."""
        self.step = 0

    def compute_returns(self, last_values: Tensor, gamma: float, lam: float) -> None:
        """GAE(γ, λ) advantages and returns from the values `(N,)` of the states after the last step."""
        if self.step != self.num_steps:
            raise RuntimeError(f"rollout holds {self.step} of {self.num_steps} steps; add the rest first")
        advantage = torch.zeros(self.num_envs, device=self.device)
        for t in reversed(range(self.num_steps)):
            next_values = last_values if t == self.num_steps - 1 else self.values[t + 1]
            not_done = 1.0 - self.dones[t].float()
            # δ_t = r_t + γ V(s_{t+1})(1 - d_t) − V(s_t);  A_t = δ_t + γλ(1 - d_t) A_{t+1}
            delta = self.rewards[t] + gamma * next_values * not_done - self.values[t]
            advantage = delta + gamma * lam * not_done * advantage
            self.advantages[t] = advantage
        self.returns = self.advantages + self.values
        self.advantages = (self.advantages - self.advantages.mean()) / (self.advantages.std() + 1e-8)

    def minibatches(self, num_mini_batches: int, num_epochs: int) -> Iterator[Minibatch]:
        """`num_epochs` passes over the flattened rollout, each in `num_mini_batches` random slices."""
        b_policy_obs, b_critic_obs = self.policy_obs.flatten(0, 1), self.critic_obs.flatten(0, 1)
        b_actions, b_log_probs, b_values = self.actions.flatten(0, 1), self.log_probs.flatten(), self.values.flatten()
        b_returns, b_advantages = self.returns.flatten(), self.advantages.flatten()
        fields = (b_policy_obs, b_critic_obs, b_actions, b_log_probs, b_values, b_returns, b_advantages)
        for _ in range(num_epochs):
            # Drawn from the CPU generator on every device, so a seed gives the same minibatches everywhere.
            for mb_inds in torch.randperm(b_values.shape[0]).to(self.device).tensor_split(num_mini_batches):
                # index_select gathers the same rows as x[mb_inds], about 3x faster on a CPU
                yield Minibatch(*(field.index_select(0, mb_inds) for field in fields))


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters."""

    num_steps_per_env: int = 24
    """Environment steps collected per env per iteration."""
    num_learning_epochs: int = 5
    """Passes over each rollout per update."""
    num_mini_batches: int = 4
    """Minibatches each rollout is split into per epoch."""
    clip_param: float = 0.2
    """Clipping range ε of the probability ratio and of the value change."""
    gamma: float = 0.99
    """Discount factor γ per step."""
    lam: float = 0.95
    """GAE λ: bias-variance trade-off of the advantages."""
    value_loss_coef: float = 1.0
    """Weight of the value loss in the total loss."""
    entropy_coef: float = 0.005
    """Weight of the entropy bonus in the total loss."""
    learning_rate: float = 1e-3
    """Initial Adam learning rate."""
    max_grad_norm: float = 1.0
    """Gradients are rescaled to at most this global L2 norm."""
    use_clipped_value_loss: bool = True
    """Penalize value changes beyond ±clip_param from the rollout values."""
    schedule: Literal["adaptive", "fixed"] = "adaptive"
    """"adaptive" scales the learning rate to keep the KL near desired_kl; "fixed" keeps it."""
    desired_kl: float = 0.01
    """Target KL divergence per minibatch step of the adaptive schedule."""
    min_learning_rate: float = 1e-5
    """Floor of the adaptive learning rate."""
    max_learning_rate: float = 1e-2
    """Ceiling of the adaptive learning rate."""
    symmetry: bool = False
    """Train on every minibatch and its mirror image under the task's symmetry (the task's `symmetry(env)`: a
    legged robot's left-right mirror), with the rollout's log-probabilities, values, returns and advantages:
    twice the samples for the env's cost, and a policy that treats mirrored situations alike (rsl_rl's symmetry
    data augmentation)."""

    def __post_init__(self) -> None:
        if self.schedule not in ("adaptive", "fixed"):
            raise ValueError(f"schedule={self.schedule!r}; choose 'adaptive' or 'fixed'")
        for name in ("num_steps_per_env", "num_learning_epochs", "num_mini_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")


class MinibatchMirror:
    """Mirrors minibatches: signed permutations of policy observations (P,), critic observations (C,) and actions
    (A,), each given as `(index, sign)` arrays (`x[:, index] * sign`); anything with `policy`, `critic` and
    `action` fields holding `index` and `sign` (`sim.locomotion.Mirror`)."""

    def __init__(self, mirror, device: torch.device | str = "cpu") -> None:
        def pair(part) -> tuple[Tensor, Tensor]:
            return (torch.as_tensor(part.index, dtype=torch.long, device=device),
                    torch.as_tensor(part.sign, dtype=torch.float32, device=device))

        self.policy, self.critic, self.action = pair(mirror.policy), pair(mirror.critic), pair(mirror.action)

    def augment(self, mb: Minibatch) -> Minibatch:
        """`mb` followed by its mirror image: 2B rows; log-probabilities, values, returns and advantages repeat."""
        def both(x: Tensor, index_sign: tuple[Tensor, Tensor]) -> Tensor:
            index, sign = index_sign
            return torch.cat([x, x[:, index] * sign])

        return Minibatch(both(mb.policy_obs, self.policy), both(mb.critic_obs, self.critic),
                         both(mb.actions, self.action), mb.log_probs.repeat(2), mb.values.repeat(2),
                         mb.returns.repeat(2), mb.advantages.repeat(2))


class PPO:
    """Collects transitions into a `RolloutStorage` and updates an `ActorCritic` with clipped PPO."""

    def __init__(self, policy: ActorCritic, cfg: PPOConfig, *, num_envs: int,
                 distributed: Distributed = Distributed(), mirror=None) -> None:
        """`distributed`: average gradients and the adaptive-rate KL over its ranks (a no-op for one);
        `mirror`: the task's symmetry (`sim.locomotion.Mirror`), required with `cfg.symmetry`."""
        if cfg.symmetry and mirror is None:
            raise ValueError("PPOConfig.symmetry: the task gives no mirror (its symmetry(env)) to augment with")
        self.policy, self.cfg, self.distributed = policy, cfg, distributed
        device = next(policy.parameters()).device
        self.mirror = MinibatchMirror(mirror, device) if cfg.symmetry else None
        self.learning_rate = cfg.learning_rate
        # foreach: one multi-tensor kernel per Adam operation instead of one per parameter (the default on a CPU);
        # the same arithmetic, bit for bit
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, foreach=True)
        self.storage = RolloutStorage(cfg.num_steps_per_env, num_envs, num_policy_obs=policy.num_policy_obs,
                                      num_critic_obs=policy.num_critic_obs, num_actions=policy.num_actions,
                                      device=next(policy.parameters()).device)
        self._pending: dict[str, Tensor] = {}

    @torch.no_grad()
    def act(self, policy_obs: Tensor, critic_obs: Tensor) -> Tensor:
        """Updates the normalizers, samples actions `(N, A)` and remembers the step's inputs."""
        self.policy.update_normalizers(policy_obs, critic_obs)
        actions, log_probs = self.policy.act(policy_obs)
        values = self.policy.evaluate(critic_obs)
        self._pending = dict(policy_obs=policy_obs, critic_obs=critic_obs, actions=actions, log_probs=log_probs,
                             values=values)
        return actions

    def process_env_step(self, rewards: Tensor, terminated: Tensor, truncated: Tensor, final_values: Tensor) -> None:
        """Stores the step; time-outs (truncated, not terminated) get `γ V(final state)` added to their reward.

        All arguments are `(N,)`; `final_values` only matter where a time-out happened.
        """
        time_outs = truncated & ~terminated
        rewards = torch.where(time_outs, rewards + self.cfg.gamma * final_values, rewards)
        self.storage.add(**self._pending, rewards=rewards, dones=terminated | truncated)

    @torch.no_grad()
    def compute_returns(self, last_critic_obs: Tensor) -> None:
        """GAE over the stored rollout, bootstrapped from the critic observations `(N, C)` after it."""
        self.storage.compute_returns(self.policy.evaluate(last_critic_obs), self.cfg.gamma, self.cfg.lam)

    def update(self) -> dict[str, float]:
        """Runs the PPO epochs on the stored rollout, clears it and returns averaged metrics."""
        cfg, sums, num_updates = self.cfg, defaultdict(float), 0
        explained_variance = 1.0 - (self.storage.returns - self.storage.values).var() / self.storage.returns.var()
        for mb in self.storage.minibatches(cfg.num_mini_batches, cfg.num_learning_epochs):
            if self.mirror is not None:
                mb = self.mirror.augment(mb)
            log_probs, entropy = self.policy.log_prob_and_entropy(mb.policy_obs, mb.actions)
            values = self.policy.evaluate(mb.critic_obs)
            log_ratio = log_probs - mb.log_probs
            ratio = log_ratio.exp()
            with torch.no_grad():
                approx_kl = self.distributed.mean(((ratio - 1) - log_ratio).mean().item())  # k3 estimator of KL(old ‖ new)
                clip_fraction = ((ratio - 1).abs() > cfg.clip_param).float().mean().item()
            if cfg.schedule == "adaptive":
                self._adapt_learning_rate(approx_kl)

            clipped_ratio = ratio.clamp(1 - cfg.clip_param, 1 + cfg.clip_param)
            surrogate_loss = -torch.min(mb.advantages * ratio, mb.advantages * clipped_ratio).mean()
            if cfg.use_clipped_value_loss:
                clipped_values = mb.values + (values - mb.values).clamp(-cfg.clip_param, cfg.clip_param)
                value_loss = torch.max((values - mb.returns) ** 2, (clipped_values - mb.returns) ** 2).mean()
            else:
                value_loss = ((values - mb.returns) ** 2).mean()
            entropy_loss = entropy.mean()
            loss = surrogate_loss + cfg.value_loss_coef * value_loss - cfg.entropy_coef * entropy_loss

            self.optimizer.zero_grad()
            loss.backward()
            self.distributed.average_gradients(list(self.policy.parameters()))
            nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()

            sums["losses/value"] += value_loss.item()
            sums["losses/surrogate"] += surrogate_loss.item()
            sums["losses/entropy"] += entropy_loss.item()
            sums["losses/approx_kl"] += approx_kl
            sums["losses/clip_fraction"] += clip_fraction
            num_updates += 1
        self.storage.clear()
        return {
            **{name: total / num_updates for name, total in sums.items()},
            "losses/explained_variance": explained_variance.item(),
            "learning_rate": self.learning_rate,
            "policy/noise_std": self.policy.noise_std.mean().item(),
        }

    def _adapt_learning_rate(self, kl: float) -> None:
        """Divides the learning rate by 1.5 when `kl` > 2·desired, multiplies it by 1.5 when < desired/2."""
        if kl > 2.0 * self.cfg.desired_kl:
            self.learning_rate = max(self.learning_rate / 1.5, self.cfg.min_learning_rate)
        elif kl < 0.5 * self.cfg.desired_kl:
            self.learning_rate = min(self.learning_rate * 1.5, self.cfg.max_learning_rate)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate
