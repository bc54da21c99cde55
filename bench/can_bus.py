"""The Go2's 12 MIT motors (Damiao DM-J8009P) on an emulated 1 Mbit/s CAN bus: control-loop rate vs the wire's limit.

One tick of s2r's driver is `MitCanRobot.read_state` + `write_command`: 12 command frames sent
at once, then the 12 replies collected (the replies are the next tick's state). The peer is
the same frames on the same python-can bus one motor at a time: send a motor's command, wait
for its reply, then the next motor's. Ticks run back to back, in alternating rounds so that the
shared machine's noise falls on both.

The wire limit: a tick puts 12 commands and 12 replies on the wire, each a CAN 2.0A frame of
8 data bytes, 47 + 64 bits plus the stuff bits its content needs (computed for the frames the
tick actually sends, `frame_bits`: about 112 to 128 bits a frame), at 1 Mbit/s: about 2.9 ms,
345 Hz. There is no wire on python-can's buses, so the emulator (`MitCanBus`) keeps one: each
frame occupies it for its bits at the bit rate, one frame after the other, and a reply is
delivered when its last bit would have crossed. The robot's IMU streams on the same bus
(200 samples a second, two frames each: about 5 % of the wire), so the limit is the tick's
frames' time divided by the share of the wire the IMU leaves. A tick can therefore not beat the
limit; the fraction of it that a tick reaches is what the host's code and the buses' hand-overs
cost.

Each emulator is measured idle and under the benchmark's own CPU hog (`bench.deploy.CpuHog`: a
busy process per core, started before the emulator), the ticking thread under SCHED_FIFO 50
and the emulator's under 60 where permitted, as bench.bus and `s2r emulate` run them
(`--rt-priority 0`: normal scheduling).

Two emulators: `virtual` (python-can's in-process bus, the emulator on a thread of the
benchmark's interpreter, as the tests run it) and `udp_multicast` (`s2r emulate mit_can`, the
emulator in its own process, frames as UDP datagrams). The CPU time the benchmark's process
spends per tick is reported beside the rates: on a virtual bus it is the driver's and the
emulator's together, in one interpreter.

    PYTHONPATH=. python -m bench.can_bus --ticks 300 --rounds 3        # or: s2r bench can_bus
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from typing import Any

import can
import numpy as np

from bench.deploy import CpuHog
from bench.report import machine, report
from bench.ticks import tick_times
from s2r.hardware.deadline import set_realtime_priority
from s2r.hardware.drivers.can_imu import DEFAULT_IMU_ID, pack_imu
from s2r.hardware.drivers.mit_can import MitCanRobot
from s2r.hardware.drivers.mit_can_protocol import MitCommand, frame_bits, mit_model, pack_command
from s2r.hardware.emulators.mit_can import DAMIAO_MASTER_OFFSET, IMU_RATE_HZ, MitCanBus
from s2r.hardware.motors import read_motor_calibration
from s2r.sim.emulate import EmulatorProcess
from s2r.sim.motor_plant import MujocoPlant
from s2r.spec import robot_spec
from s2r.state import Command

BITRATE = 1_000_000
CALIBRATION = Path(__file__).resolve().parents[1] / "hardware/configs/go2_mit_can.yaml"
EMULATORS = ("virtual", "udp_multicast")
RT_PRIORITY = 50
"""SCHED_FIFO priority of the ticking thread where permitted: robot_node's loop's (bench.bus ticks at the same)."""
EMULATOR_PRIORITY = 60
"""SCHED_FIFO priority of the emulator's thread where permitted: `s2r emulate`'s default (the motors answer first)."""
REPLY_SLACK_S = 0.02
"""Seconds both modes wait for a reply past its wire time: a loaded host's emulator sends some replies several ms late,
and a shorter deadline would turn them into retries (more frames on the wire) rather than waits."""


def _one_by_one_ticks(bus: can.BusABC, frames: list[tuple[int, bytes, int]], ticks: int,
                      timeout_s: float) -> tuple[np.ndarray, int]:
    """Each motor's command, then its reply, motor after motor; (tick times, replies missed)."""
    while bus.recv(0.0) is not None:
        pass
    times, missed = np.empty(ticks), 0
    for k in range(ticks):
        start = time.perf_counter()
        for motor_id, data, reply_id in frames:
            bus.send(can.Message(arbitration_id=motor_id, data=data, is_extended_id=False))
            deadline = time.monotonic() + timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                message = bus.recv(remaining)
                if message is not None and message.arbitration_id == reply_id:
                    break
            else:
                missed += 1
        times[k] = time.perf_counter() - start
    return times, missed


def _measure(emulator: str, ticks: int, rounds: int, rt_priority: int) -> dict[str, Any]:
    """Both modes on one emulator; the ticking (main) thread under SCHED_FIFO `rt_priority` once the emulator and
    any hog run (they would inherit it)."""
    spec = robot_spec("go2")
    calibration = read_motor_calibration(CALIBRATION, spec)
    if emulator == "virtual":
        channel = f"bench-{uuid.uuid4().hex[:8]}"
        server = MitCanBus(MujocoPlant(spec), calibration, channel=channel, bitrate=BITRATE,
                           realtime_priority=EMULATOR_PRIORITY, imu_id=DEFAULT_IMU_ID).start()
    else:
        server = EmulatorProcess("mit_can", "go2", baud=BITRATE)
    note = set_realtime_priority(rt_priority)
    try:
        with MitCanRobot(spec, f"{server.port}@{BITRATE},calibration={CALIBRATION}",
                         reply_slack_s=REPLY_SLACK_S) as robot:
            robot.enable()
            command = Command(q=spec.default_q, dq=np.zeros(12), kp=spec.joint_array("kp"),
                              kd=spec.joint_array("kd"), tau_ff=np.zeros(12))
            shaft = calibration.shaft_command(command)
            frames = [(m.id, pack_command(mit_model(m.model), MitCommand(shaft.q[i], shaft.dq[i], shaft.kp[i],
                                                                         shaft.kd[i], shaft.tau_ff[i])),
                       m.id + DAMIAO_MASTER_OFFSET) for i, m in enumerate(calibration.motors)]
            tick_times(robot, command, 50)  # warm-up: code loaded, the emulator's physics running
            wire_s = robot.wire_time_s([data for _, data, _ in frames])
            samples: dict[str, list[np.ndarray]] = {"driver": [], "one_by_one": []}
            elapsed = {"driver": 0.0, "one_by_one": 0.0}
            missed, cpu_s = 0, 0.0
            for _ in range(rounds):
                start, cpu = time.perf_counter(), time.process_time()
                samples["driver"].append(tick_times(robot, command, ticks))
                elapsed["driver"] += time.perf_counter() - start
                cpu_s += time.process_time() - cpu
                peer = can.Bus(**robot.address.bus_options())  # open only now: a listener costs every send a copy
                start = time.perf_counter()
                times, lost = _one_by_one_ticks(peer, frames, ticks, REPLY_SLACK_S + 2 * wire_s / 12)
                elapsed["one_by_one"] += time.perf_counter() - start
                peer.shutdown()
                samples["one_by_one"].append(times)
                missed += lost
            faults = sum(f.missed + f.corrupted for f in robot.faults().values())
        stats = server.stats()
    finally:
        if rt_priority and not note:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        server.close()
    imu_share = IMU_RATE_HZ * sum(frame_bits(DEFAULT_IMU_ID, data) for data in pack_imu(np.array([1.0, 0, 0, 0]),
                                                                                        np.zeros(3))) / BITRATE
    tick_s = wire_s / (1 - imu_share)  # the wire's time per tick once the IMU's stream has taken its share
    result: dict[str, Any] = {"rt_priority": 0 if note else rt_priority, "wire_ms": tick_s * 1e3,
                              "motor_frames_wire_ms": wire_s * 1e3, "imu_wire_share": imu_share,
                              "wire_limit_hz": 1 / tick_s}
    for mode in ("driver", "one_by_one"):
        times = np.concatenate(samples[mode])
        hz = len(times) / elapsed[mode]
        result[f"{mode}_hz"] = hz
        result[f"{mode}_tick_p50_ms"] = float(np.percentile(times, 50) * 1e3)
        result[f"{mode}_tick_p99_ms"] = float(np.percentile(times, 99) * 1e3)
        result[f"{mode}_fraction_of_wire_limit"] = hz * tick_s
        result[f"{mode}_fraction_of_wire_limit_at_p50"] = tick_s / float(np.percentile(times, 50))
    result["driver_process_cpu_ms_per_tick"] = cpu_s / (ticks * rounds) * 1e3
    result["driver_over_one_by_one_hz"] = result["driver_hz"] / result["one_by_one_hz"]
    result["driver_missed_replies"] = int(faults)
    result["one_by_one_missed_replies"] = missed
    result["emulator_reply_late_p99_us"] = stats["reply_late_p99_us"]
    result["emulator_physics_overruns"] = stats["physics_overruns"]
    return result


def run(*, ticks: int = 300, rounds: int = 3, emulators: tuple[str, ...] = EMULATORS,
        rt_priority: int = RT_PRIORITY) -> dict[str, Any]:
    """Both modes on each emulator, idle and under the benchmark's own CPU hog (a busy process per core), `rounds`
    alternating rounds of `ticks` back-to-back ticks each; the ticking thread under SCHED_FIFO `rt_priority` where
    permitted (0: normal scheduling); figures and ratios."""
    result: dict[str, Any] = {"bench": "can_bus", "robot": "go2", "motors": 12, "model": "DM-J8009P",
                              "bitrate": BITRATE, "reply_slack_s": REPLY_SLACK_S, "ticks": ticks, "rounds": rounds,
                              "machine": machine(),
                              "load_average_1min": os.getloadavg()[0]}
    for hog in (False, True):
        for emulator in emulators:
            prefix = f"{emulator}_hog_" if hog else f"{emulator}_"
            if hog:
                with CpuHog():
                    measured = _measure(emulator, ticks, rounds, rt_priority)
            else:
                measured = _measure(emulator, ticks, rounds, rt_priority)
            for key, value in measured.items():
                result[prefix + key] = value
    result["rt_priority"] = result[f"{emulators[0]}_rt_priority"]
    result["goal_fraction_of_wire_limit"] = 0.8
    result["goal_met"] = {f"{e}{h}": result[f"{e}{h}_driver_fraction_of_wire_limit"] >= 0.8
                          for h in ("", "_hog") for e in emulators}
    result["load_average_1min_after"] = os.getloadavg()[0]
    return result


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    table = []
    for emulator in (f"{e}{h}" for h in ("", "_hog") for e in EMULATORS):
        if f"{emulator}_wire_ms" not in result:
            continue
        e = lambda key: result[f"{emulator}_{key}"]  # noqa: E731
        name = emulator.replace("_hog", ", CPU hog")
        table.append((f"{name}: wire limit", f"{e('wire_limit_hz'):.0f} Hz ({e('motor_frames_wire_ms'):.2f} ms: 24 "
                                              f"frames at 1 Mbit/s, beside the IMU's "
                                              f"{e('imu_wire_share') * 100:.1f} % of the wire)"))
        for mode, label in (("driver", "s2r (12 out, 12 in)"), ("one_by_one", "one motor at a time")):
            table += [(f"{name}: {label}", f"{e(mode + '_hz'):.0f} Hz, tick p50 / p99 "
                                           f"{e(mode + '_tick_p50_ms'):.2f} / {e(mode + '_tick_p99_ms'):.2f} ms"),
                      (f"{name}: {label}: fraction of the wire limit (mean, median tick)",
                       f"{e(mode + '_fraction_of_wire_limit'):.2f}, {e(mode + '_fraction_of_wire_limit_at_p50'):.2f}")]
        table += [(f"{name}: s2r / one at a time (Hz)", f"{e('driver_over_one_by_one_hz'):.2f}"),
                  (f"{name}: missed replies (s2r, one at a time)",
                   f"{e('driver_missed_replies')}, {e('one_by_one_missed_replies')}"),
                  (f"{name}: CPU of the benchmark's process per s2r tick",
                   f"{e('driver_process_cpu_ms_per_tick'):.2f} ms" + (" (driver and emulator)"
                                                                       if emulator.startswith("virtual")
                                                                       else " (driver)")),
                  (f"{name}: emulator: replies late p99, physics overruns",
                   f"{e('emulator_reply_late_p99_us'):.0f} µs, {e('emulator_physics_overruns')}")]
    table += [("goal: s2r >= 0.8 of the wire limit",
               ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in result["goal_met"].items())),
              ("SCHED_FIFO priority of the ticking thread", str(result["rt_priority"] or "none (not permitted)")),
              ("load average (1 min, before / after)",
               f"{result['load_average_1min']:.2f} / {result['load_average_1min_after']:.2f}")]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=300, help="ticks per round and mode")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--emulator", choices=EMULATORS, action="append", help="default: both")
    parser.add_argument("--rt-priority", type=int, default=RT_PRIORITY,
                        help="SCHED_FIFO priority of the ticking thread where permitted; 0: normal scheduling")
    args = parser.parse_args()
    result = run(ticks=args.ticks, rounds=args.rounds, emulators=tuple(args.emulator or EMULATORS),
                 rt_priority=args.rt_priority)
    report("can_bus", "Go2 (12 × DM-J8009P) on an emulated 1 Mbit/s CAN bus", rows(result), result)


if __name__ == "__main__":
    main()
