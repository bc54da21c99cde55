"""The networks off-policy learners share: actors with bounded outputs and a twin Q critic.

`OffPolicyAgent` holds what is trained and exported, mirroring PPO's
`ActorCritic`: `actor_normalizer` and `actor` (policy observations `(N, P)` →
deterministic actions `(N, A)` in [-1, 1], what `policies.export.export_onnx`
writes), `critic_normalizer` and `critic` (critic observations `(N, C)` and
actions → two Q estimates `(2, N)`).

    agent = OffPolicyAgent(DeterministicActor(4, (64, 64), 1), num_policy_obs=4, num_critic_obs=6,
                           num_actions=1, critic_hidden=(64, 64))
    q = agent.critic(agent.critic_normalizer(critic_obs), actions)     # (2, N)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from s2r.policies.normalization import EmpiricalNormalization
from s2r.policies.ppo import ACTIVATIONS, build_mlp

LOG_STD_RANGE = (-5.0, 2.0)
"""Bounds of the SAC actor's log standard deviation (pre-tanh), as in most SAC implementations."""


class DeterministicActor(nn.Module):
    """An MLP whose outputs are squashed by tanh into [-1, 1] (TD3's actor)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], num_actions: int, activation: str = "relu") -> None:
        super().__init__()
        self.net = build_mlp(in_dim, hidden, num_actions, activation)

    def forward(self, obs: Tensor) -> Tensor:
        """Normalized policy observations `(N, P)` → actions `(N, A)` in [-1, 1]."""
        return torch.tanh(self.net(obs))


class SquashedGaussianActor(nn.Module):
    """A Gaussian over pre-tanh actions with state-dependent std (SAC's actor); `forward` is its mean, squashed."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], num_actions: int, activation: str = "relu") -> None:
        super().__init__()
        self.num_actions = num_actions
        self.net = build_mlp(in_dim, hidden, 2 * num_actions, activation)

    def forward(self, obs: Tensor) -> Tensor:
        """Deterministic actions `(N, A)` in [-1, 1]: tanh of the mean."""
        return torch.tanh(self.net(obs)[..., : self.num_actions])

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterized actions `(N, A)` in (-1, 1) and their log-probabilities `(N,)` under the squashed Gaussian."""
        mean, log_std = self.net(obs).split(self.num_actions, dim=-1)
        log_std = log_std.clamp(*LOG_STD_RANGE)
        noise = torch.randn_like(mean)
        pre_tanh = mean + log_std.exp() * noise
        # log N(u) − Σ log(1 − tanh²u), with the stable form log(1 − tanh²u) = 2 (log 2 − u − softplus(−2u))
        log_prob = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob -= (2 * (math.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), log_prob


class TwinCritic(nn.Module):
    """Two Q networks evaluated as one batched ensemble (one `baddbmm` per layer)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], activation: str = "relu", *, members: int = 2) -> None:
        super().__init__()
        widths = (in_dim, *hidden, 1)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers = [nn.Linear(w_in, w_out) for _ in range(members)]   # PyTorch's default initialization
            self.weights.append(nn.Parameter(torch.stack([layer.weight.detach().T for layer in layers])))
            self.biases.append(nn.Parameter(torch.stack([layer.bias.detach()[None] for layer in layers])))
        self.activation = ACTIVATIONS[activation]()
        self.members = members

    def forward(self, critic_obs: Tensor, actions: Tensor) -> Tensor:
        """Normalized critic observations `(N, C)` and actions `(N, A)` → Q values `(members, N)`."""
        x = torch.cat([critic_obs, actions], dim=-1).expand(self.members, -1, -1)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = self.activation(x)
        return x.squeeze(-1)


class OffPolicyAgent(nn.Module):
    """Normalizers, the actor and the twin critic of one off-policy learner."""

    def __init__(self, actor: nn.Module, *, num_policy_obs: int, num_critic_obs: int, num_actions: int,
                 critic_hidden: tuple[int, ...], activation: str = "relu") -> None:
        super().__init__()
        self.num_policy_obs, self.num_critic_obs, self.num_actions = num_policy_obs, num_critic_obs, num_actions
        self.actor_normalizer = EmpiricalNormalization(num_policy_obs)
        self.critic_normalizer = EmpiricalNormalization(num_critic_obs)
        self.actor = actor
        self.critic = TwinCritic(num_critic_obs + num_actions, critic_hidden, activation)

    def act_inference(self, policy_obs: Tensor) -> Tensor:
        """Deterministic actions `(N, A)` for raw policy observations `(N, P)`."""
        return self.actor(self.actor_normalizer(policy_obs))

    def update_normalizers(self, policy_obs: Tensor, critic_obs: Tensor) -> None:
        """Folds `(N, P)` and `(N, C)` into the running statistics (training mode only)."""
        self.actor_normalizer.update(policy_obs)
        self.critic_normalizer.update(critic_obs)


def gradient_step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """Zero the gradients, back-propagate `loss` and step `optimizer`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def polyak(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """target ← (1 − τ) target + τ source, parameter by parameter."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
