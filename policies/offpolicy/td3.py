"""Twin Delayed DDPG (Fujimoto et al., 2018) with an asymmetric critic.

The actor sees policy observations, the twin critic the (possibly privileged)
critic observations; both are normalized inside the agent. The runner drives it
with two verbs:

    actions = td3.act(policy_obs)        # exploration: actor + Gaussian noise, clipped to [-1, 1]
    metrics = td3.update(batch)          # one gradient step on a replay batch (a Transition)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from s2r.policies.offpolicy.networks import DeterministicActor, OffPolicyAgent, gradient_step, polyak
from s2r.policies.offpolicy.replay import Transition


@dataclass(frozen=True)
class TD3Config:
    """TD3's hyperparameters (defaults: Learning to Fly's, 64-unit networks)."""

    actor_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor."""
    critic_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of each Q network."""
    activation: str = "relu"
    """Nonlinearity between hidden layers: relu, elu or tanh."""
    gamma: float = 0.99
    """Discount per control step."""
    tau: float = 0.005
    """Polyak factor of the target networks per actor update."""
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    batch_size: int = 256
    """Transitions per gradient step."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    learning_starts: int = 10_000
    """Transitions collected with uniform random actions before learning starts."""
    updates_per_step: int = 1
    """Gradient steps per env step (one step of all worlds)."""
    exploration_noise: float = 0.1
    """Standard deviation of the Gaussian noise added to the actor's actions while collecting."""
    target_noise: float = 0.2
    """Standard deviation of the target policy smoothing noise."""
    target_noise_clip: float = 0.5
    policy_delay: int = 2
    """Critic steps per actor (and target) step."""

    def __post_init__(self) -> None:
        for name in ("gamma", "tau"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"TD3Config.{name}={getattr(self, name)}: expected a value in (0, 1]")
        for name in ("batch_size", "buffer_size", "updates_per_step", "policy_delay"):
            if getattr(self, name) < 1:
                raise ValueError(f"TD3Config.{name}={getattr(self, name)}: expected at least 1")

    def build_agent(self, *, num_policy_obs: int, num_critic_obs: int, num_actions: int) -> OffPolicyAgent:
        actor = DeterministicActor(num_policy_obs, self.actor_hidden, num_actions, self.activation)
        return OffPolicyAgent(actor, num_policy_obs=num_policy_obs, num_critic_obs=num_critic_obs,
                              num_actions=num_actions, critic_hidden=self.critic_hidden, activation=self.activation)


class TD3:
    """TD3 updates of an `OffPolicyAgent` with a `DeterministicActor`."""

    name = "td3"

    def __init__(self, agent: OffPolicyAgent, cfg: TD3Config) -> None:
        self.agent, self.cfg = agent, cfg
        self.target_actor = copy.deepcopy(agent.actor).requires_grad_(False)
        self.target_critic = copy.deepcopy(agent.critic).requires_grad_(False)
        self.optimizers = {
            "actor": torch.optim.Adam(agent.actor.parameters(), lr=cfg.actor_learning_rate, fused=True),
            "critic": torch.optim.Adam(agent.critic.parameters(), lr=cfg.critic_learning_rate, fused=True),
        }
        self.num_updates = 0

    def act(self, policy_obs: Tensor) -> Tensor:
        """Exploratory actions `(N, A)` in [-1, 1] for raw policy observations `(N, P)`."""
        actions = self.agent.act_inference(policy_obs)
        return (actions + self.cfg.exploration_noise * torch.randn_like(actions)).clamp(-1.0, 1.0)

    def update(self, batch: Transition) -> dict[str, float]:
        """One critic step (and every `policy_delay` steps one actor and target step); returns losses."""
        cfg, agent = self.cfg, self.agent
        obs = agent.actor_normalizer(batch.policy_obs)
        critic_obs = agent.critic_normalizer(batch.critic_obs)
        with torch.no_grad():
            noise = (cfg.target_noise * torch.randn_like(batch.actions)).clamp(-cfg.target_noise_clip,
                                                                              cfg.target_noise_clip)
            next_actions = (self.target_actor(agent.actor_normalizer(batch.next_policy_obs)) + noise).clamp(-1.0, 1.0)
            next_q = self.target_critic(agent.critic_normalizer(batch.next_critic_obs), next_actions).min(0).values
            # y = r + γ (1 − terminated) min_i Q'_i(s', π'(s') + ε)
            target = batch.rewards + cfg.gamma * (1.0 - batch.terminated) * next_q
        q = agent.critic(critic_obs, batch.actions)
        critic_loss = ((q - target) ** 2).mean(1).sum()
        gradient_step(self.optimizers["critic"], critic_loss)
        metrics = {"losses/critic": critic_loss.item(), "charts/q_mean": q.mean().item()}
        self.num_updates += 1
        if self.num_updates % cfg.policy_delay == 0:
            agent.critic.requires_grad_(False)
            actor_loss = -agent.critic(critic_obs, agent.actor(obs))[0].mean()
            gradient_step(self.optimizers["actor"], actor_loss)
            agent.critic.requires_grad_(True)
            polyak(self.target_actor, agent.actor, cfg.tau)
            polyak(self.target_critic, agent.critic, cfg.tau)
            metrics["losses/actor"] = actor_loss.item()
        return metrics
