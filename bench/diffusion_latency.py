"""Diffusion policy action-chunk latency on the CPU: s2r's ONNX runtime (numpy DDIM) vs diffusers' DDIMScheduler.

s2r: `DiffusionRuntime.sample` on one observation window (batch 1): 10 DDIM steps, each one
onnxruntime run (one thread) of the exported encoder + denoiser plus the numpy update, then
the action unnormalization. Peer: the same trained EMA model in torch sampled with diffusers'
`DDIMScheduler` configured to the same schedule (`set_timesteps` then `step` per timestep, as
Diffusion Policy and LeRobot do), under `torch.inference_mode()` with one torch thread. Both
are also timed in warm-start mode (the last `warm_start_steps` DDIM steps from the previous
chunk shifted by the executed actions). Calls alternate, in one process run, so the shared
machine's noise falls on both; p50 and p99 in milliseconds and the ratios of the medians.
Then, over `--episodes` push_t episodes (`s2r eval`'s loop: batched worlds, the numpy runtime
executed by the robot's ChunkedPolicy, synchronously, chunks cross-faded over `--blend-steps`
ticks, 0 by default as the documented figures were measured), the success rate (the
task's rule: placed and left there), the reached rate (Diffusion Policy's rule: coverage > 0.95
at some step) and the mean final coverage, with full sampling, with warm starts and replanning
every `--short-horizon` steps, next to the scripted expert's (push_t's reward is the coverage,
so the expert's mean final reward is its mean final coverage).

    PYTHONPATH=. python -m bench.diffusion_latency --run runs/dp          # a trained run
    PYTHONPATH=. python -m bench.diffusion_latency                        # records 100 demos (DART, plans), trains first
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import machine, report
from s2r.policies.diffusion.config import DiffusionConfig
from s2r.policies.diffusion.export import export_diffusion
from s2r.policies.diffusion.sampler import NoiseSchedule
from s2r.policies.diffusion.train import load_diffusion, train_diffusion
from s2r.policies.evaluate import evaluate
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.sim.demos import evaluate_expert, record_demos
from s2r.spec import robot_spec

WARMUP_CALLS = 20


def latency(run_dir: Path, onnx_path: Path, *, iterations: int = 200) -> dict[str, Any]:
    """p50/p99 ms of one action chunk, full and warm-started, s2r runtime vs diffusers in torch."""
    from diffusers import DDIMScheduler

    model, cfg, contract, action_norm = load_diffusion(run_dir)
    runtime = DiffusionRuntime(onnx_path, spec=robot_spec(contract.robot))
    schedule = NoiseSchedule(cfg.num_train_timesteps)
    scheduler = DDIMScheduler(**schedule.diffusers_config(cfg.prediction))
    half_range = torch.as_tensor((action_norm.high - action_norm.low) / 2, dtype=torch.float32)
    warm_steps = cfg.warm_start_steps
    rng = np.random.default_rng(0)
    obs = rng.normal(0.0, 0.05, (1, cfg.obs_horizon * model.obs_dim)).astype(np.float32)
    obs_t = torch.from_numpy(obs)
    shape = (1, cfg.pred_horizon, model.action_dim)
    # center + reference: what unnormalizing adds back (the reference is 0 for absolute actions)
    center = torch.as_tensor(action_norm.center + runtime.reference_action(obs)[:, None], dtype=torch.float32)
    previous = runtime.unnormalize(runtime.sample(obs), obs)
    previous_t = torch.as_tensor(runtime.normalize(previous, obs), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)

    def diffusers_full() -> torch.Tensor:
        scheduler.set_timesteps(cfg.num_inference_steps)
        sample = torch.randn(shape, generator=generator)
        for t in scheduler.timesteps:
            sample = scheduler.step(model(obs_t, sample, t.expand(1)), t, sample).prev_sample
        return sample * half_range + center

    def diffusers_warm() -> torch.Tensor:
        scheduler.set_timesteps(cfg.num_inference_steps)
        steps = scheduler.timesteps[-warm_steps:]
        shift = cfg.action_horizon
        shifted = torch.cat([previous_t[:, shift:], previous_t[:, -1:].expand(-1, shift, -1)], dim=1)
        sample = scheduler.add_noise(shifted, torch.randn(shape, generator=generator), steps[:1])
        for t in steps:
            sample = scheduler.step(model(obs_t, sample, t.expand(1)), t, sample).prev_sample
        return sample * half_range + center

    calls: dict[str, Callable[[], object]] = {
        "s2r_full": lambda: runtime.unnormalize(runtime.sample(obs), obs),
        "s2r_warm": lambda: runtime.unnormalize(runtime.warm_sample(obs, previous), obs),
        "diffusers_full": diffusers_full,
        "diffusers_warm": diffusers_warm,
    }
    times = {name: np.empty(iterations) for name in calls}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for _ in range(WARMUP_CALLS):
                for call in calls.values():
                    call()
            for i in range(iterations):
                for name, call in calls.items():
                    start = time.perf_counter_ns()
                    call()
                    times[name][i] = (time.perf_counter_ns() - start) / 1e6
    finally:
        torch.set_num_threads(threads)
    result: dict[str, Any] = {"iterations": iterations, "denoiser": cfg.denoiser,
                              "ddim_steps": cfg.num_inference_steps, "warm_start_steps": warm_steps}
    for name, values in times.items():
        result[f"{name}_p50_ms"], result[f"{name}_p99_ms"] = (float(v) for v in np.percentile(values, [50, 99]))
    result["ratio_full_p50"] = result["s2r_full_p50_ms"] / result["diffusers_full_p50_ms"]
    result["ratio_warm_p50"] = result["s2r_warm_p50_ms"] / result["diffusers_warm_p50_ms"]
    result["s2r_warm_over_full_p50"] = result["s2r_warm_p50_ms"] / result["s2r_full_p50_ms"]
    return result


def chunk_latency(policies: dict[str, Path], *, iterations: int = 200) -> dict[str, Any]:
    """p50/p99 ms of one action chunk (batch 1, full DDIM sampling and unnormalization) of each exported policy in
    s2r's runtime, calls alternated; `ratio_NAME_p50` is each policy's median over the first one's (the peer:
    the BC policy the others were fine-tuned from). A DSRL policy's chunk includes its noise policy's run."""
    from s2r.runtime import read_contract

    contract = read_contract(next(iter(policies.values())))
    runtimes = {name: DiffusionRuntime(path, spec=robot_spec(contract.robot)) for name, path in policies.items()}
    obs_size = next(iter(runtimes.values())).obs_horizon * contract.obs_dim
    obs = np.random.default_rng(0).normal(0.0, 0.05, (1, obs_size)).astype(np.float32)
    times = {name: np.empty(iterations) for name in runtimes}
    for i in range(WARMUP_CALLS + iterations):
        for name, runtime in runtimes.items():
            start = time.perf_counter_ns()
            runtime.unnormalize(runtime.sample(obs), obs)
            if i >= WARMUP_CALLS:
                times[name][i - WARMUP_CALLS] = (time.perf_counter_ns() - start) / 1e6
    first = next(iter(times))
    result: dict[str, Any] = {"iterations": iterations}
    for name, values in times.items():
        result[f"{name}_p50_ms"], result[f"{name}_p99_ms"] = (float(v) for v in np.percentile(values, [50, 99]))
        result[f"ratio_{name}_p50"] = result[f"{name}_p50_ms"] / float(np.median(times[first]))
    return result


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained diffusion run directory (default: train one first)")
    parser.add_argument("--demos", type=int, default=100, help="scripted demonstrations to train on, without --run")
    parser.add_argument("--epochs", type=int, help="training epochs, without --run (config default if omitted)")
    parser.add_argument("--action-noise", type=float, default=0.03,
                        help="DART noise of the recorded demonstrations, without --run (successful ones kept)")
    parser.add_argument("--episodes", type=int, default=50, help="push_t evaluation episodes for the success rates")
    parser.add_argument("--short-horizon", type=int, default=2, help="the shorter action horizon also evaluated")
    parser.add_argument("--iterations", type=int, default=200, help="timed chunks of each")
    parser.add_argument("--blend-steps", type=int, default=0,
                        help="ticks a new chunk is cross-faded in over in the evaluations (0: none, as "
                             "docs/benchmarks.md measured; policy_node's default is 3)")
    opts = parser.parse_args(args)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir, train_metrics = opts.run, None
        if run_dir is None:
            record_demos("push_t", expert="scripted", episodes=opts.demos, out=Path(tmp) / "demos",
                         action_noise=opts.action_noise, successful_only=opts.action_noise > 0,
                         plan_horizon=DiffusionConfig().pred_horizon)
            cfg = DiffusionConfig() if opts.epochs is None else DiffusionConfig(epochs=opts.epochs)
            run_dir = Path(tmp) / "run"
            train_metrics = train_diffusion(cfg, Path(tmp) / "demos", run_dir, progress=False)
        onnx_path = export_diffusion(run_dir, Path(tmp) / "policy.onnx")
        r = latency(run_dir, onnx_path, iterations=opts.iterations)
        chunking = {"blend_steps": opts.blend_steps}
        runs = {"full": evaluate(onnx_path, episodes=opts.episodes, **chunking),
                "warm": evaluate(onnx_path, episodes=opts.episodes, warm_start=True, **chunking),
                "short": evaluate(onnx_path, episodes=opts.episodes, action_horizon=opts.short_horizon, **chunking)}
    expert = evaluate_expert("push_t", episodes=opts.episodes)
    r.update({"task": "push_t", "episodes": opts.episodes, "short_horizon": opts.short_horizon,
              "blend_steps": opts.blend_steps,
              "success_rate_expert": expert["success_rate"], "mean_coverage_expert": expert["mean_final_reward"],
              "train": train_metrics, "machine": machine()})
    for name, result in runs.items():
        for key, figure in (("success_rate", "success_rate"), ("reached_rate", "reached_rate"),
                            ("mean_coverage", "mean_final_reward")):   # push_t's reward is the goal coverage
            r[f"{key}_{name}"] = result[figure]
    rows = [
        (f"s2r runtime DDIM-{r['ddim_steps']} p50 / p99", f"{r['s2r_full_p50_ms']:.2f} / {r['s2r_full_p99_ms']:.2f} ms"),
        (f"diffusers DDIMScheduler-{r['ddim_steps']} p50 / p99",
         f"{r['diffusers_full_p50_ms']:.2f} / {r['diffusers_full_p99_ms']:.2f} ms"),
        ("s2r / diffusers, full (p50)", f"{r['ratio_full_p50']:.2f}"),
        (f"s2r warm start ({r['warm_start_steps']} steps) p50", f"{r['s2r_warm_p50_ms']:.2f} ms"),
        (f"diffusers warm start ({r['warm_start_steps']} steps) p50", f"{r['diffusers_warm_p50_ms']:.2f} ms"),
        ("s2r / diffusers, warm (p50)", f"{r['ratio_warm_p50']:.2f}"),
        (f"expert success rate / mean final coverage ({opts.episodes} episodes)",
         f"{r['success_rate_expert']:.2f} / {r['mean_coverage_expert']:.3f}"),
    ]
    for name, label in (("full", "DDIM-10"), ("warm", "warm start"), ("short", f"action horizon {opts.short_horizon}")):
        figures = (r[f"success_rate_{name}"], r[f"reached_rate_{name}"], r[f"mean_coverage_{name}"])
        rows.append((f"{label}: success / reached / mean final coverage", "{:.2f} / {:.2f} / {:.3f}".format(*figures)))
    report("diffusion_latency_push_t", "diffusion policy: action-chunk latency (batch 1, one thread) and success",
           rows, r)


if __name__ == "__main__":
    main()
