"""Data-parallel PPO across processes with `torch.distributed`: one process per GPU (or CPU slot).

Each rank steps its own worlds with its own seed (`seed + rank`) and keeps a full copy of the
policy. The copies stay bit-identical because every rank starts from rank 0's parameters and
applies the same update:

- gradients are all-reduced (averaged) after every backward pass, before clipping;
- the KL that adapts the learning rate is averaged, so every rank picks the same rate;
- normalizer statistics are merged from every rank's batch at every step (`EmpiricalNormalization`);
- after each update the ranks compare their parameters and stop with `RanksDivergedError`
  if any differs, rather than train silently apart.

Rank 0 alone writes checkpoints, logs and the training curve. Launch with torchrun, or let
`s2r train --nproc N` start it:

    torchrun --standalone --nproc-per-node 2 -m s2r.apps.cli train pendulum
    s2r train pendulum --nproc 2          # the same; gloo on CPUs, NCCL on GPUs

`num_envs` is per rank: N processes train on N × num_envs worlds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


class RanksDivergedError(RuntimeError):
    """The ranks' policies differ after an update: data-parallel training would be silently wrong."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torch.distributed job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """Read torchrun's RANK, WORLD_SIZE and LOCAL_RANK; join the process group if there are several ranks."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        self = cls(rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend)
        return self

    @property
    def device(self) -> torch.device:
        """Where this rank computes and communicates: its GPU under NCCL, else the CPU."""
        if self.enabled and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and logs."""
        return self.rank == 0

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Every rank takes rank 0's parameters and buffers."""
        if self.enabled:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks (one all-reduce of the flattened gradients)."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: float) -> float:
        """The mean of a scalar over the ranks."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor) / self.world_size

    def check_in_sync(self, module: nn.Module, iteration: int) -> None:
        """Raise `RanksDivergedError` unless every rank holds exactly rank 0's parameters and buffers."""
        if not self.enabled:
            return
        flat = torch.cat([t.detach().reshape(-1).double() for t in [*module.parameters(), *module.buffers()]])
        reference = flat.clone()
        dist.broadcast(reference, src=0)
        differs = torch.tensor([float(not torch.equal(flat, reference))], device=flat.device)
        dist.all_reduce(differs, op=dist.ReduceOp.SUM)
        if differs.item():
            raise RanksDivergedError(f"iteration {iteration}: {int(differs.item())} rank(s) hold parameters that "
                                     f"differ from rank 0's")

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def batch_moments(batch: Tensor) -> tuple[Tensor, Tensor, int]:
    """Mean, population variance `(size,)` and count of a `(n, size)` float64 batch; in a distributed
    job, of every rank's batch together (one all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()):
        return batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
    count = torch.tensor([batch.shape[0]], dtype=torch.float64, device=batch.device)
    total = torch.cat([count, batch.sum(0), (batch**2).sum(0)])
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    n = int(total[0])
    size = batch.shape[1]
    mean = total[1:1 + size] / n
    var = (total[1 + size:] / n - mean**2).clamp_min(0.0)
    return mean, var, n


def available_slots() -> tuple[int, str]:
    """How many ranks this machine can run, and of what: CUDA devices, else CPU cores."""
    if torch.cuda.is_available():
        return torch.cuda.device_count(), "CUDA devices"
    return os.cpu_count() or 1, "CPU cores"


def launch(nproc: int, argv: list[str]) -> int:
    """Run `s2r ARGV` as `nproc` ranks under torchrun on this machine; returns its exit code."""
    slots, kind = available_slots()
    if nproc < 1:
        raise ValueError(f"--nproc {nproc}: expected at least 1")
    if nproc > slots:
        raise ValueError(f"--nproc {nproc}: this machine has {slots} {kind}; use --nproc {slots} or fewer, "
                         f"or launch torchrun across machines (--nnodes)")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "s2r.apps.cli", *argv]
    return subprocess.run(command).returncode
