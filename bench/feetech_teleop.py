"""Leader–follower teleoperation of the SO-101 over two emulated 1 Mbaud Feetech buses: rate and tracking.

The leader is a torque-free arm moved by a scripted hand (`HandPlant`: each joint a sine about
its mid-range); the follower is the SO-101's MuJoCo model behind its emulated STS3215 servos, in
its own process (`s2r emulate feetech --robot so101`). `s2r teleop`'s session
(`run_leader_follower`) runs at the spec's 100 Hz and records the run as a LeRobot v3 dataset,
which this benchmark reads back. Figures: the achieved rate against the 100 Hz target, and the
follower's tracking error against the physical floor of a position servo following a moving
goal: it lags by (kd + damping) · |dq| / kp (the steady-state error of a PD position loop with
joint damping at speed dq) plus one control period of transport, |dq| · period. The PNG shows
leader and follower for three joints.

    PYTHONPATH=. python -m bench.feetech_teleop --duration 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine, report
from s2r.dataset import ACTION, OBS_STATE, load_dataset
from s2r.hardware.drivers.feetech import FeetechRobot
from s2r.hardware.emulators.feetech import FeetechServos, HandPlant
from s2r.hardware.emulators.serial_bus import PtyBus
from s2r.hardware.teleop.leader_follower import ACTION_STAMP, OBS_STAMP, run_leader_follower
from s2r.sim.emulate import EmulatorProcess
from s2r.spec import robot_spec

AMPLITUDE = np.array([0.6, 0.5, 0.6, 0.5, 1.0, 0.5])
"""rad of the hand's sine per joint."""
CENTRE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.7])
FREQUENCY_HZ = 0.25
JOINT_DAMPING = 0.60
"""N·m·s/rad: the STS3215's joint damping in so101.xml."""
SETTLE_S = 2.5
"""Seconds after the start (soft start 1 s, fade 1 s, margin) before the error is counted."""
PLOT = Path("docs/figures/so101_leader_follower.png")


def run(*, duration_s: float = 10.0, plot: Path | None = PLOT) -> dict[str, Any]:
    spec = robot_spec("so101")
    hand = HandPlant(CENTRE.copy())
    leader_servos = FeetechServos(spec, hand)
    hand.follow(lambda t: CENTRE + AMPLITUDE * np.sin(2 * np.pi * FREQUENCY_HZ * t))
    with tempfile.TemporaryDirectory() as scratch, \
            PtyBus(leader_servos, baud=1_000_000, faults=leader_servos.faults) as leader_bus, \
            EmulatorProcess("feetech", "so101") as follower_bus, \
            FeetechRobot(spec, leader_bus.port) as leader, FeetechRobot(spec, follower_bus.port) as follower:
        summary = run_leader_follower(leader, follower, duration_s=duration_s, record=Path(scratch) / "run",
                                      log=lambda _: None)
        episode = load_dataset(Path(scratch) / "run").episodes[0]
    t = episode[OBS_STAMP][:, 0] - episode[OBS_STAMP][0, 0]
    follower_q, leader_q = episode[OBS_STATE].astype(np.float64), episode[ACTION].astype(np.float64)
    counted = t > SETTLE_S
    error = np.abs(follower_q - leader_q)[counted]
    speed = np.abs(np.gradient(leader_q, episode[ACTION_STAMP][:, 0], axis=0))[counted]
    floor = (spec.joint_array("kd") + JOINT_DAMPING) / spec.joint_array("kp") * speed + speed * spec.control_period
    result = {"bench": "feetech_teleop", "robot": "so101", "duration_s": duration_s, "machine": machine(),
              "load_average_1min": os.getloadavg()[0], "control_hz_target": summary["control_hz_target"],
              "control_hz_achieved": summary["control_hz_achieved"], "late_ticks": summary["late_ticks"],
              "stale_ticks": summary["stale_ticks"], "frames": int(len(t)),
              "leader_read_p99_us": summary["leader_read_p99_us"],
              "tracking_error_p50_rad": float(np.percentile(error, 50)),
              "tracking_error_p95_rad": float(np.percentile(error, 95)),
              "servo_lag_floor_p95_rad": float(np.percentile(floor, 95)),
              "tracking_error_over_floor_p95": float(np.percentile(error, 95) / np.percentile(floor, 95)),
              "per_joint_error_p95_rad": {name: float(v) for name, v in
                                          zip(spec.joint_names, np.percentile(error, 95, axis=0))},
              "safety_events": summary["safety_events"]}
    if plot is not None:
        _plot(plot, t, leader_q, follower_q, spec.joint_names)
        result["plot"] = str(plot)
    return result


def _plot(path: Path, t: np.ndarray, leader: np.ndarray, follower: np.ndarray, names: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    joints = (1, 2, 4)
    figure, axes = plt.subplots(len(joints), 1, figsize=(8, 6), sharex=True)
    for axis, j in zip(axes, joints):
        axis.plot(t, leader[:, j], label="leader (hand)", color="tab:blue")
        axis.plot(t, follower[:, j], label="follower", color="tab:orange", linestyle="--")
        axis.axvspan(0, SETTLE_S, color="0.9")
        axis.set_ylabel(f"{names[j]} (rad)")
    axes[0].legend(loc="upper right")
    axes[0].set_title("SO-101 leader–follower over emulated Feetech buses (grey: soft start and fade)")
    axes[-1].set_xlabel("time (s)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of teleoperation")
    args = parser.parse_args()
    result = run(duration_s=args.duration)
    rows = [("control rate: achieved / target", f"{result['control_hz_achieved']:.1f} / "
                                                f"{result['control_hz_target']:.0f} Hz"),
            ("late ticks, stale ticks", f"{result['late_ticks']}, {result['stale_ticks']}"),
            ("frames recorded", str(result["frames"])),
            ("leader read p99", f"{result['leader_read_p99_us'] / 1e3:.2f} ms"),
            ("tracking error p50 / p95", f"{result['tracking_error_p50_rad']:.3f} / "
                                         f"{result['tracking_error_p95_rad']:.3f} rad"),
            ("servo lag floor p95 ((kd + b)|dq|/kp + |dq| T)", f"{result['servo_lag_floor_p95_rad']:.3f} rad"),
            ("tracking error / floor (p95)", f"{result['tracking_error_over_floor_p95']:.2f}"),
            ("load average (1 min)", f"{result['load_average_1min']:.2f}"),
            ("plot", result.get("plot", "-"))]
    report("feetech_teleop", "SO-101 leader–follower, 100 Hz, two emulated Feetech buses", rows, result)


if __name__ == "__main__":
    main()
