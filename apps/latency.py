"""Policy latency on the robot, measured in one run: the ONNX runtime's full step against the torch actor's forward.

s2r: `PolicyRuntime.step(state)` on one unbatched `RobotState`: observation terms, history,
onnxruntime inference (one thread) and the action mapping to a `Command`, the whole tick a
robot pays. Peer: the same actor in torch (`ExportedActor`, normalizer included), its forward
alone on a batch of one, under `torch.inference_mode()` with one torch thread. The two are
timed alternately, call by call, so that a shared machine's noise falls on both:

    latency = policy_latency("cartpole.onnx", robot_spec("cartpole"), actor=ExportedActor(policy), obs_dim=7)
    latency["runtime_step_p50_us"], latency["torch_forward_p50_us"], latency["ratio_p50"]

`s2r demo` prints these figures; `bench/inference.py` (in the source checkout) reports them
as a benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from s2r.runtime.mlp import PolicyRuntime
from s2r.spec import RobotSpec
from s2r.state import RobotState

WARMUP_CALLS = 100
"""Untimed calls of each before timing (session and allocator warm-up)."""


def policy_latency(onnx_path: str | Path, spec: RobotSpec, *, actor: nn.Module, obs_dim: int,
                   iterations: int = 2000) -> dict[str, Any]:
    """p50/p99 µs of `PolicyRuntime.step` on `onnx_path` and of `actor`'s forward on a (1, obs_dim) input.

    `actor` maps policy observations (N, obs_dim) to raw actions (N, A): the network the ONNX
    file was exported from, normalizer included.
    """
    runtime = PolicyRuntime(onnx_path, spec=spec)
    state = RobotState(stamp=0.0, q=np.asarray(spec.default_q, dtype=np.float64),
                       dq=np.zeros(spec.num_joints), tau=np.zeros(spec.num_joints))
    inputs = {name: np.zeros(size) for name, size in runtime.contract.inputs.items()}
    obs = torch.zeros(1, obs_dim)
    actor.eval()

    runtime_us, torch_us = np.empty(iterations), np.empty(iterations)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for _ in range(WARMUP_CALLS):
                runtime.step(state, inputs)
                actor(obs)
            for i in range(iterations):
                runtime_us[i] = _microseconds(lambda: runtime.step(state, inputs))
                torch_us[i] = _microseconds(lambda: actor(obs))
    finally:
        torch.set_num_threads(threads)

    runtime_p50, runtime_p99 = np.percentile(runtime_us, [50, 99])
    torch_p50, torch_p99 = np.percentile(torch_us, [50, 99])
    return {
        "robot": spec.name,
        "iterations": iterations,
        "runtime_step_p50_us": float(runtime_p50),
        "runtime_step_p99_us": float(runtime_p99),
        "torch_forward_p50_us": float(torch_p50),
        "torch_forward_p99_us": float(torch_p99),
        "ratio_p50": float(runtime_p50 / torch_p50),
    }


def _microseconds(call: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / 1e3
