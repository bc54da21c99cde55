"""The SO-101's 6 STS3215 servos on an emulated 1 Mbaud Feetech bus: control-loop rate against the wire's limit.

One tick of s2r's driver is one sync read (position, speed, load, voltage, temperature: 8 bytes
from each servo) and one sync write (goal positions) through `FeetechRobot.read_state` and
`write_command`; the peer is the same bus (`FeetechBus`) reading and writing the servos one by
one (a READ of the same 8 bytes and a WRITE of the goal, answered, per servo), and Feetech's own
SDK (`scservo_sdk`: GroupSyncRead and GroupSyncWrite of the same registers) on the same port.
Ticks run back to back, in alternating rounds so that the shared machine's noise falls on all;
besides the rate, each mode's CPU time per tick (the process's, `time.process_time`) shows
what waiting costs: s2r's bus blocks in the kernel, the SDK polls the port. The emulator runs
in its own process (`s2r emulate feetech --robot so101`), so its timing is not the driver's
interpreter's. The ticking thread runs under SCHED_FIFO (robot_node's loop's priority, 50), and the
whole run is repeated with a busy-looping process on every core (the benchmark's own CPU hog).

The wire limit is the bytes a tick puts on the wire at the baud rate, 10 bits a byte:

    sync:        (8 + n) + n (6 + 8)  +  8 + 3 n            = 124 bytes for n = 6: 1.24 ms, 806 Hz
    one by one:  n (8 + 6 + 8)  +  n (9 + 6)                = 222 bytes for n = 6: 2.22 ms, 450 Hz

and each mode's achieved rate is reported against its own limit (goal: >= 0.8 for the sync tick).

    PYTHONPATH=. python -m bench.feetech_bus --ticks 400 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext
from typing import Any

import numpy as np

from bench.deploy import CpuHog
from bench.report import machine, report
from bench.ticks import tick_times
from s2r.hardware.deadline import set_realtime_priority
from s2r.hardware.drivers.feetech import READ_SPAN, FeetechRobot
from s2r.hardware.drivers.feetech_bus import BITS_PER_BYTE, NoReply
from s2r.hardware.drivers.feetech_protocol import STATUS_OVERHEAD, Register, encode_value
from s2r.sim.emulate import EmulatorProcess
from s2r.spec import robot_spec
from s2r.state import Command

BAUD = 1_000_000


def wire_bytes(n: int) -> dict[str, int]:
    """Bytes on the wire per tick for n servos: sync read + n statuses + sync write; and one by one."""
    length = READ_SPAN[1]
    sync = (8 + n) + n * (STATUS_OVERHEAD + length) + (8 + 3 * n)
    one_by_one = n * (8 + STATUS_OVERHEAD + length) + n * (9 + STATUS_OVERHEAD)
    return {"sync": sync, "one_by_one": one_by_one}


def _sdk_ticks(port: str, ids: list[int], ticks: int) -> tuple[np.ndarray, int]:
    """Feetech's SDK: one GroupSyncRead of the 8 bytes and one GroupSyncWrite of the goals per tick."""
    import scservo_sdk

    handler_port = scservo_sdk.PortHandler(port)
    if not handler_port.openPort():
        raise RuntimeError(f"scservo_sdk cannot open {port}")
    try:
        handler = scservo_sdk.sms_sts(handler_port)
        reader = scservo_sdk.GroupSyncRead(handler, READ_SPAN[0], READ_SPAN[1])
        writer = scservo_sdk.GroupSyncWrite(handler, Register.GOAL_POSITION, 2)
        for motor_id in ids:
            reader.addParam(motor_id)
            writer.addParam(motor_id, list(encode_value(2048, 2)))
        times, missed = np.empty(ticks), 0
        for k in range(ticks):
            start = time.perf_counter()
            if reader.txRxPacket() != scservo_sdk.COMM_SUCCESS:
                missed += 1
            writer.txPacket()
            times[k] = time.perf_counter() - start
    finally:
        handler_port.closePort()
    return times, missed


def _one_by_one_ticks(robot: FeetechRobot, goals: dict[int, bytes], ticks: int) -> tuple[np.ndarray, int]:
    bus, (address, length) = robot.bus, READ_SPAN
    times, missed = np.empty(ticks), 0
    for k in range(ticks):
        start = time.perf_counter()
        for motor_id, goal in goals.items():
            try:
                bus.read(motor_id, address, length)
            except NoReply:
                missed += 1
        for motor_id, goal in goals.items():
            try:
                bus.write(motor_id, Register.GOAL_POSITION, goal)
            except NoReply:
                missed += 1
        times[k] = time.perf_counter() - start
    return times, missed


def run(*, ticks: int = 400, rounds: int = 5, rt_priority: int = 50, hog: bool = False) -> dict[str, Any]:
    """The three modes for `rounds` alternating rounds of `ticks` back-to-back ticks; the figures and their ratios.
    The ticking thread runs under SCHED_FIFO `rt_priority` where permitted (robot_node's loop's), the emulator's bus
    thread at its own; with `hog`, a busy-looping process on every core throughout (bench.deploy's CpuHog)."""
    with CpuHog() if hog else nullcontext():  # started first: the hog inherits normal scheduling, not SCHED_FIFO
        note = set_realtime_priority(rt_priority)
        try:
            result = _run(ticks, rounds)
        finally:
            if not note:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    result.update(rt_priority=0 if note else rt_priority, cpu_hog=hog)
    return result


def _run(ticks: int, rounds: int) -> dict[str, Any]:
    spec = robot_spec("so101")
    n = spec.num_joints
    sizes = wire_bytes(n)
    limit_s = {mode: size * BITS_PER_BYTE / BAUD for mode, size in sizes.items()}
    limit_s["vendor_sdk_sync"] = limit_s["sync"]
    sizes["vendor_sdk_sync"] = sizes["sync"]
    modes = ("sync", "one_by_one", "vendor_sdk_sync")
    samples: dict[str, list[np.ndarray]] = {mode: [] for mode in modes}
    elapsed = dict.fromkeys(modes, 0.0)
    cpu = dict.fromkeys(modes, 0.0)
    with EmulatorProcess("feetech", "so101", baud=BAUD) as emulator, \
            FeetechRobot(spec, f"{emulator.port}@{BAUD}") as robot:
        robot.enable()
        hold = robot.read_state().q
        command = Command(q=hold, dq=np.zeros(n), kp=spec.joint_array("kp"), kd=spec.joint_array("kd"),
                          tau_ff=np.zeros(n))
        goals = {motor_id: encode_value(2048, 2) for motor_id in robot.ids}
        tick_times(robot, command, 50)  # warm-up: code loaded, the emulator's physics running
        missed = dict.fromkeys(modes, 0)
        for _ in range(rounds):
            for mode in modes:
                start, start_cpu = time.perf_counter(), time.process_time()
                if mode == "sync":
                    times, lost = tick_times(robot, command, ticks), 0
                elif mode == "one_by_one":
                    times, lost = _one_by_one_ticks(robot, goals, ticks)
                else:
                    times, lost = _sdk_ticks(emulator.port, robot.ids, ticks)
                elapsed[mode] += time.perf_counter() - start
                cpu[mode] += time.process_time() - start_cpu
                samples[mode].append(times)
                missed[mode] += lost
        counts = robot.bus_counts()
        faults = {name: f.missed + f.corrupted for name, f in robot.faults().items()}
        emulator_stats = emulator.stats()
    result: dict[str, Any] = {"bench": "feetech_bus", "robot": "so101", "servos": n, "baud": BAUD, "ticks": ticks,
                              "rounds": rounds, "machine": machine(), "load_average_1min": os.getloadavg()[0]}
    for mode in modes:
        times = np.concatenate(samples[mode])
        result[f"{mode}_cpu_per_tick_ms"] = cpu[mode] / len(times) * 1e3
        hz = len(times) / elapsed[mode]
        result[f"{mode}_wire_bytes"] = sizes[mode]
        result[f"{mode}_wire_limit_hz"] = 1 / limit_s[mode]
        result[f"{mode}_hz"] = hz
        result[f"{mode}_tick_p50_ms"] = float(np.percentile(times, 50) * 1e3)
        result[f"{mode}_tick_p99_ms"] = float(np.percentile(times, 99) * 1e3)
        result[f"{mode}_fraction_of_wire_limit"] = hz * limit_s[mode]
        result[f"{mode}_fraction_of_wire_limit_at_p50"] = limit_s[mode] / float(np.percentile(times, 50))
    result["sync_over_one_by_one_hz"] = result["sync_hz"] / result["one_by_one_hz"]
    result["sync_over_vendor_sdk_hz"] = result["sync_hz"] / result["vendor_sdk_sync_hz"]
    result["sync_missed_replies"] = int(sum(faults.values()))
    result["one_by_one_missed_replies"] = missed["one_by_one"]
    result["vendor_sdk_failed_sync_reads"] = missed["vendor_sdk_sync"]
    result["bus_timeouts"] = counts["timeouts"]
    result["emulator_physics_overruns"] = emulator_stats.get("physics_overruns", 0)
    result["emulator_reply_late_us_mean"] = emulator_stats["reply_late_us_total"] / max(emulator_stats["replies_written"], 1)
    result["emulator_reply_late_us_max"] = emulator_stats["reply_late_us_max"]
    result["goal_fraction_of_wire_limit"] = 0.8
    result["goal_met"] = result["sync_fraction_of_wire_limit"] >= 0.8
    return result


def rows_of(result: dict[str, Any], label: str = "") -> list[tuple[str, str]]:
    """The report's rows of one run (`label` appended to each name)."""
    rows = []
    for mode, name in (("sync", "sync read + write"), ("one_by_one", "one by one"),
                       ("vendor_sdk_sync", "Feetech's SDK, sync")):
        rows += [(f"{name}{label}: achieved", f"{result[f'{mode}_hz']:.0f} Hz of {result[f'{mode}_wire_limit_hz']:.0f} "
                                              f"({result[f'{mode}_wire_bytes']} bytes at 1 Mbaud)"),
                 (f"{name}{label}: of the wire limit (mean, median tick)",
                  f"{result[f'{mode}_fraction_of_wire_limit']:.2f}, {result[f'{mode}_fraction_of_wire_limit_at_p50']:.2f}"),
                 (f"{name}{label}: tick p50 / p99", f"{result[f'{mode}_tick_p50_ms']:.2f} / "
                                                   f"{result[f'{mode}_tick_p99_ms']:.2f} ms"),
                 (f"{name}{label}: CPU per tick", f"{result[f'{mode}_cpu_per_tick_ms']:.2f} ms")]
    rows += [(f"sync / one by one, / SDK (Hz){label}",
              f"{result['sync_over_one_by_one_hz']:.2f}, {result['sync_over_vendor_sdk_hz']:.2f}"),
             (f"missed (sync, one by one, SDK){label}",
              f"{result['sync_missed_replies']}, {result['one_by_one_missed_replies']}, "
              f"{result['vendor_sdk_failed_sync_reads']}"),
             (f"goal: sync >= 0.8 of the limit{label}", "met" if result["goal_met"] else "not met")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=400, help="ticks per round and mode")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--rt-priority", type=int, default=50,
                        help="SCHED_FIFO priority of the ticking thread where permitted (0: normal scheduling)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    idle = run(ticks=args.ticks, rounds=args.rounds, rt_priority=args.rt_priority)
    hog = run(ticks=args.ticks, rounds=args.rounds, rt_priority=args.rt_priority, hog=True)
    rows = rows_of(idle) + rows_of(hog, ", CPU hog") + [("load average (1 min) before", f"{load:.2f}")]
    report("feetech_bus", "SO-101 (6 × STS3215) on an emulated 1 Mbaud Feetech bus, idle and under a CPU hog", rows,
           {"bench": "feetech_bus", "machine": machine(), "load_average_1min": load, "idle": idle, "cpu_hog": hog})


if __name__ == "__main__":
    main()
