"""System identification: mujoco.sysid's least squares (s2r) against CMA-ES (the peer, as in PACE).

One recording of the perturbed arm (`hardware/configs/arm_perturbed.yaml`: damping ×1.8,
armature ×1.5, frictionloss +0.05, a 10 ms command delay; kp and kd as the spec's) is
fitted twice in one process run, on the very same problem: `calibration.sysid.SysidProblem`,
its parameters, bounds, start point and batched residual (the rollouts of a batch of
candidate models run on MuJoCo's thread pool for both).

- s2r: `mujoco.sysid.optimize`, box-constrained Levenberg-Marquardt with finite-difference
  Jacobians (one batch of n + 1 rollouts per iteration).
- peer: CMA-ES (`cma`), minimizing the same sum of squares in coordinates scaled to the
  bounds, one batch of `popsize` rollouts per generation, until its budget of evaluations or
  its own stopping rules; the time at which its best point first has every parameter within
  10% of the truth is reported too.

Parameter error is relative to the known truth, max over the parameters (the delay relative to
its true 10 ms). Absolute times are notes on a shared machine; the ratios are the result.

    PYTHONPATH=. python -m bench.sysid_cma --duration 20 --max-evals 6000
    PYTHONPATH=. python -m bench.sysid_cma --params damping,armature,frictionloss,command_delay_s
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import cma
import numpy as np
from mujoco import sysid

from bench.report import machine, report
from s2r.calibration.excitation import run_excitation
from s2r.calibration.recording import read_recording
from s2r.calibration.sysid import PARAM_KINDS, SysidProblem
from s2r.sim.sim_robot import SimRobot, load_sim_robot_config
from s2r.spec import robot_spec

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "hardware" / "configs" / "arm_perturbed.yaml"


def truth_vector(problem: SysidProblem, command_delay_s: float) -> np.ndarray:
    """The perturbed arm's true values of the problem's free parameters, in their order (its delay in seconds)."""
    truth = []
    for param in (p for p in problem.params.values() if not p.frozen):
        kind, nominal = param.name.split(".")[0], float(param.nominal[0])
        truth.append({"damping": 1.8 * nominal, "armature": 1.5 * nominal, "frictionloss": nominal + 0.05,
                      "command_delay_s": command_delay_s}.get(kind, nominal))
    return np.array(truth)


def max_error(x: np.ndarray, truth: np.ndarray) -> float:
    """Largest relative parameter error."""
    return float(np.max(np.abs(x - truth) / np.abs(truth)))


def solve_least_squares(problem: SysidProblem, max_iters: int = 50) -> dict[str, Any]:
    start = problem.params.copy().move_off_bounds()
    began = time.perf_counter()
    solved, _ = sysid.optimize(start, problem.residual_fn, optimizer="mujoco", verbose=False, max_iters=max_iters,
                               output=io.StringIO())
    wall = time.perf_counter() - began
    return {"x": solved.as_vector(), "wall_s": wall}


def solve_cma(problem: SysidProblem, truth: np.ndarray, *, max_evals: int, seed: int,
              sigma0: float = 0.2) -> dict[str, Any]:
    lower, upper = problem.params.get_bounds()
    span = upper - lower
    z0 = (problem.params.copy().move_off_bounds().as_vector() - lower) / span
    es = cma.CMAEvolutionStrategy(z0, sigma0, {"bounds": [0.0, 1.0], "seed": seed + 1, "maxfevals": max_evals,
                                                "verbose": -9, "tolfun": 1e-16, "tolx": 1e-12})
    began = time.perf_counter()
    within_10 = None
    while not es.stop():
        population = np.array(es.ask())
        r = problem.residual((lower + population * span).T)
        es.tell(list(population), list(0.5 * np.sum(r * r, axis=0)))
        best = lower + np.asarray(es.result.xbest) * span
        if within_10 is None and max_error(best, truth) <= 0.10:
            within_10 = time.perf_counter() - began
    wall = time.perf_counter() - began
    return {"x": lower + np.asarray(es.result.xbest) * span, "wall_s": wall, "evaluations": int(es.result.evaluations),
            "within_10pct_s": within_10, "stop": {k: str(v) for k, v in es.stop().items()}}


def run(duration_s: float = 20.0, max_evals: int = 6000, seed: int = 0,
        kinds: tuple[str, ...] = PARAM_KINDS) -> dict[str, Any]:
    """Both solvers on one excitation of the perturbed arm: wall time and parameter error of each, ratios."""
    spec = robot_spec("arm")
    config = load_sim_robot_config(CONFIG)
    config.realtime = False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arm.mcap"
        with SimRobot(spec, config) as robot:
            run_excitation(robot, spec, duration_s=duration_s, seed=seed, out=path)
        problem = SysidProblem(read_recording(path, spec), spec, kinds)
    truth = truth_vector(problem, config.command_delay_s)
    lm = solve_least_squares(problem)
    es = solve_cma(problem, truth, max_evals=max_evals, seed=seed)
    names = problem.params.get_non_frozen_parameter_names()
    lm_error, es_error = max_error(lm["x"], truth), max_error(es["x"], truth)
    return {
        "benchmark": "sysid_cma", "machine": machine(), "robot": spec.name, "recording_s": duration_s,
        "kinds": list(kinds), "parameters": len(names), "rmse_initial": problem.rmse(problem.params.as_vector()),
        "s2r_wall_s": lm["wall_s"], "s2r_max_rel_error": lm_error, "s2r_rmse": problem.rmse(lm["x"]),
        "cma_wall_s": es["wall_s"], "cma_max_rel_error": es_error, "cma_rmse": problem.rmse(es["x"]),
        "cma_evaluations": es["evaluations"], "cma_within_10pct_s": es["within_10pct_s"], "cma_stop": es["stop"],
        "ratio_wall_cma_over_s2r": es["wall_s"] / lm["wall_s"],
        "ratio_error_cma_over_s2r": es_error / max(lm_error, 1e-300),
        "s2r_params": dict(zip(names, lm["x"].tolist())), "cma_params": dict(zip(names, es["x"].tolist())),
        "truth": dict(zip(names, truth.tolist())),
    }


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of excitation")
    parser.add_argument("--max-evals", type=int, default=6000, help="CMA-ES budget of model evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default=",".join(PARAM_KINDS), help="kinds to fit (default: all)")
    opts = parser.parse_args(args)
    r = run(opts.duration, opts.max_evals, opts.seed, tuple(opts.params.split(",")))
    within = r["cma_within_10pct_s"]
    rows = [
        ("parameters fitted", str(r["parameters"])),
        ("position RMSE, initial model (rad)", f"{r['rmse_initial']:.3g}"),
        ("s2r (mujoco.sysid LM): wall s", f"{r['s2r_wall_s']:.2f}"),
        ("s2r: max relative parameter error", f"{r['s2r_max_rel_error']:.2e}"),
        ("s2r: position RMSE (rad)", f"{r['s2r_rmse']:.2e}"),
        ("CMA-ES: wall s", f"{r['cma_wall_s']:.2f} ({r['cma_evaluations']} evaluations)"),
        ("CMA-ES: first within 10%, s", "never" if within is None else f"{within:.2f}"),
        ("CMA-ES: max relative parameter error", f"{r['cma_max_rel_error']:.2e}"),
        ("CMA-ES: position RMSE (rad)", f"{r['cma_rmse']:.2e}"),
        ("wall ratio CMA-ES / s2r", f"{r['ratio_wall_cma_over_s2r']:.1f}"),
        ("error ratio CMA-ES / s2r", f"{r['ratio_error_cma_over_s2r']:.2g}"),
    ]
    name = "sysid_cma" if set(r["kinds"]) == set(PARAM_KINDS) else f"sysid_cma_{len(r['kinds'])}kinds"
    report(name, f"system identification: {r['parameters']} parameters of the arm, LM vs CMA-ES", rows, r)


if __name__ == "__main__":
    main()
