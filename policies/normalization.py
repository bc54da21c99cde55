"""Running observation normalization that lives inside the exported policy.

`EmpiricalNormalization` keeps the running mean and (population) variance of
everything it has seen, merged batch by batch with Chan et al.'s parallel
update in float64, and maps `x` to `clamp((x - mean) / sqrt(var + eps), ±clip)`.
Statistics change only through `update` in training mode or an explicit
`merge`; `forward` is plain tensor ops, so ONNX export bakes them in. In a
torch.distributed job every update folds in the batches of all ranks, so
every rank's statistics stay identical.

    norm = EmpiricalNormalization(3)
    norm.update(batch)   # batch: (N, 3); a no-op after norm.eval()
    y = norm(batch)      # (N, 3), within ±5
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s2r.policies.distributed import batch_moments


class EmpiricalNormalization(nn.Module):
    """Normalizes `(..., size)` inputs with running statistics."""

    mean: Tensor
    var: Tensor
    count: Tensor

    def __init__(self, size: int, *, eps: float = 1e-8, clip: float = 5.0) -> None:
        """`eps` keeps the division finite for constant inputs; `clip` bounds the output magnitude."""
        super().__init__()
        self.eps = eps
        self.clip = clip
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        """`(..., size)` → normalized and clipped `(..., size)`."""
        return torch.clamp((x - self.mean) / torch.sqrt(self.var + self.eps), -self.clip, self.clip)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Folds a batch `(..., size)` into the statistics; does nothing in eval mode."""
        if not self.training:
            return
        self.merge(*batch_moments(x.reshape(-1, self.mean.shape[0]).double()))

    @torch.no_grad()
    def merge(self, mean: Tensor, var: Tensor, count: int) -> None:
        """Merges statistics `(size,)` of `count` samples gathered elsewhere (population variance)."""
        if count == 0:
            return
        total = int(self.count) + count
        mean, var = mean.double(), var.double()
        delta = mean - self.mean.double()
        new_mean = self.mean.double() + delta * (count / total)
        m2 = self.var.double() * int(self.count) + var * count + delta**2 * (int(self.count) * count / total)
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.fill_(total)
