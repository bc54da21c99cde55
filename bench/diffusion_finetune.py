"""Success of behaviour cloning alone, DPPO and DSRL on the BC run's task (push_t, reach), and their chunk latency.

Given the BC run and the two fine-tuned run directories (`s2r finetune push_t --method dppo|dsrl --from BC`),
one process run evaluates the three exported policies on the same `--episodes` episodes of its task (seed
`--seed`, action horizon 8, chunks not cross-faded, as docs/diffusion.md measures BC), reads each
fine-tuning's control ticks, wall and process CPU seconds from its metrics.json, and times one action
chunk of each in s2r's runtime (batch 1, one thread, calls alternated; `bench.diffusion_latency.chunk_latency`)
with the BC policy as the peer. Prints a table and writes JSON.

    s2r finetune push_t --method dppo --from runs/dp --out runs/dp_dppo
    s2r finetune push_t --method dsrl --from runs/dp --out runs/dp_dsrl
    PYTHONPATH=. python -m bench.diffusion_finetune --run runs/dp --dppo runs/dp_dppo --dsrl runs/dp_dsrl
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.diffusion_latency import chunk_latency
from bench.report import machine, report
from s2r.policies.diffusion.export import export_diffusion
from s2r.policies.evaluate import evaluate
from s2r.policies.finetune import POLICY
from s2r.runtime import read_contract


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the BC diffusion run directory")
    parser.add_argument("--dppo", type=Path, required=True, help="its DPPO fine-tuning's run directory")
    parser.add_argument("--dsrl", type=Path, required=True, help="its DSRL fine-tuning's run directory")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="the evaluation episodes' seed")
    parser.add_argument("--iterations", type=int, default=200, help="timed chunks of each policy")
    opts = parser.parse_args(args)

    with tempfile.TemporaryDirectory() as tmp:
        policies = {"bc": export_diffusion(opts.run, Path(tmp) / "bc.onnx"),
                    "dppo": opts.dppo / POLICY, "dsrl": opts.dsrl / POLICY}
        task = read_contract(policies["bc"]).provenance["task"]
        r: dict[str, Any] = {"task": task, "episodes": opts.episodes, "seed": opts.seed, "action_horizon": 8,
                             "blend_steps": 0, "machine": machine()}
        for name, path in policies.items():
            result = evaluate(path, episodes=opts.episodes, seed=opts.seed, blend_steps=0)
            for key in ("success_rate", "reached_rate", "mean_final_reward"):
                r[f"{name}_{key}"] = result[key]
        for name in ("dppo", "dsrl"):
            metrics = json.loads((getattr(opts, name) / "metrics.json").read_text())
            for key in ("control_ticks", "train_wall_s", "train_cpu_s"):
                r[f"{name}_{key}"] = metrics[key]
        r["latency"] = chunk_latency(policies, iterations=opts.iterations)
    lat = r["latency"]
    rows = [("policy", "success / reached / mean final reward; control ticks, CPU s, wall s; chunk p50 (ratio to BC)")]
    for name, label in (("bc", "behaviour cloning"), ("dppo", "DPPO"), ("dsrl", "DSRL")):
        figures = "{:.2f} / {:.2f} / {:.3f}".format(r[f"{name}_success_rate"], r[f"{name}_reached_rate"],
                                                    r[f"{name}_mean_final_reward"])
        training = (f"; {r[f'{name}_control_ticks']:,} ticks, {r[f'{name}_train_cpu_s']:.0f} CPU s, "
                    f"{r[f'{name}_train_wall_s']:.0f} s" if name != "bc" else "")
        rows.append((label, f"{figures}{training}; {lat[f'{name}_p50_ms']:.2f} ms ({lat[f'ratio_{name}_p50']:.2f})"))
    report(f"diffusion_finetune_{task}", f"{task}, {opts.episodes} episodes at action horizon 8: BC, DPPO, DSRL", rows, r)


if __name__ == "__main__":
    main()
