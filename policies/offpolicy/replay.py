"""A replay buffer of transitions held in preallocated torch tensors.

Each `add` writes one step of `N` worlds (a row per world), overwriting the
oldest rows once `capacity` is reached; `sample` draws uniformly with
replacement. Observations are stored raw: the learner normalizes them when it
samples, with the statistics current at that time.

    buffer = ReplayBuffer(100_000, num_policy_obs=4, num_critic_obs=6, num_actions=1)
    buffer.add(Transition(policy_obs, critic_obs, actions, rewards, next_policy_obs, next_critic_obs, terminated))
    batch = buffer.sample(256, generator)   # Transition with 256 rows
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class Transition:
    """One step of `B` rows (worlds, or a sampled batch)."""

    policy_obs: Tensor
    """What the actor saw `(B, P)`."""
    critic_obs: Tensor
    """What the critic saw `(B, C)`."""
    actions: Tensor
    """Actions taken `(B, A)`, in [-1, 1]."""
    rewards: Tensor
    """Rewards `(B,)`."""
    next_policy_obs: Tensor
    """The actor's observation of the state the step led to `(B, P)`."""
    next_critic_obs: Tensor
    """The critic's observation of that state `(B, C)`."""
    terminated: Tensor
    """1.0 where the episode failed in that state (no bootstrapping) `(B,)`, else 0.0."""


class ReplayBuffer:
    """A ring of `capacity` transitions on `device`."""

    def __init__(self, capacity: int, *, num_policy_obs: int, num_critic_obs: int, num_actions: int,
                 device: torch.device | str = "cpu") -> None:
        if capacity <= 0:
            raise ValueError(f"ReplayBuffer: capacity={capacity} must be positive")
        self.capacity = capacity
        widths = {"policy_obs": num_policy_obs, "critic_obs": num_critic_obs, "actions": num_actions,
                  "rewards": None, "next_policy_obs": num_policy_obs, "next_critic_obs": num_critic_obs,
                  "terminated": None}
        self._data = {name: torch.zeros((capacity,) if w is None else (capacity, w), device=device)
                      for name, w in widths.items()}
        self._next = 0
        self.size = 0
        """Transitions held, at most `capacity`."""

    def add(self, step: Transition) -> None:
        """Appends the `B` rows of `step` (B ≤ capacity)."""
        rows = step.rewards.shape[0]
        if rows > self.capacity:
            raise ValueError(f"ReplayBuffer.add: {rows} rows exceed the capacity {self.capacity}")
        index = (self._next + torch.arange(rows)) % self.capacity
        for f in fields(Transition):
            self._data[f.name][index] = getattr(step, f.name).to(self._data[f.name].dtype)
        self._next = (self._next + rows) % self.capacity
        self.size = min(self.size + rows, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> Transition:
        """`batch_size` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        index = torch.randint(self.size, (batch_size,), generator=generator)
        return Transition(**{name: value[index] for name, value in self._data.items()})
