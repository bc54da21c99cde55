"""A replay buffer of transitions held in preallocated torch tensors.

Each `add` writes one step of `N` worlds (a row per world), overwriting the
oldest rows once `capacity` is reached; `sample` draws uniformly with
replacement. Observations are stored raw: the learner normalizes them when it
samples, with the statistics current at that time. A buffer built with
`num_reward_terms` also keeps each reward term's unweighted value, so the runner
can price old transitions with a curriculum's current weights.

    buffer = ReplayBuffer(100_000, num_policy_obs=4, num_critic_obs=6, num_actions=1)
    buffer.add(Transition(policy_obs, critic_obs, actions, rewards, next_policy_obs, next_critic_obs, terminated))
    batch = buffer.sample(256, generator)   # Transition with 256 rows
"""

from __future__ import annotations

from dataclasses import dataclass

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
    reward_terms: Tensor | None = None
    """Each reward term's unweighted value `(B, K)`, for envs that report them (`info["reward_terms"]`)."""


class ReplayBuffer:
    """A ring of `capacity` transitions on `device`, one row of all fields per transition (a sample is one gather)."""

    def __init__(self, capacity: int, *, num_policy_obs: int, num_critic_obs: int, num_actions: int,
                 num_reward_terms: int = 0, device: torch.device | str = "cpu") -> None:
        if capacity <= 0:
            raise ValueError(f"ReplayBuffer: capacity={capacity} must be positive")
        self.capacity = capacity
        widths = {"policy_obs": num_policy_obs, "critic_obs": num_critic_obs, "actions": num_actions,
                  "rewards": None, "next_policy_obs": num_policy_obs, "next_critic_obs": num_critic_obs,
                  "terminated": None}
        if num_reward_terms:
            widths["reward_terms"] = num_reward_terms
        self._layout: dict[str, tuple[int, int | None]] = {}
        """Each field's first column in a row and its width (None: a scalar per transition)."""
        column = 0
        for name, width in widths.items():
            self._layout[name] = (column, width)
            column += width or 1
        self._rows = torch.zeros((capacity, column), device=device)
        self._next = 0
        self.size = 0
        """Transitions held, at most `capacity`."""

    def add(self, step: Transition) -> None:
        """Appends the `B` rows of `step` (B ≤ capacity)."""
        rows = step.rewards.shape[0]
        if rows == 0:
            return
        if rows > self.capacity:
            raise ValueError(f"ReplayBuffer.add: {rows} rows exceed the capacity {self.capacity}")
        index = (self._next + torch.arange(rows)) % self.capacity
        self._rows[index] = torch.cat([getattr(step, name).reshape(rows, -1).to(self._rows.dtype)
                                       for name in self._layout], dim=1)
        self._next = (self._next + rows) % self.capacity
        self.size = min(self.size + rows, self.capacity)

    def state_dict(self) -> dict[str, object]:
        """The held rows (the ring's first `size`), their layout and the write position, for a checkpoint."""
        return {"next": self._next, "size": self.size, "layout": {k: list(v) for k, v in self._layout.items()},
                "rows": self._rows[: self.size].clone()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restores what `state_dict` returned; refuses another layout or more rows than the capacity."""
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"ReplayBuffer: the checkpoint holds {size} transitions, more than the capacity "
                             f"{self.capacity}")
        layout = {k: tuple(v) for k, v in state["layout"].items()}
        if layout != self._layout:
            raise ValueError(f"ReplayBuffer: the checkpoint's rows are {layout}, this buffer's {self._layout}")
        self._rows[:size] = state["rows"]
        self.size, self._next = size, int(state["next"]) % self.capacity if size == self.capacity else size

    def sample(self, batch_size: int, generator: torch.Generator) -> Transition:
        """`batch_size` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        rows = self._rows[torch.randint(self.size, (batch_size,), generator=generator)]
        return Transition(**{name: rows[:, first] if width is None else rows[:, first:first + width]
                             for name, (first, width) in self._layout.items()})
