"""`make demo`: train cartpole on the CPU, export it, evaluate the ONNX file, report.

The whole user path in one command: PPO on the batched simulator → ONNX with
its contract → the robot-side runtime driving the simulator → figures (the
inference latency from `s2r.apps.latency`: the demo needs no source checkout).

    report = run_demo(Path("runs/demo"))          # s2r demo --out runs/demo
    report["onnx_success_rate"], report["runtime_step_p50_us"]
"""

from __future__ import annotations

import json
from pathlib import Path


def run_demo(out: Path, *, iterations: int | None = None) -> dict:
    """Run the demo into `out`; returns the report it prints and writes to `out/report.json`."""
    from rich.console import Console
    from rich.table import Table

    from s2r.apps.latency import policy_latency
    from s2r.policies.evaluate import evaluate
    from s2r.policies.export import ExportedActor, export_onnx
    from s2r.policies.train import default_config, load_policy, train
    from s2r.spec import robot_spec

    console = Console()
    run_dir, onnx_path = out / "cartpole", out / "cartpole.onnx"
    cfg = default_config("cartpole", iterations=iterations)
    console.rule(f"1/4 train cartpole swing-up: PPO, {cfg.num_envs} worlds, {cfg.iterations} iterations")
    metrics = train(cfg, run_dir)
    console.rule("2/4 export to ONNX with the policy contract")
    policy, contract, _ = load_policy(run_dir)
    export_onnx(policy, contract, onnx_path)
    console.print(f"wrote {onnx_path}: {contract.obs_dim} observations ({', '.join(t.name for t in contract.observation)}), "
                  f"{contract.action.num_actions} {contract.action.mode} action")
    console.rule("3/4 evaluate the ONNX file through the robot runtime, in simulation")
    result = evaluate(onnx_path, episodes=64)
    console.rule("4/4 inference latency: runtime step vs torch forward")
    latency = policy_latency(onnx_path, robot_spec(contract.robot), actor=ExportedActor(policy),
                             obs_dim=contract.obs_dim * contract.history_length, iterations=1000)

    report = {
        "train_wall_s": metrics["wall_s"], "train_env_steps": metrics["env_steps"],
        "train_env_steps_per_s": metrics["env_steps_per_s"], "train_success_rate": metrics["success_rate"],
        "onnx_mean_return": result["mean_return"], "onnx_success_rate": result["success_rate"],
        "onnx_episodes": result["episodes"],
        "runtime_step_p50_us": latency["runtime_step_p50_us"], "runtime_step_p99_us": latency["runtime_step_p99_us"],
        "torch_forward_p50_us": latency["torch_forward_p50_us"],
    }
    table = Table(title="s2r demo: cartpole swing-up", show_header=False)
    for key, value in report.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"policy: {onnx_path}   training curve: {run_dir / 'training_curve.png'}   "
                  f"TensorBoard: tensorboard --logdir {run_dir}")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report

