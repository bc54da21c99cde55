"""Deploy latency: the one-process loop against the two-process mode, idle and under a CPU hog.

Four `s2r deploy` runs of one policy on one SimRobot config: (a) one process (the policy in
robot_node's real-time loop) and (b) `--split` (policy_node in its own process, state and
command over DDS), each on the machine as it is and with a busy-loop process on every core
that the benchmark starts itself. Each reports state → command latency p50/p99/max, the
period's p99 error, late ticks (no new state by the deadline), stale ticks (no fresh state to
act on), inference inside the node and the upright fraction. Two references, measured in the
same run: the upright fraction of the same policy on the same SimRobot config stepped
synchronously (SimRobot without its thread, the same SafetyFilter on simulation time: no
transport, no wall clock), and `PolicyRuntime.step` (the call the node times as its
inference, the same input size) back to back, bench.inference's measure and the goal's peer,
once a control period with a sleep in between, and once a period rehearsed just before, spun
from the rehearsal's end to the step (`LoopConfig.rehearse_s`) as the node's loop calls it. They run on a thread
under the node's loop's SCHED_FIFO priority, so that neither side's p99 is another process's
time slice that the other side is spared. The gap between back to back and once a period is
the caches (the policy's code and weights evicted between ticks); the rehearsed reference is
what the node's loop can at best reach. Each one-process run keeps robot_node's per-tick trace
(`RobotLoop.trace`) and reports where a tick's state → command went (`STAGES`, `TRACE_FIGURES`); the
traces stay in bench/results/deploy_trace.npz and deploy_trace_hog.npz.

    result = run("runs/demo/cartpole.onnx")
    result["runs"][0]["state_to_command_p99_us"], result["synchronous_upright_fraction"]

The default config has no simulated latency (`cartpole_hanging_no_latency.yaml`): state →
command is then what the pipeline adds, which the goal (p99 under 1 ms, one process) is about.

    PYTHONPATH=. python -m bench.deploy runs/demo/cartpole.onnx      # or: s2r bench deploy --policy FILE
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import RESULTS_DIR, finite_or_none, machine, report
from s2r.apps.deploy import TASK_METRICS, deploy
from s2r.geometry import wrap_to_pi
from s2r.hardware.safety import SafetyFilter
from s2r.runtime import load_runtime, read_contract
from s2r.spec import robot_spec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DRIVER = f"sim:{ROOT / 'hardware' / 'configs' / 'cartpole_hanging_no_latency.yaml'}"
FIGURES = ("state_to_command_p50_us", "state_to_command_p99_us", "state_to_command_max_us", "period_p99_error_us",
           "late_ticks", "stale_ticks", "overruns", "inference_p50_us", "inference_p99_us", "upright_fraction",
           "control_hz_achieved")
"""What each run reports (from `s2r deploy`'s result)."""
REHEARSAL = ("rehearsals", "rehearsal_p50_us", "rehearsal_p99_us")
"""And from robot_node's summary: the loop's rehearsals of the policy and filter before each state (none in split)."""
STAGES = {"announce": ("stamp", "arrival"), "wake": ("arrival", "wake"), "read": ("wake", "read"),
          "step": ("read", "stepped"), "filter_write": ("stepped", "written")}
"""Where a one-process tick's state → command goes, from robot_node's trace (RobotLoop.trace): the robot's
measurement to its announcement (SimRobot's physics thread), the announcement to the loop's wake-up, the read,
the policy's step, the filter and the write."""
TRACE_FIGURES = (*(f"{stage}_{q}_us" for stage in STAGES for q in ("p50", "p99", "worst")), "arrivals_in_rehearsal",
                 "ticks_with_collection", "ticks_waiting")
"""Per one-process run (None in split): each stage's p50/p99, and its share of the tick with the longest state →
command (`_worst_us`; a tick woken by its deadline has no announce, and its wake counts from the stamp); ticks whose state arrived while a rehearsal
still ran (the tick waited for its end); ticks during which a garbage collection ran (any thread); ticks in which
the loop thread blocked (a voluntary context switch between wake-up and write: the GIL or a lock)."""


def tick_stages(trace: dict[str, np.ndarray]) -> dict[str, float]:
    """TRACE_FIGURES of a robot_node trace (`trace.npz`, see RobotLoop.trace), over its ticks that acted."""
    acted = np.isfinite(trace["stamp"]) & np.isfinite(trace["stepped"])
    worst = np.nanargmax(np.where(acted, trace["written"] - trace["stamp"], np.nan)) if acted.any() else None
    figures: dict[str, float] = {}
    for stage, (start, end) in STAGES.items():
        each = trace[end] - trace[start]
        took = each[acted]
        took = took[np.isfinite(took)]
        p50, p99 = np.percentile(took, [50, 99]) if len(took) else (np.nan, np.nan)
        figures[f"{stage}_p50_us"], figures[f"{stage}_p99_us"] = 1e6 * p50, 1e6 * p99
        figures[f"{stage}_worst_us"] = np.nan if worst is None else 1e6 * each[worst]
    if worst is not None and not np.isfinite(trace["arrival"][worst]):   # woken by its deadline: from the stamp
        figures["wake_worst_us"] = 1e6 * (trace["wake"][worst] - trace["stamp"][worst])
    arrival = trace["arrival"]
    in_rehearsal = (arrival > trace["rehearse_start"]) & (arrival < trace["rehearse_end"])
    figures["arrivals_in_rehearsal"] = int(np.sum(in_rehearsal))
    collections = sum(bool(np.any((trace["gc_end"] >= trace["stamp"][i]) & (trace["gc_start"] <= trace["written"][i])))
                      for i in np.flatnonzero(acted))
    figures["ticks_with_collection"] = collections
    figures["ticks_waiting"] = int(np.sum((trace["written_nvcsw"] - trace["wake_nvcsw"])[acted] > 0))
    return figures


class CpuHog:
    """A busy-looping process on every core while the block runs."""

    def __enter__(self) -> CpuHog:
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                          for _ in range(os.cpu_count() or 1)]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def load_average() -> float:
    """The 1-minute load average, as `uptime` prints it."""
    return os.getloadavg()[0]


def synchronous_upright_fraction(policy: str | Path, driver: str, duration: float) -> float:
    """The policy on the same SimRobot config stepped by hand: each control period read → policy →
    SafetyFilter (simulation time) → write → physics, for `duration` s; the task's upright fraction."""
    from s2r.hardware.drivers import load_driver_config, open_driver

    contract = read_contract(policy)
    spec = robot_spec(contract.robot)
    config = load_driver_config(driver)
    config.realtime = False
    metric = TASK_METRICS[contract.provenance.get("task", contract.robot)]
    runtime = load_runtime(policy, spec)
    safety = SafetyFilter(spec, spec.control_period)
    joint = spec.joint_names.index(metric.joint)
    upright = []
    with open_driver(driver, spec, config=config) as robot:
        robot.enable()
        steps = round(spec.control_period / robot.timestep)
        for _ in range(round(duration / spec.control_period)):
            state = robot.read_state()
            upright.append(abs(wrap_to_pi(state.q[joint])) < metric.threshold)
            robot.write_command(safety.filter(runtime.step(state), state, state.stamp))
            robot.step(steps)
    return float(np.mean(upright))


def runtime_step_us(policy: str | Path, *, iterations: int, pause_s: float = 0.0, rehearse_s: float = 0.0,
                    rt_priority: int = 0) -> tuple[float, float]:
    """p50/p99 µs of `PolicyRuntime.step` on one state of the policy's robot, `pause_s` asleep between
    calls (0: back to back, bench.inference's measure), with `rehearse_s` > 0 rehearsed
    (`PolicyRuntime.rehearse`) before each call, then spun `rehearse_s` until it as the node's loop does, on a
    thread under SCHED_FIFO at `rt_priority` where permitted (the node's loop thread's scheduling; 0: normal);
    the first tenth of the calls left out."""
    from s2r.hardware.deadline import set_realtime_priority
    from s2r.state import RobotState

    contract = read_contract(policy)
    spec = robot_spec(contract.robot)
    runtime = load_runtime(policy, spec)
    state = RobotState(0.0, spec.default_q.copy(), np.zeros(spec.num_joints), np.zeros(spec.num_joints))
    times = np.empty(iterations)

    def measure() -> None:
        set_realtime_priority(rt_priority)   # refused: normal scheduling, as the node's loop then has
        for i in range(iterations):
            if pause_s:
                time.sleep(pause_s - rehearse_s)
            if rehearse_s:   # then spun, as DeadlineLoop spins from its prepare to the tick
                runtime.rehearse(state)
                end = time.monotonic() + rehearse_s
                while time.monotonic() < end:
                    time.sleep(0)
            start = time.perf_counter()
            runtime.step(state)
            times[i] = time.perf_counter() - start

    thread = threading.Thread(target=measure, name="bench.deploy reference")
    thread.start()
    thread.join()
    p50, p99 = np.percentile(times[iterations // 10:], [50, 99])
    return float(1e6 * p50), float(1e6 * p99)


def tight_inference_us(policy: str | Path, iterations: int = 2000, rt_priority: int = 0) -> dict[str, float]:
    """`PolicyRuntime.step` back to back on one state (bench.inference's measure): p50/p99 in µs."""
    p50, p99 = runtime_step_us(policy, iterations=iterations, rt_priority=rt_priority)
    return {"tight_inference_p50_us": p50, "tight_inference_p99_us": p99}


def paced_inference_us(policy: str | Path, iterations: int = 300, rt_priority: int = 0) -> dict[str, float]:
    """`PolicyRuntime.step` once per control period, asleep in between as the node's loop is: the
    same call as back to back, with the caches as cold as the node finds them; p50/p99 in µs."""
    period = robot_spec(read_contract(policy).robot).control_period
    p50, p99 = runtime_step_us(policy, iterations=iterations, pause_s=period, rt_priority=rt_priority)
    return {"paced_inference_p50_us": p50, "paced_inference_p99_us": p99}


def rehearsed_inference_us(policy: str | Path, iterations: int = 300, rt_priority: int = 0) -> dict[str, float]:
    """`PolicyRuntime.step` once per control period, rehearsed just before each call and spun from the
    rehearsal's end until it (LoopConfig.rehearse_s) as the node's loop does, asleep otherwise; p50/p99 in µs."""
    from s2r.hardware.robot_loop import LoopConfig

    period = robot_spec(read_contract(policy).robot).control_period
    p50, p99 = runtime_step_us(policy, iterations=iterations, pause_s=period, rehearse_s=LoopConfig().rehearse_s,
                               rt_priority=rt_priority)
    return {"rehearsed_inference_p50_us": p50, "rehearsed_inference_p99_us": p99}


def run(policy: str | Path, *, driver: str = DEFAULT_DRIVER, duration: float = 10.0,
        rt_priority: int = 50) -> dict[str, Any]:
    """The four deploy runs and the two references; see the module docstring."""
    runs = []
    for split in (False, True):
        for hog in (False, True):
            load = load_average()
            with tempfile.TemporaryDirectory(prefix="s2r-bench-deploy-") as out:
                options = dict(driver=driver, duration=duration, out_dir=out, split=split, domain_id="random",
                               rt_priority=rt_priority, trace=not split, view="none")
                if hog:
                    with CpuHog():
                        result = deploy(policy, **options)
                else:
                    result = deploy(policy, **options)
                node = json.loads((Path(out) / "robot_node.json").read_text())
                stages = dict.fromkeys(TRACE_FIGURES)
                if not split:
                    with np.load(Path(out) / "trace.npz") as trace:
                        stages = tick_stages(dict(trace))
                    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                    shutil.copy(Path(out) / "trace.npz", RESULTS_DIR / f"deploy_trace{'_hog' if hog else ''}.npz")
            runs.append({"mode": result["mode"], "cpu_hog": hog, "load_before": load,
                         "rt_priority": result["rt_priority"],
                         **{key: finite_or_none(float(result[key])) for key in FIGURES},
                         **{key: finite_or_none(float(node[key])) if key in node else None for key in REHEARSAL},
                         **{key: None if value is None else finite_or_none(float(value))
                            for key, value in stages.items()}})
    synchronous = synchronous_upright_fraction(policy, driver, duration)
    tight = tight_inference_us(policy, rt_priority=rt_priority)
    paced = paced_inference_us(policy, rt_priority=rt_priority)
    rehearsed = rehearsed_inference_us(policy, rt_priority=rt_priority)
    one_process = [r for r in runs if r["mode"] == "one-process"]
    node_p99 = max(r["inference_p99_us"] for r in one_process)
    return {
        "policy": str(policy),
        "driver": driver,
        "duration_s": duration,
        "runs": runs,
        "synchronous_upright_fraction": synchronous,
        **tight,
        **paced,
        **rehearsed,
        "node_over_tight_inference_p99": node_p99 / tight["tight_inference_p99_us"],
        "node_over_paced_inference_p99": node_p99 / paced["paced_inference_p99_us"],
        "one_process_p99_under_1ms": all(r["state_to_command_p99_us"] < 1000 for r in one_process),
        "one_process_stale_ticks": sum(r["stale_ticks"] for r in one_process),
        "machine": machine(),
    }


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policy", help="an exported cartpole or pendulum policy (.onnx)")
    parser.add_argument("--driver", default=DEFAULT_DRIVER, help="KIND[:WHERE] (default: the no-latency cartpole)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of control per run")
    parser.add_argument("--rt-priority", type=int, default=50, help="SCHED_FIFO priority where permitted; 0: none")
    opts = parser.parse_args(args)
    r = run(opts.policy, driver=opts.driver, duration=opts.duration, rt_priority=opts.rt_priority)
    rows = []
    for x in r["runs"]:
        name = f"{x['mode']}{', CPU hog' if x['cpu_hog'] else ''}"
        rows += [(f"{name}: state→command p50 / p99 / max",
                  f"{x['state_to_command_p50_us']:.0f} / {x['state_to_command_p99_us']:.0f} / "
                  f"{x['state_to_command_max_us']:.0f} µs"),
                 (f"{name}: period p99 error, late / stale ticks",
                  f"{x['period_p99_error_us']:.0f} µs, {x['late_ticks']:.0f} / {x['stale_ticks']:.0f}"),
                 (f"{name}: inference p50 / p99, upright",
                  f"{x['inference_p50_us']:.0f} / {x['inference_p99_us']:.0f} µs, {x['upright_fraction']:.3f}")]
        if x["rehearsals"]:
            rows.append((f"{name}: rehearsals, their p50 / p99",
                         f"{x['rehearsals']:.0f}, {x['rehearsal_p50_us']:.0f} / {x['rehearsal_p99_us']:.0f} µs"))
        if x["step_p50_us"] is not None:
            rows.append((f"{name}: stage p50 / p99 / in the worst tick (" + ", ".join(STAGES) + ")",
                         ", ".join(f"{x[f'{stage}_p50_us']:.0f} / {x[f'{stage}_p99_us']:.0f} / "
                                   f"{_us(x[f'{stage}_worst_us'])}" for stage in STAGES) + " µs"))
            rows.append((f"{name}: ticks: state in a rehearsal, a collection, the loop waiting",
                         f"{x['arrivals_in_rehearsal']:.0f}, {x['ticks_with_collection']:.0f}, "
                         f"{x['ticks_waiting']:.0f}"))
    rows += [("synchronous SimRobot: upright", f"{r['synchronous_upright_fraction']:.3f}"),
             ("PolicyRuntime.step back to back p50 / p99",
              f"{r['tight_inference_p50_us']:.0f} / {r['tight_inference_p99_us']:.0f} µs"),
             ("PolicyRuntime.step once a period p50 / p99",
              f"{r['paced_inference_p50_us']:.0f} / {r['paced_inference_p99_us']:.0f} µs"),
             ("PolicyRuntime.step once a period, rehearsed just before, p50 / p99",
              f"{r['rehearsed_inference_p50_us']:.0f} / {r['rehearsed_inference_p99_us']:.0f} µs"),
             ("inference p99 in the node / back to back (goal ≤ 2)", f"{r['node_over_tight_inference_p99']:.1f}"),
             ("inference p99 in the node / once a period", f"{r['node_over_paced_inference_p99']:.1f}")]
    report("deploy", "s2r deploy: one process vs --split, idle and under a CPU hog", rows, r)


if __name__ == "__main__":
    main()
