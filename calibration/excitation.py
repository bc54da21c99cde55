"""Excitation: a safe multisine per joint that drives a robot while its commands and states are recorded.

Each excited joint follows a sum of sines around its default pose, with frequencies that no
other joint uses (so the fit can tell the joints apart) and random phases from the seed. The
signal is scaled so that it stays `margin` inside the joint limits and below a fraction of the
velocity limit, and it starts and ends at the default pose with zero velocity under a
raised-cosine envelope:

    w(t) = ½ (1 − cos(π t / ramp))   for t < ramp,  1 in the middle,  mirrored at the end
    q*(t) = q0 + c · w(t) Σ_k a_k sin(2π f_k t + φ_k),   dq*(t) = d/dt q*(t)
    c = min(A / max|q* − q0|, v_max / max|dq*|)

`run_excitation` sends it through `hardware.safety.SafetyFilter` (which first soft-starts the
robot to its default pose) as position targets with the spec's kp and kd and the signal's
velocity as dq*, and records every state and command to MCAP (`calibration.recording`):

    with SimRobot(robot_spec("arm"), SimRobotConfig(realtime=False)) as robot:
        run_excitation(robot, robot.spec, duration_s=20.0, seed=0, out=Path("arm.mcap"))

A SimRobot with `realtime=False` is stepped by hand (no waiting on the wall clock; its clock
is simulation time); any other robot is driven at absolute deadlines of the wall clock.
`excite` (the `s2r excite` command) opens its robot through the driver registry
(`s2r.hardware.drivers`), so a real robot is excited without MuJoCo being imported.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2r.calibration.recording import RecordingWriter
from s2r.hardware.drivers import load_driver_config, open_driver, parse_driver
from s2r.hardware.safety import SafetyConfig, SafetyFilter
from s2r.interface import RobotInterface
from s2r.spec import RobotSpec, robot_spec
from s2r.state import Command


class ExcitationError(ValueError):
    """An excitation that cannot be run safely or as asked; the message names the field."""


@dataclass(frozen=True)
class ExcitationConfig:
    """Shape and bounds of the multisine; the limits themselves come from the RobotSpec."""

    max_amplitude: float = 0.8
    """Largest excursion from the default pose (rad or m)."""
    margin: float = 0.15
    """Distance kept from each joint limit (rad or m)."""
    velocity_fraction: float = 0.5
    """Peak target velocity as a fraction of each joint's velocity limit."""
    frequency_range: tuple[float, float] = (0.1, 2.0)
    """Lowest and highest sine frequency (Hz); each joint gets its own, log-spaced in between."""
    num_sines: int = 6
    """Sines per joint."""
    ramp_s: float = 2.0
    """Seconds of the raised-cosine fade-in and fade-out."""

    def __post_init__(self) -> None:
        for key in ("max_amplitude", "margin", "velocity_fraction", "ramp_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ExcitationError(f"ExcitationConfig.{key}: expected a finite number >= 0, got {value!r}")
        low, high = self.frequency_range
        if not 0 < low < high:
            raise ExcitationError(f"ExcitationConfig.frequency_range: expected 0 < low < high, got {self.frequency_range}")
        if self.num_sines < 1:
            raise ExcitationError(f"ExcitationConfig.num_sines: expected >= 1, got {self.num_sines}")


@dataclass(frozen=True)
class ExcitationSignal:
    """Targets per control period for the actuated joints, in spec order."""

    period: float
    """Seconds between two targets."""
    q: np.ndarray
    """(T, num_actuated) position targets."""
    dq: np.ndarray
    """(T, num_actuated) velocity targets, the derivative of `q`."""
    excited: tuple[str, ...]
    """The joints that move; the others hold their default position."""

    def command(self, i: int, kp: np.ndarray, kd: np.ndarray) -> Command:
        """The i-th target as a PD command with gains `kp`, `kd` (num_actuated,)."""
        return Command(q=self.q[i].copy(), dq=self.dq[i].copy(), kp=kp.copy(), kd=kd.copy(), tau_ff=np.zeros_like(kp))


def _envelope(t: np.ndarray, duration: float, ramp: float) -> tuple[np.ndarray, np.ndarray]:
    """The raised-cosine envelope w(t) and its derivative, (T,) each."""
    ramp = min(ramp, duration / 2)
    if ramp <= 0:
        return np.ones_like(t), np.zeros_like(t)
    rise, fall = t < ramp, t > duration - ramp
    w, dw = np.ones_like(t), np.zeros_like(t)
    w[rise] = 0.5 * (1 - np.cos(np.pi * t[rise] / ramp))
    dw[rise] = 0.5 * np.pi / ramp * np.sin(np.pi * t[rise] / ramp)
    s = duration - t[fall]
    w[fall] = 0.5 * (1 - np.cos(np.pi * s / ramp))
    dw[fall] = -0.5 * np.pi / ramp * np.sin(np.pi * s / ramp)
    return w, dw


def multisine(spec: RobotSpec, *, duration_s: float, period: float, seed: int = 0,
              config: ExcitationConfig = ExcitationConfig(), joints: Sequence[str] | None = None) -> ExcitationSignal:
    """The excitation targets for `duration_s` seconds every `period` seconds.

    `joints`: the actuated joints to excite (default: every actuated joint with kp > 0);
    the others hold their default position. Raises ExcitationError for a joint that is not
    position-controlled or has no room to move within its limits and margin.
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ExcitationError(f"excitation duration_s: expected seconds > 0, got {duration_s!r}")
    actuated = spec.actuated_joint_names
    kp = spec.joint_array("kp", actuated_only=True)
    if joints is None:
        joints = [name for name, gain in zip(actuated, kp) if gain > 0]
    for name in joints:
        if name not in actuated:
            raise ExcitationError(f"excitation joints: {name!r} is not an actuated joint of {spec.name} "
                                  f"(actuated: {', '.join(actuated)})")
        if kp[actuated.index(name)] <= 0:
            raise ExcitationError(f"excitation joints: {name!r} has kp = 0 in {spec.source}; the excitation "
                                  "drives position-controlled joints")
    index = spec.actuated_index
    q0 = spec.default_q[index]
    lower, upper = spec.lower[index], spec.upper[index]
    v_max = config.velocity_fraction * spec.joint_array("velocity_limit", actuated_only=True)
    t = np.arange(int(round(duration_s / period)) + 1) * period
    w, dw = _envelope(t, t[-1], config.ramp_s)
    rng = np.random.default_rng(seed)
    excited = [actuated.index(name) for name in joints]
    # Every excited joint gets its own frequencies: one log-spaced grid dealt out in turn.
    grid = np.geomspace(*config.frequency_range, config.num_sines * max(len(excited), 1))
    q = np.repeat(q0[None], len(t), axis=0)
    dq = np.zeros_like(q)
    for rank, j in enumerate(excited):
        room = min(config.max_amplitude, q0[j] - lower[j] - config.margin, upper[j] - config.margin - q0[j])
        if not room > 0:
            raise ExcitationError(f"excitation joints: {actuated[j]!r} has no room to move: default "
                                  f"{q0[j]} within margin {config.margin} of its limits [{lower[j]}, {upper[j]}]")
        freq = grid[rank::len(excited)]
        phase = rng.uniform(0, 2 * np.pi, len(freq))
        amp = freq ** -0.5
        arg = 2 * np.pi * freq[None] * t[:, None] + phase[None]
        s = (amp * np.sin(arg)).sum(axis=1)
        ds = (amp * 2 * np.pi * freq * np.cos(arg)).sum(axis=1)
        x, dx = w * s, dw * s + w * ds
        scale = min(room / np.abs(x).max(), v_max[j] / np.abs(dx).max())
        q[:, j] = q0[j] + scale * x
        dq[:, j] = scale * dx
    return ExcitationSignal(period=period, q=q, dq=dq, excited=tuple(actuated[j] for j in excited))


class _Clock:
    """The robot's clock: simulation time for a hand-stepped SimRobot, else the wall clock."""

    def __init__(self, robot: RobotInterface, period: float) -> None:
        self.robot = robot
        self.period = period
        self.manual = _stepped_by_hand(robot)
        if self.manual:
            steps = period / robot.timestep
            if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
                raise ExcitationError(f"excitation rate: the period {period} s is not a whole number of "
                                      f"physics steps ({robot.timestep} s)")
            self.steps = int(round(steps))
        self.start = time.time()

    def now(self) -> float:
        if self.manual:
            return self.robot.stats()["physics_steps"] * self.robot.timestep
        return time.time()

    def wait(self, tick: int) -> None:
        """Until tick `tick` is due: step the simulation, or sleep to the absolute deadline."""
        if self.manual:
            self.robot.step(self.steps)
            return
        delay = self.start + tick * self.period - time.time()
        if delay > 0:
            time.sleep(delay)


def _stepped_by_hand(robot: RobotInterface) -> bool:
    """Whether `robot` is a SimRobot with realtime=False. The SimRobot module is looked up, not
    imported: if nothing loaded it, the robot is not simulated, and MuJoCo stays unloaded."""
    sim_robot = sys.modules.get("s2r.sim.sim_robot")
    return sim_robot is not None and isinstance(robot, sim_robot.SimRobot) and not robot.config.realtime


def run_excitation(robot: RobotInterface, spec: RobotSpec, *, duration_s: float, rate_hz: float | None = None,
                   seed: int = 0, out: Path, config: ExcitationConfig = ExcitationConfig(),
                   joints: Sequence[str] | None = None, safety: SafetyConfig = SafetyConfig()) -> Path:
    """Excite a connected robot for `duration_s` seconds (after the SafetyFilter's soft start) and record it.

    rate_hz: command rate (default 1 / spec.control_period). Every command passes the
    SafetyFilter; the robot is enabled here and left enabled, holding the default pose.
    Returns `out`, the MCAP recording.
    """
    period = spec.control_period if rate_hz is None else 1.0 / rate_hz
    if not (math.isfinite(period) and period > 0):
        raise ExcitationError(f"excitation rate_hz: expected a rate > 0, got {rate_hz!r}")
    signal = multisine(spec, duration_s=duration_s, period=period, seed=seed, config=config, joints=joints)
    kp = spec.joint_array("kp", actuated_only=True)
    kd = spec.joint_array("kd", actuated_only=True)
    clock = _Clock(robot, period)
    guard = SafetyFilter(spec, period, safety)
    lead = int(math.ceil(safety.soft_start_s / period))
    """Ticks of the soft start before the signal begins."""
    last_stamp = -math.inf
    with RecordingWriter(out, spec) as writer:
        robot.enable()
        guard.reset()
        clock.start = time.time()
        for tick in range(lead + len(signal.q)):
            state = robot.read_state()
            if state.stamp > last_stamp:
                writer.write_state(state)
                last_stamp = state.stamp
            i = tick - lead
            target = signal.command(i, kp, kd) if i >= 0 else None
            now = clock.now()
            command = guard.filter(target, state, now)
            robot.write_command(command)
            writer.write_command(command, now, state_stamp=state.stamp)
            clock.wait(tick + 1)
        state = robot.read_state()
        if state.stamp > last_stamp:
            writer.write_state(state)
    return Path(out)


def excite(*, robot: str, driver: str = "sim", duration_s: float = 20.0, rate_hz: float | None = None,
           seed: int = 0, joints: Sequence[str] | None = None, realtime: bool = False,
           out: str | Path) -> dict[str, object]:
    """`s2r excite`: open the robot, run the excitation, and summarize the recording it wrote.

    robot: the robot's spec, a shipped robot name or a spec YAML; driver: `KIND[:WHERE]` of the
    driver registry (`sim:SIMROBOT.yaml` for a SimRobot that differs from the model in latency,
    noise or parameters). A SimRobot is stepped as fast as it computes unless `realtime`.
    """
    from s2r.calibration.recording import read_recording

    driver = parse_driver(driver)
    robot_spec_ = robot_spec(robot)
    config = load_driver_config(driver)
    if driver.kind == "sim":
        from s2r.sim.sim_robot import SimRobotConfig

        config = config if config is not None else SimRobotConfig()
        config.realtime = realtime
    start = time.perf_counter()
    with open_driver(driver, robot_spec_, config=config) as connected:
        path = run_excitation(connected, robot_spec_, duration_s=duration_s, rate_hz=rate_hz, seed=seed,
                              out=Path(out), joints=joints)
    wall = time.perf_counter() - start
    recording = read_recording(path, robot_spec_)
    excursion = np.ptp(recording.q, axis=0)
    return {"out": str(path), "robot": robot_spec_.name, "driver": str(driver), "duration_s": recording.duration,
            "states": len(recording.state_time), "commands": len(recording.command_time),
            "excursion": dict(zip(robot_spec_.joint_names, excursion.round(4).tolist())),
            "peak_velocity": dict(zip(robot_spec_.joint_names, np.abs(recording.dq).max(axis=0).round(3).tolist())),
            "wall_s": wall}
