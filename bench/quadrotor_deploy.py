"""The Crazyflie's 500 Hz deploy: `s2r deploy` of a hover policy, idle and under a CPU hog, against the same
policy stepped synchronously.

Two one-process `s2r deploy` runs of a crazyflie_500hz hover policy on SimRobot
(`hardware/configs/crazyflie_hover.yaml`: held in the air 0.14 m from the target, tilted, motors off, let go
at the first thrust command), one on the machine as it is and one with a busy-loop process on every core
(bench.deploy's hog). Each reports the loop's period p99 error, state → command p50/p99/max, late and stale
ticks, inference, and the position error to the target (largest over the run, p50/p99 from 3 s). The
reference, in the same run: the same policy on the same config stepped synchronously (SimRobot without
its thread, the same SafetyFilter on simulation time: no transport, no wall clock), whose position
error is the dynamics' own.

The policy is `--policy FILE.onnx` (a crazyflie_500hz policy), or by default the hand-written geometric
controller (`s2r.policies.hover_controller.GeometricHoverController`, 500 Hz, lead 2) exported through the
hover task's contract, as tests/test_quadrotor_deploy.py does.

    PYTHONPATH=. python -m bench.quadrotor_deploy [--policy FILE.onnx] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.deploy import CpuHog, load_average
from bench.report import finite_or_none, machine, report
from s2r.apps.deploy import HOVER_SETTLE_S, deploy
from s2r.hardware.safety import SafetyConfig, SafetyFilter
from s2r.runtime import load_runtime
from s2r.sim.sim_robot import SimRobot, load_sim_robot_config
from s2r.spec import robot_spec

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "hardware" / "configs" / "crazyflie_hover.yaml"
FIGURES = ("period_p99_error_us", "state_to_command_p50_us", "state_to_command_p99_us", "state_to_command_max_us",
           "late_ticks", "stale_ticks", "overruns", "inference_p50_us", "inference_p99_us", "control_hz_achieved",
           "position_error_max_m", "position_error_p50_m", "position_error_p99_m")
"""What each run reports (from `s2r deploy`'s result)."""


def export_controller(path: Path) -> Path:
    """The geometric hover controller at 500 Hz, exported for crazyflie_500hz with the hover task's contract."""
    from s2r.policies.export import export_onnx
    from s2r.sim.env import BatchEnv
    from s2r.policies.hover_controller import GeometricHoverController
    from s2r.sim.quadrotor import QuadrotorHover

    env = BatchEnv(QuadrotorHover(), 1, spec=robot_spec("crazyflie_500hz"))
    return export_onnx(GeometricHoverController(control_period=0.002, lead=2.0),
                       env.contract({"task": "quadrotor_hover"}), path)


def synchronous_position_error(policy: Path, duration: float) -> dict[str, float]:
    """The position error of `policy` on SimRobot stepped synchronously under the SafetyFilter (as deployed:
    no thrust fade): largest over the run, p50/p99 from HOVER_SETTLE_S."""
    spec = robot_spec("crazyflie_500hz")
    config = load_sim_robot_config(CONFIG)
    config.realtime = False
    robot, runtime = SimRobot(spec, config), load_runtime(policy, spec)
    safety = SafetyFilter(spec, spec.control_period, SafetyConfig(fade_in_s=0.0))
    robot.connect()
    robot.enable()
    distance = []
    for _ in range(round(duration / spec.control_period)):
        state = robot.read_state()
        robot.write_command(safety.filter(runtime.step(state), state, state.stamp))
        robot.step(1)
        distance.append(float(np.linalg.norm(robot.read_state().base_pos_w)))
    robot.close()
    settled = np.array(distance[round(HOVER_SETTLE_S / spec.control_period):])
    return {"position_error_max_m": max(distance), "position_error_p50_m": float(np.percentile(settled, 50)),
            "position_error_p99_m": float(np.percentile(settled, 99))}


def run(policy: Path, *, duration: float = 10.0, rt_priority: int = 50) -> dict[str, Any]:
    """The two deploy runs and the synchronous reference; see the module docstring."""
    runs = []
    for hog in (False, True):
        load = load_average()
        with tempfile.TemporaryDirectory(prefix="s2r-bench-quadrotor-") as out:
            if hog:
                with CpuHog():
                    result = deploy(policy, driver=f"sim:{CONFIG}", duration=duration, out_dir=out,
                                    domain_id="random", rt_priority=rt_priority, view="none")
            else:
                result = deploy(policy, driver=f"sim:{CONFIG}", duration=duration, out_dir=out, domain_id="random",
                                rt_priority=rt_priority, view="none")
            node = json.loads((Path(out) / "robot_node.json").read_text())
        runs.append({"cpu_hog": hog, "load_before": load, "rt_priority": result["rt_priority"],
                     "safety_events": result["safety_events"], "rehearsals": node.get("rehearsals"),
                     **{key: finite_or_none(float(result[key])) for key in FIGURES}})
    return {"policy": str(policy), "robot": "crazyflie_500hz", "driver": f"sim:{CONFIG}", "duration_s": duration,
            "runs": runs, "synchronous": synchronous_position_error(policy, duration), "machine": machine()}


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", help="a crazyflie_500hz policy (.onnx); default: the geometric controller")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of control per run")
    parser.add_argument("--rt-priority", type=int, default=50, help="SCHED_FIFO priority where permitted; 0: none")
    opts = parser.parse_args(args)
    with tempfile.TemporaryDirectory(prefix="s2r-bench-quadrotor-policy-") as tmp:
        policy = Path(opts.policy) if opts.policy else export_controller(Path(tmp) / "hover_500hz.onnx")
        r = run(policy, duration=opts.duration, rt_priority=opts.rt_priority)
    rows = []
    for x in r["runs"]:
        name = "CPU hog" if x["cpu_hog"] else "idle"
        rows += [(f"{name}: period p99 error, achieved rate",
                  f"{x['period_p99_error_us']:.0f} µs, {x['control_hz_achieved']:.1f} Hz"),
                 (f"{name}: state→command p50 / p99 / max", f"{x['state_to_command_p50_us']:.0f} / "
                  f"{x['state_to_command_p99_us']:.0f} / {x['state_to_command_max_us']:.0f} µs"),
                 (f"{name}: late / stale ticks, overruns",
                  f"{x['late_ticks']:.0f} / {x['stale_ticks']:.0f}, {x['overruns']:.0f}"),
                 (f"{name}: inference p50 / p99", f"{x['inference_p50_us']:.0f} / {x['inference_p99_us']:.0f} µs"),
                 (f"{name}: position error max; p50 / p99 from {HOVER_SETTLE_S:g} s",
                  f"{x['position_error_max_m']:.3f} m; {x['position_error_p50_m'] * 1e3:.1f} / "
                  f"{x['position_error_p99_m'] * 1e3:.1f} mm")]
    s = r["synchronous"]
    rows.append((f"synchronous SimRobot: position error max; p50 / p99 from {HOVER_SETTLE_S:g} s",
                 f"{s['position_error_max_m']:.3f} m; {s['position_error_p50_m'] * 1e3:.1f} / "
                 f"{s['position_error_p99_m'] * 1e3:.1f} mm"))
    if any(not math.isfinite(v) for v in s.values()):
        raise SystemExit("bench.quadrotor_deploy: the synchronous reference's position error is not finite")
    report("quadrotor_deploy", "s2r deploy of the Crazyflie at 500 Hz, idle and under a CPU hog", rows, r)


if __name__ == "__main__":
    main()
