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
    """Polyak factor of the target critic per critic step and of the target actor per actor step."""
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    batch_size: int = 256
    """Transitions per gradient step."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    learning_starts: int = 10_000
    """Transitions held before the critic's first step."""
    actor_learning_starts: int = 0
    """Transitions held before the actor's first step (it starts with the critic if this is smaller)."""
    uniform_warmup: bool = True
    """Collect with uniform random actions until `learning_starts` (True) or with the untrained actor and
    exploration noise from the start (False: Learning to Fly's, whose tanh actor starts near constant thrust)."""
    normalize_observations: bool = True
    """Normalize both networks' inputs with running statistics (False: raw inputs, Learning to Fly's)."""
    weight_decay: float = 0.0
    """L2 penalty added to every gradient by Adam (Learning to Fly's: 1e-4)."""
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
        if self.weight_decay < 0:
            raise ValueError(f"TD3Config.weight_decay={self.weight_decay}: expected at least 0")
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
            "actor": torch.optim.Adam(agent.actor.parameters(), lr=cfg.actor_learning_rate,
                                      weight_decay=cfg.weight_decay, fused=True),
            "critic": torch.optim.Adam(agent.critic.parameters(), lr=cfg.critic_learning_rate,
                                       weight_decay=cfg.weight_decay, fused=True),
        }
        self.num_updates = 0

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint needs beyond the agent and the optimizers: the target networks and the step count."""
        return {"target_actor": self.target_actor.state_dict(), "target_critic": self.target_critic.state_dict(),
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.target_actor.load_state_dict(state["target_actor"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.num_updates = int(state["num_updates"])

    def act(self, policy_obs: Tensor) -> Tensor:
        """Exploratory actions `(N, A)` in [-1, 1] for raw policy observations `(N, P)`."""
        actions = self.agent.act_inference(policy_obs)
        return (actions + self.cfg.exploration_noise * torch.randn_like(actions)).clamp(-1.0, 1.0)

    def update(self, batch: Transition, *, update_actor: bool = True) -> dict[str, float]:
        """One critic and critic-target step, and every `policy_delay` steps one actor and actor-target step
        (if `update_actor`); returns losses."""
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
        polyak(self.target_critic, agent.critic, cfg.tau)
        metrics = {"losses/critic": critic_loss.item(), "charts/q_mean": q.mean().item()}
        self.num_updates += 1
        if update_actor and self.num_updates % cfg.policy_delay == 0:
            agent.critic.requires_grad_(False)
            actor_loss = -agent.critic(critic_obs, agent.actor(obs))[0].mean()
            gradient_step(self.optimizers["actor"], actor_loss)
            agent.critic.requires_grad_(True)
            polyak(self.target_actor, agent.actor, cfg.tau)
            metrics["losses/actor"] = actor_loss.item()
        return metrics
