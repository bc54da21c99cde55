"""Bus emulators as processes: `s2r emulate KIND --robot SPEC` serves the robot's motors, moving its MuJoCo model.

The emulator opens a pseudo-terminal, prints one line `port /dev/pts/N` on stdout and serves
until stdin closes or it is interrupted; a driver in any other process opens that port
(`s2r deploy policy.onnx --driver dynamixel:/dev/pts/N`). Each line on stdin flips a fault
switch (`s2r.hardware.emulators.serial_bus.BusFaults.apply`: `drop 2`, `drop_next 2 3`,
`corrupt 1`, `silent 3`, `overload 2`, `overheating 1`, `bus_down`, `up`, `restore 2`, `clear`)
and is answered by one line on stdout (`ok drop 2`, or `error ...`); `stats` prints the bus's counters as JSON.
Its own process keeps its timing off the driver's interpreter (one Python process serving both
would hand replies over only at the interpreter's thread switches, every 5 ms).

    s2r emulate dynamixel --robot arm                        # calibration: hardware/configs/arm_dynamixel.yaml
    s2r emulate dynamixel --robot arm --baud 57600 --calibration my_motors.yaml --initial-q elbow=0.3

    with EmulatorProcess("dynamixel", "arm") as emulator:   # the same, from Python (tests, benchmarks)
        driver = f"dynamixel:{emulator.port}"
        emulator.fault("drop 2")
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from s2r.hardware.emulators.mit_can import CanFaults
from s2r.hardware.emulators.serial_bus import BusFaults, PtyBus
from s2r.hardware.motors import RobotCalibration, default_calibration, read_motor_calibration
from s2r.spec import RobotSpec, robot_spec

CONFIGS = importlib.resources.files("s2r.hardware") / "configs"
"""Shipped calibrations (package data of s2r.hardware, so an installed s2r has them): `ROBOT_KIND.yaml` is the
default mounting of a robot's motors on that bus."""


def _dynamixel(spec: RobotSpec, calibration: RobotCalibration, baud: int, faults: BusFaults,
               initial_q: np.ndarray | None) -> PtyBus:
    from s2r.hardware.emulators.dynamixel import DynamixelMotors
    from s2r.sim.motor_plant import MujocoPlant

    motors = DynamixelMotors(MujocoPlant(spec, initial_q=initial_q), calibration, faults, baud=baud)
    return PtyBus(motors, baud=baud, faults=faults)


def _feetech(spec: RobotSpec, calibration: RobotCalibration, baud: int, faults: BusFaults,
             initial_q: np.ndarray | None) -> PtyBus:
    from s2r.hardware.emulators.feetech import FeetechServos
    from s2r.sim.motor_plant import MujocoPlant

    servos = FeetechServos(spec, MujocoPlant(spec, initial_q=initial_q), mounting=calibration, faults=faults)
    return PtyBus(servos, baud=baud, faults=faults)


def _mit_can(spec: RobotSpec, calibration: RobotCalibration, baud: int, faults: BusFaults,
             initial_q: np.ndarray | None) -> Any:
    """MIT CAN motors on python-can's UDP multicast bus (group 239.0.0.1, a port of their own): `port` is the driver's
    WHERE (`mit_can:udp_multicast:239.0.0.1:PORT,calibration=FILE`); baud is the CAN bit rate. A spec with an imu gets
    its IMU on the bus too, at can_imu.DEFAULT_IMU_ID."""
    from s2r.hardware.drivers.can_imu import DEFAULT_IMU_ID
    from s2r.hardware.emulators.mit_can import MitCanBus
    from s2r.sim.motor_plant import MujocoPlant

    port = 43200 + secrets.randbelow(2000)
    return MitCanBus(MujocoPlant(spec, initial_q=initial_q), calibration, interface="udp_multicast",
                     channel="239.0.0.1", port=port, bitrate=baud, faults=faults,
                     imu_id=DEFAULT_IMU_ID if spec.imu is not None else None)


EMULATORS: dict[str, tuple[Callable[..., PtyBus], str, int]] = {
    "dynamixel": (_dynamixel, "XM430-W350", 1_000_000),
    "feetech": (_feetech, "STS3215", 1_000_000),
    "mit_can": (_mit_can, "DM-J8009P", 1_000_000),
}
"""Kind → (builder(spec, calibration, baud, faults, initial_q) → an unstarted PtyBus, default motor model, default baud)."""


DEFAULT_PRIORITY = 60
"""SCHED_FIFO priority of a serial bus's thread where permitted: above s2r deploy's nodes (40), since the
emulator stands in for motors, which answer in microseconds whatever the host does."""


def default_mounting(kind: str, spec: RobotSpec) -> RobotCalibration:
    """How `spec`'s motors sit on a `kind` bus when nobody says: the shipped `ROBOT_KIND.yaml`, else the spec's bus ids
    with the kind's default model."""
    shipped = CONFIGS / f"{spec.name}_{kind}.yaml"
    if shipped.is_file():
        with importlib.resources.as_file(shipped) as path:
            return read_motor_calibration(path, spec)
    return default_calibration(spec, EMULATORS[kind][1])


def serve(kind: str, spec: RobotSpec, *, calibration: RobotCalibration | None = None, baud: int | None = None,
          initial_q: np.ndarray | None = None, realtime_priority: int = DEFAULT_PRIORITY, stdin: Any = None,
          stdout: Any = None) -> None:
    """Serve `kind` motors of `spec` until stdin closes (or SIGINT/SIGTERM); see the module."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    builder, _, default_baud = EMULATORS[kind]
    faults = CanFaults() if kind == "mit_can" else BusFaults()
    bus = builder(spec, calibration or default_mounting(kind, spec), baud or default_baud, faults, initial_q)
    bus.realtime_priority = realtime_priority
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    def commands() -> None:
        for line in stdin:
            if line.strip() == "stats":
                print(json.dumps(bus.stats()), file=stdout, flush=True)
                continue
            try:
                done = faults.apply(line)
                if done:
                    print(f"ok {done}", file=stdout, flush=True)
            except ValueError as error:
                print(f"error {error}", file=stdout, flush=True)
        stop.set()

    with bus:
        print(f"port {bus.port}", file=stdout, flush=True)
        threading.Thread(target=commands, name="emulator commands", daemon=True).start()
        while not stop.wait(0.5):
            pass

class EmulatorProcess:
    """`s2r emulate` in a child process, for tests and benchmarks: its port, its fault switches (see the module)."""

    def __init__(self, kind: str, robot: str, *, calibration: str | Path | None = None, baud: int | None = None,
                 initial_q: dict[str, float] | None = None) -> None:
        command = [sys.executable, "-m", "s2r.apps.cli", "emulate", kind, "--robot", robot]
        if calibration is not None:
            command += ["--calibration", str(calibration)]
        if baud is not None:
            command += ["--baud", str(baud)]
        for name, value in (initial_q or {}).items():
            command += ["--initial-q", f"{name}={value}"]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, bufsize=1)
        first = self._process.stdout.readline()
        if not first.startswith("port "):
            self._process.kill()
            raise RuntimeError(f"s2r emulate {kind} --robot {robot} did not start: {first}{self._process.stderr.read()}")
        self.port = first.split(maxsplit=1)[1].strip()
        """The emulated bus's serial port (a pty slave)."""

    def fault(self, line: str) -> None:
        """Flip a fault switch (`drop 2`, `clear`, ...); RuntimeError when the emulator refuses it."""
        self._process.stdin.write(line.strip() + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline().strip()
        if not answer.startswith("ok "):
            raise RuntimeError(f"emulator: {answer or 'no answer'}")

    def stats(self) -> dict[str, int]:
        """The bus's counters (bytes, replies lost and corrupted, physics steps and overruns)."""
        self._process.stdin.write("stats\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def close(self) -> None:
        """Stop the emulator (stdin closed) and wait for it. Safe to call twice."""
        if self._process.poll() is None:
            try:
                self._process.stdin.close()
                self._process.wait(timeout=5)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdout, self._process.stderr):
            stream.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `s2r emulate` options."""
    parser.add_argument("kind", help=f"the bus and its motors: {', '.join(EMULATORS)}")
    parser.add_argument("--robot", required=True, metavar="SPEC", help="the robot (a name or spec YAML)")
    parser.add_argument("--calibration", metavar="FILE",
                        help="how the motors are mounted (a motor calibration YAML; default: "
                             "hardware/configs/ROBOT_KIND.yaml, else the spec's bus ids)")
    parser.add_argument("--baud", type=int, help="the bus's baud rate (default 1000000)")
    parser.add_argument("--rt-priority", type=int, default=DEFAULT_PRIORITY,
                        help=f"SCHED_FIFO priority of the bus's thread where permitted; 0: normal scheduling "
                             f"(default {DEFAULT_PRIORITY})")
    parser.add_argument("--initial-q", action="append", default=[], metavar="JOINT=RAD",
                        help="start a joint away from the spec's default pose (repeatable)")


def run(args: argparse.Namespace) -> None:
    """`s2r emulate` with parsed options (ValueError naming the option for a bad one)."""
    if args.kind not in EMULATORS:
        raise ValueError(f"emulate: unknown kind {args.kind!r} (kinds: {', '.join(EMULATORS)})")
    spec = robot_spec(args.robot)
    calibration = read_motor_calibration(args.calibration, spec) if args.calibration else None
    q = spec.default_q.copy()
    for item in args.initial_q:
        name, _, value = item.partition("=")
        if name not in spec.joint_names:
            raise ValueError(f"--initial-q {item}: {name!r} is not a joint of {spec.name} "
                             f"(joints: {', '.join(spec.joint_names)})")
        q[spec.joint_names.index(name)] = float(value)
    serve(args.kind, spec, calibration=calibration, baud=args.baud, initial_q=q, realtime_priority=args.rt_priority)

