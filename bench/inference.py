"""Policy latency on the robot: the ONNX runtime's full step against the torch actor's forward alone.

s2r: `PolicyRuntime.step(state)` on one unbatched `RobotState`: observation terms, history,
onnxruntime inference (one thread) and the action mapping to a `Command`, the whole tick a
robot pays. Peer: the same actor in torch (`policies.export.ExportedActor`, normalizer included), its forward alone on a batch of one, under
`torch.inference_mode()` with one torch thread. The two are timed alternately, call by call,
in one process run, so that the shared machine's noise falls on both; the result is the p50
and p99 of each in microseconds and the ratio of the medians.

    result = run("cartpole.onnx", robot_spec("cartpole"), actor=actor, obs_dim=7)
    result["ratio_p50"]        # runtime step / torch forward

The command line benchmarks an untrained policy of the default shape (128-128): latency does
not depend on the weights.

    PYTHONPATH=. python -m bench.inference --task cartpole
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from bench.report import machine, report
from s2r.apps.latency import policy_latency
from s2r.policies.export import ExportedActor, export_onnx
from s2r.policies.ppo import ActorCritic, ActorCriticConfig
from s2r.sim.env import make_env
from s2r.spec import RobotSpec


def run(onnx_path: str | Path, spec: RobotSpec, *, actor: nn.Module, obs_dim: int,
        iterations: int = 2000) -> dict[str, Any]:
    """`s2r.apps.latency.policy_latency` (what `s2r demo` prints) with the machine it ran on."""
    return {**policy_latency(onnx_path, spec, actor=actor, obs_dim=obs_dim, iterations=iterations),
            "machine": machine()}


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="cartpole", help="pendulum, cartpole or reach")
    parser.add_argument("--iterations", type=int, default=2000, help="timed calls of each")
    opts = parser.parse_args(args)

    env = make_env(opts.task, num_envs=1)
    obs_dim = env.obs_dims["policy"]
    policy = ActorCritic(ActorCriticConfig(), num_policy_obs=obs_dim, num_critic_obs=env.obs_dims["critic"],
                         num_actions=env.num_actions)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(policy, env.contract(), Path(tmp) / f"{opts.task}.onnx")
        r = run(path, env.spec, actor=ExportedActor(policy), obs_dim=obs_dim, iterations=opts.iterations)
    r["task"] = opts.task
    rows = [
        ("s2r PolicyRuntime.step p50 / p99", f"{r['runtime_step_p50_us']:.1f} / {r['runtime_step_p99_us']:.1f} µs"),
        ("torch actor forward p50 / p99", f"{r['torch_forward_p50_us']:.1f} / {r['torch_forward_p99_us']:.1f} µs"),
        ("runtime step / torch forward (p50)", f"{r['ratio_p50']:.2f}"),
    ]
    report(f"inference_{opts.task}", f"policy latency: {opts.task}, batch 1, one thread", rows, r)


if __name__ == "__main__":
    main()
