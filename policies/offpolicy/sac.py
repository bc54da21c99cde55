"""Soft Actor-Critic (Haarnoja et al., 2018) with automatic entropy tuning and an asymmetric critic.

Same verbs as `TD3`; the actor is a tanh-squashed Gaussian whose mean,
squashed, is the deterministic policy that gets exported.

    actions = sac.act(policy_obs)        # a sample of the squashed Gaussian
    metrics = sac.update(batch)          # critic, actor and temperature steps on a replay batch
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from s2r.policies.offpolicy.networks import OffPolicyAgent, SquashedGaussianActor, gradient_step, polyak
from s2r.policies.offpolicy.replay import Transition


@dataclass(frozen=True)
class SACConfig:
    """SAC's hyperparameters."""

    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    gamma: float = 0.99
    """Discount per control step."""
    tau: float = 0.005
    """Polyak factor of the target critic per update."""
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    alpha_learning_rate: float = 1e-3
    initial_alpha: float = 0.2
    """Initial entropy temperature."""
    target_entropy_per_action: float = -1.0
    """Target entropy, per action dimension (nats)."""
    batch_size: int = 256
    buffer_size: int = 1_000_000
    learning_starts: int = 10_000
    """Transitions held before the critic's first step."""
    actor_learning_starts: int = 0
    """Transitions held before the actor's (and temperature's) first step."""
    uniform_warmup: bool = True
    """Collect with uniform random actions until `learning_starts` (True) or with the untrained actor's samples."""
    normalize_observations: bool = True
    """Normalize both networks' inputs with running statistics (False: raw inputs)."""
    updates_per_step: int = 1
    """Gradient steps per env step (one step of all worlds)."""

    def __post_init__(self) -> None:
        for name in ("gamma", "tau"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"SACConfig.{name}={getattr(self, name)}: expected a value in (0, 1]")
        for name in ("batch_size", "buffer_size", "updates_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"SACConfig.{name}={getattr(self, name)}: expected at least 1")
        if self.initial_alpha <= 0:
            raise ValueError(f"SACConfig.initial_alpha={self.initial_alpha}: expected a positive temperature")

    def build_agent(self, *, num_policy_obs: int, num_critic_obs: int, num_actions: int) -> OffPolicyAgent:
        actor = SquashedGaussianActor(num_policy_obs, self.actor_hidden, num_actions, self.activation)
        return OffPolicyAgent(actor, num_policy_obs=num_policy_obs, num_critic_obs=num_critic_obs,
                              num_actions=num_actions, critic_hidden=self.critic_hidden, activation=self.activation)


class SAC:
    """SAC updates of an `OffPolicyAgent` with a `SquashedGaussianActor`."""

    name = "sac"

    def __init__(self, agent: OffPolicyAgent, cfg: SACConfig) -> None:
        self.agent, self.cfg = agent, cfg
        self.target_critic = copy.deepcopy(agent.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.initial_alpha), requires_grad=True)
        self.target_entropy = cfg.target_entropy_per_action * agent.num_actions
        self.optimizers = {
            "actor": torch.optim.Adam(agent.actor.parameters(), lr=cfg.actor_learning_rate, fused=True),
            "critic": torch.optim.Adam(agent.critic.parameters(), lr=cfg.critic_learning_rate, fused=True),
            "alpha": torch.optim.Adam([self.log_alpha], lr=cfg.alpha_learning_rate),
        }

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint needs beyond the agent and the optimizers: the target critic and the temperature."""
        return {"target_critic": self.target_critic.state_dict(), "log_alpha": self.log_alpha.detach().clone()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])

    def act(self, policy_obs: Tensor) -> Tensor:
        """Sampled actions `(N, A)` in (-1, 1) for raw policy observations `(N, P)`."""
        return self.agent.actor.sample(self.agent.actor_normalizer(policy_obs))[0]

    def update(self, batch: Transition, *, update_actor: bool = True) -> dict[str, float]:
        """One critic step and (if `update_actor`) one actor and temperature step; returns losses and the
        temperature."""
        cfg, agent = self.cfg, self.agent
        alpha = self.log_alpha.exp().detach()
        obs = agent.actor_normalizer(batch.policy_obs)
        critic_obs = agent.critic_normalizer(batch.critic_obs)
        with torch.no_grad():
            next_actions, next_log_prob = agent.actor.sample(agent.actor_normalizer(batch.next_policy_obs))
            next_q = self.target_critic(agent.critic_normalizer(batch.next_critic_obs), next_actions).min(0).values
            # y = r + γ (1 − terminated) (min_i Q'_i(s', a') − α log π(a'|s')),  a' ~ π(·|s')
            target = batch.rewards + cfg.gamma * (1.0 - batch.terminated) * (next_q - alpha * next_log_prob)
        q = agent.critic(critic_obs, batch.actions)
        critic_loss = ((q - target) ** 2).mean(1).sum()
        gradient_step(self.optimizers["critic"], critic_loss)
        polyak(self.target_critic, agent.critic, cfg.tau)
        metrics = {"losses/critic": critic_loss.item(), "charts/alpha": alpha.item(), "charts/q_mean": q.mean().item()}
        if update_actor:
            agent.critic.requires_grad_(False)
            actions, log_prob = agent.actor.sample(obs)
            actor_loss = (alpha * log_prob - agent.critic(critic_obs, actions).min(0).values).mean()
            gradient_step(self.optimizers["actor"], actor_loss)
            agent.critic.requires_grad_(True)
            alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
            gradient_step(self.optimizers["alpha"], alpha_loss)
            metrics["losses/actor"] = actor_loss.item()
        return metrics
