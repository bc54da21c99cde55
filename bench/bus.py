"""Dynamixel bus benchmarks: tick rate against the wire limit and against one-by-one reads; the reach policy on the
emulated arm and the fault matrix.

1. rate: 6 Dynamixel XM430-W350 on an emulated 1 Mbaud bus (the SO-101 arm's 6-joint model, mounted with
   Dynamixels by the default calibration: ids 1-6), ticks back to back. s2r: `Dynamixel.read_state` (one
   GroupSyncRead of current/velocity/position) + `write_command` (one GroupSyncWrite of goal position).
   Wire limit: the bytes of the tick's packets × 10 bits / baud (sync read instruction 14 + n, n status
   packets of 11 + 10, sync write 14 + 5n: 190 bytes at n = 6, 1.90 ms, 526 Hz). Peer, the same SDK:
   each motor read on its own (readTxRx of the same 10 bytes: 14 + 21 bytes per motor) + the same sync write.
   Idle, and again with a busy-looping process on every core (the ticking thread and the emulator's bus thread
   keep their SCHED_FIFO priorities: what a robot computer under load gives its control loop).
2. reach: the exported reach policy in s2r's RobotLoop (what `s2r deploy` runs in robot_node) on the emulated
   Dynamixel arm at its 50 Hz, targets one after the other; the end effector's distance to each target at the
   end of its hold, the loop's figures (achieved rate, period p99, state→command), stale ticks.
3. faults: the same loop, each fault of the emulator switched on while the policy holds a target: what the
   robot did (the driver's latched fault, the SafetyFilter's mode), ticks from the fault to damping, and the
   commands written out of limits (joint limits, effort, gains; must be 0).

    PYTHONPATH=. python -m bench.bus --policy runs/reach_dxl/reach.onnx
    PYTHONPATH=. python -m bench.bus --parts rate       # the tick rate alone, idle and under a CPU hog
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from dynamixel_sdk import COMM_SUCCESS

from bench.deploy import CpuHog
from bench.report import machine, report
from s2r.hardware.deadline import set_realtime_priority
from s2r.hardware.drivers import open_driver
from s2r.hardware.drivers.dynamixel import STATE_BLOCK
from s2r.hardware.robot_loop import LoopConfig, RobotLoop, TaskInputs
from s2r.hardware.safety import SafetyFilter
from s2r.interface import RobotInterface
from s2r.runtime.load import load_runtime
from s2r.sim.emulate import EmulatorProcess
from s2r.sim.model import compile_model
from s2r.spec import robot_spec
from s2r.state import Command

ROOT = Path(__file__).resolve().parent.parent
ARM_CALIBRATION = ROOT / "hardware" / "configs" / "arm_dynamixel.yaml"
PARTS = ("rate", "reach", "faults")
"""The benchmark's parts (the module's 1-3); `rate` runs idle and under a CPU hog."""
FAULTS = ("drop_next 2 2", "drop 2", "corrupt 3", "silent 1", "bus_down", "overload 2", "overheating 3")
"""The fault matrix's rows: emulator fault switches (s2r.hardware.emulators.serial_bus)."""
TARGETS = np.array([[0.35, 0.1, 0.3], [0.25, -0.2, 0.4], [0.3, 0.25, 0.15], [0.4, 0.0, 0.25]])
"""Reach targets in the arm's base frame, m."""


def wire_bytes(n: int) -> dict[str, int]:
    """Bytes on the wire per tick for n motors: one sync read + one sync write, or n reads + one sync write."""
    status = 11 + STATE_BLOCK[1]
    sync_write = 14 + 5 * n
    return {"sync": (14 + n) + n * status + sync_write, "one_by_one": n * (14 + status) + sync_write}


def rate(ticks: int = 1500, baud: int = 1_000_000, rt_priority: int = 50, hog: bool = False) -> dict[str, Any]:
    """Ticks per second and p99 tick time of sync read+write and of one-by-one reads, on 6 emulated motors; the
    ticking thread under SCHED_FIFO `rt_priority` where permitted (as robot_node's loop), the emulator at its own;
    with `hog`, a busy-looping process on every core throughout (bench.deploy's CpuHog)."""
    spec = robot_spec("so101")
    n = spec.num_joints
    with CpuHog() if hog else nullcontext():  # started first: the hog inherits normal scheduling, not SCHED_FIFO
        note = set_realtime_priority(rt_priority)
        try:
            sync, single, single_missed, faults, bus = _rate_ticks(spec, ticks, baud)
        finally:
            if not note:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    wire = {kind: count * 10 / baud for kind, count in wire_bytes(n).items()}
    sync_hz, single_hz = 1 / sync.mean(), 1 / single.mean()
    return {"motors": n, "baud": baud, "ticks_each": ticks, "rt_priority": 0 if note else rt_priority, "cpu_hog": hog,
            "wire_bytes_per_tick": wire_bytes(n)["sync"], "wire_limit_hz": 1 / wire["sync"],
            "sync_hz": sync_hz, "sync_p50_ms": float(np.percentile(sync, 50) * 1e3),
            "sync_p99_ms": float(np.percentile(sync, 99) * 1e3), "sync_fraction_of_wire_limit": sync_hz * wire["sync"],
            "one_by_one_wire_limit_hz": 1 / wire["one_by_one"], "one_by_one_hz": single_hz,
            "one_by_one_p99_ms": float(np.percentile(single, 99) * 1e3), "sync_over_one_by_one": sync_hz / single_hz,
            "missed_replies": int(sum(f.missed for f in faults.values())), "one_by_one_missed_replies": single_missed,
            "emulator_physics_overruns": bus["physics_overruns"],
            "emulator_reply_late_us_mean": bus["reply_late_us_total"] / max(bus["replies_written"], 1),
            "emulator_reply_late_us_max": bus["reply_late_us_max"]}


def _rate_ticks(spec, ticks: int, baud: int):
    """rate's measurement: (sync tick times, one-by-one tick times, one-by-one misses, driver faults, emulator stats)."""
    n = spec.num_joints
    with EmulatorProcess("dynamixel", "so101", baud=baud) as emulator, \
            open_driver(f"dynamixel:{emulator.port}@{baud}", spec) as robot:
        robot.enable()
        hold = robot.read_state().q
        command = Command(q=hold, dq=np.zeros(n), kp=spec.joint_array("kp"), kd=spec.joint_array("kd"),
                          tau_ff=np.zeros(n))
        sync, single = np.empty(ticks), np.empty(ticks)
        single_missed = 0
        for k in range(2 * ticks):  # alternating rounds of 100, so that the machine's noise falls on both
            one_by_one = (k // 100) % 2 == 1
            start = time.perf_counter()
            if one_by_one:
                for motor in robot.calibration.motors:
                    _, result, _ = robot._packets.readTxRx(robot._port, motor.id, *STATE_BLOCK)
                    single_missed += int(result != COMM_SUCCESS)
                robot.write_command(command)
                single[(k // 200) * 100 + k % 100] = time.perf_counter() - start
            else:
                robot.read_state()
                robot.write_command(command)
                sync[(k // 200) * 100 + k % 100] = time.perf_counter() - start
        faults = robot.faults()
        bus = emulator.stats()
    return sync, single, single_missed, faults, bus


class _Recorder(RobotInterface):
    """A robot that keeps what the loop writes (the filtered commands) and counts those out of limits."""

    def __init__(self, robot: RobotInterface, safety: SafetyFilter) -> None:
        self.robot, self.spec = robot, robot.spec
        self.kp_max = safety.config.max_gain_ratio * self.spec.joint_array("kp")
        self.effort = self.spec.joint_array("effort_limit")
        self.out_of_limits = 0
        self.writes = 0

    def connect(self) -> None: self.robot.connect()
    def enable(self) -> None: self.robot.enable()
    def read_state(self): return self.robot.read_state()
    def disable(self) -> None: self.robot.disable()
    def close(self) -> None: self.robot.close()

    def write_command(self, command: Command) -> None:
        self.writes += 1
        bad = (np.any(command.q < self.spec.lower - 1e-9) or np.any(command.q > self.spec.upper + 1e-9)
               or np.any(np.abs(command.tau_ff) > self.effort + 1e-9) or np.any(command.kp > self.kp_max + 1e-9)
               or not all(np.isfinite(getattr(command, k)).all() for k in ("q", "dq", "kp", "kd", "tau_ff")))
        self.out_of_limits += int(bad)
        self.robot.write_command(command)


def _ee_distance(model: mujoco.MjModel, data: mujoco.MjData, q: np.ndarray, target: np.ndarray) -> float:
    data.qpos[:3] = q
    mujoco.mj_kinematics(model, data)
    return float(np.linalg.norm(data.site("ee").xpos - target))


def _loop(policy: Path, emulator: EmulatorProcess):
    spec = robot_spec("arm")
    robot = open_driver(f"dynamixel:{emulator.port},calibration={ARM_CALIBRATION}", spec)
    robot.connect()
    safety = SafetyFilter(spec, spec.control_period)
    recorder = _Recorder(robot, safety)
    inputs = TaskInputs({"target": 3})
    loop = RobotLoop(recorder, safety, runtime=load_runtime(policy, spec), inputs=inputs, config=LoopConfig(),
                     log=lambda line: None)
    return spec, robot, recorder, inputs, loop


def reach(policy: Path, hold_s: float = 4.0) -> dict[str, Any]:
    """The reach policy in the RobotLoop on the emulated Dynamixel arm: end-effector errors and loop figures."""
    model = compile_model(robot_spec("arm"), "position")
    data = mujoco.MjData(model)
    with EmulatorProcess("dynamixel", "arm") as emulator:
        spec, robot, recorder, inputs, loop = _loop(policy, emulator)
        inputs.set("target", TARGETS[0])
        loop.enable()
        loop.start()
        time.sleep(2.0)  # soft start and fade-in
        errors = []
        for target in TARGETS:
            inputs.set("target", target)
            time.sleep(hold_s)
            errors.append(_ee_distance(model, data, robot.read_state().q, target))
        loop.stop()
        loop.damp_and_disable(0.3)
        stats = loop.stats()
        faults = robot.faults()
        robot.close()
    return {"targets": len(TARGETS), "hold_s": hold_s, "ee_error_m": errors, "ee_error_max_m": max(errors),
            "control_hz_target": stats["control_hz_target"], "control_hz_achieved": stats["control_hz_achieved"],
            **{k: stats[k] for k in stats if k.startswith(("period_", "state_to_command"))},
            "stale_ticks": stats["stale_ticks"], "ticks": stats["ticks"], "commands_out_of_limits": recorder.out_of_limits,
            "missed_replies": int(sum(f.missed for f in faults.values())),
            "retries": int(sum(f.retries for f in faults.values()))}


def fault_matrix(policy: Path, before_s: float = 3.0, after_s: float = 1.5) -> list[dict[str, Any]]:
    """Each fault switched on while the policy holds a target: what the robot did, within how many ticks."""
    rows = []
    for fault in FAULTS:
        with EmulatorProcess("dynamixel", "arm") as emulator:
            spec, robot, recorder, inputs, loop = _loop(policy, emulator)
            inputs.set("target", TARGETS[0])
            loop.enable()
            loop.start()
            time.sleep(before_s)
            modes, faults, qs = [], [], []
            stop = threading.Event()

            def watch() -> None:  # one sample per control period: the loop's mode, the driver's fault, the arm
                while not stop.wait(spec.control_period):
                    modes.append(loop.mode())
                    faults.append(robot.fault)
                    qs.append(emulator_q(loop))

            watcher = threading.Thread(target=watch)
            ticks_before = loop.deadlines.ticks
            emulator.fault(fault)
            watcher.start()
            time.sleep(after_s)
            stop.set()
            watcher.join()
            ticks = loop.deadlines.ticks - ticks_before
            loop.stop()
            loop.damp_and_disable(0.3)
            statuses = robot.diagnostics()
            robot.close()
        first = lambda values, ok: next((i + 1 for i, v in enumerate(values) if ok(v)), None)  # noqa: E731
        flagged = [f"motor {s.id}: {s.message}" for s in statuses if s.level != "OK"]
        rows.append({"fault": fault, "driver_fault": next((f for f in faults if f), None),
                     "ticks_to_driver_fault": first(faults, bool), "ticks_to_damping": first(modes, lambda m: m == "damping"),
                     "final_mode": modes[-1] if modes else None, "ticks_observed": ticks,
                     "commands_out_of_limits": recorder.out_of_limits, "diagnostics": flagged,
                     "q_rad": [list(map(float, q)) for q in qs], "modes": modes})
    return rows


def emulator_q(loop: RobotLoop) -> list[float]:
    """The joint positions the loop last read (rad); NaN before its first read."""
    state = loop.state
    return list(state.q) if state is not None else [float("nan")] * 3


def plot_faults(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per fault: the measured joint positions against ticks from the fault, damping shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 1.6 * len(rows)), sharex=True)
    for ax, row in zip(axes, rows):
        q = np.array(row["q_rad"])
        ticks = np.arange(1, len(q) + 1)
        for j, name in enumerate(("yaw", "shoulder", "elbow")):
            ax.plot(ticks, q[:, j], label=name)
        damping = np.array([m == "damping" for m in row["modes"]])
        ax.fill_between(ticks, 0, 1, where=damping, transform=ax.get_xaxis_transform(), color="0.85",
                        label="watchdog damping")
        if row["ticks_to_driver_fault"]:
            ax.axvline(row["ticks_to_driver_fault"], color="red", lw=1, label="driver fault latched")
        ax.set_ylabel("rad")
        ax.set_title(f"{row['fault']}: {row['commands_out_of_limits']} commands out of limits", fontsize=9)
    axes[0].legend(fontsize=7, ncol=5, loc="upper right")
    axes[-1].set_xlabel("ticks (20 ms) after the fault is switched on")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(policy: str | Path, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    load = os.getloadavg()[0]
    result: dict[str, Any] = {"machine": machine(), "load_average_1min": load}
    rows = []
    if "rate" in parts:
        result["rate"] = rate()
        result["rate_cpu_hog"] = rate(hog=True)
        for key, label in (("rate", ""), ("rate_cpu_hog", ", CPU hog")):
            r = result[key]
            rows += [(f"6 motors, 1 Mbaud: sync read + sync write{label}",
                      f"{r['sync_hz']:.0f} Hz, p50 {r['sync_p50_ms']:.2f} ms, p99 {r['sync_p99_ms']:.2f} ms"),
                     (f"fraction of the wire limit ({r['wire_limit_hz']:.0f} Hz, 190 B/tick){label}",
                      f"{r['sync_fraction_of_wire_limit']:.2f}"),
                     (f"one by one (same SDK){label}", f"{r['one_by_one_hz']:.0f} Hz, p99 {r['one_by_one_p99_ms']:.2f} "
                                                       f"ms (wire limit {r['one_by_one_wire_limit_hz']:.0f} Hz)"),
                     (f"sync / one by one{label}", f"{r['sync_over_one_by_one']:.2f}")]
    if "reach" in parts:
        d = result["reach"] = reach(Path(policy))
        rows += [("reach: max ee error after each hold", f"{d['ee_error_max_m'] * 100:.1f} cm"),
                 ("reach: achieved rate", f"{d['control_hz_achieved']:.1f} Hz of {d['control_hz_target']:.0f}"),
                 ("reach: commands out of limits", str(d["commands_out_of_limits"]))]
    if "faults" in parts:
        result["faults"] = fault_matrix(Path(policy))
        result["fault_figure"] = str(plot_faults(result["faults"], ROOT / "docs" / "figures" / "dynamixel_faults.png"))
    for row in result.get("faults", []):
        rows.append((f"fault {row['fault']}", f"{row['final_mode']}; driver fault after {row['ticks_to_driver_fault']}, "
                                              f"damping after {row['ticks_to_damping']} ticks; "
                                              f"{row['commands_out_of_limits']} out of limits"))
    rows.append(("load average (1 min)", f"{load:.2f}"))
    report("bus", "Dynamixel bus (emulated)", rows, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default=str(ROOT / "runs" / "reach_dxl" / "reach.onnx"),
                        help="the exported reach policy (s2r train reach; s2r export)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"which parts to run, comma-separated (default {','.join(PARTS)}; rate needs no policy)")
    args = parser.parse_args()
    parts = tuple(args.parts.split(","))
    if set(parts) - set(PARTS):
        parser.error(f"--parts: expected some of {', '.join(PARTS)}, got {args.parts}")
    run(args.policy, parts)
