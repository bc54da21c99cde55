"""SimRobot: a MuJoCo model of the robot that behaves like its hardware.

It steps the training model in real time on its own thread, at absolute deadlines (the k-th
step is due at start + k·timestep: no drift; late steps are counted as overruns). Its motor
drivers apply the PD law of the last command, clamped to each joint's effort limit,

    tau = clip(kp (q* - q) + kd (dq* - dq) + tau_ff, -effort, effort)

with the very actuators training uses: the model is compiled in position mode and each command
rewrites its actuators' gains, so with kp = kd = 0 a command is exactly the torque motor of a
torque-mode policy, and a held PD command is exactly a position-mode one. A multirotor (a spec
with rotors) is compiled in thrust mode instead: `Command.rotor_thrust` drives the rotors' thrust
actuators (fractions of top thrust through the motors' first-order lag, as in training), and each
measurement carries the floating base's true position and velocity (`base_pos_w`,
`base_lin_vel_w`: what motion capture gives a real one). A YAML file adds what
makes a robot real: command and sensor latency (seconds), sensor noise and model parameters that
differ from the training model, named as in `s2r.sim.parameters` (damping, armature,
frictionloss per joint, mass per body, friction per geom), each `{set | scale | add: x}`.

    config = load_sim_robot_config("hardware/configs/cartpole_hanging.yaml")
    with SimRobot(robot_spec("cartpole"), config) as robot:
        robot.enable()
        robot.write_command(command)       # Command, (num_actuated,) arrays
        state = robot.read_state()         # RobotState, (num_joints,) arrays

Each measurement is stamped with the wall-clock time it was taken and becomes readable
`state_delay_s` later, exactly (not rounded to a physics step). `set_state_callback(callback,
period=...)` calls back on the physics thread the moment a measurement becomes readable, one
every `period` seconds (every physics step by default), so a node publishes without polling:

    robot.set_state_callback(new_state.set, period=spec.control_period)

With `realtime=False` there is no thread: `step(n)` advances the physics, and
stamps and delays run on simulation time, which makes tests exact.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from s2r.interface import RobotError, RobotInterface
from s2r.sim.model import compile_model
from s2r.sim.parameters import OPERATIONS, PARAMETERS, combine
from s2r.sim.robot_view import RobotView
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState
from s2r.yaml_file import check_fields, read_yaml

OVERRIDES = {section: tuple(p.name for p in PARAMETERS.values() if p.per == per and p.width == 1)
             for section, per in (("joints", "joint"), ("bodies", "body"), ("geoms", "geom"))}
"""Config section → the parameters (`s2r.sim.parameters`) it may override. Actuator parameters are not
among them: every command sets the motors' gains."""


HELD_RELEASE = 0.8
"""A held multirotor (`held_until_thrust`) is let go once its rotors carry this fraction of its weight."""


class SimRobotConfigError(ValueError):
    """A SimRobot config is malformed; the message names the file and the field."""


@dataclass
class SimRobotConfig:
    """How the simulated robot differs from an ideal, instantaneous copy of the training model."""

    initial_q: dict[str, float] = field(default_factory=dict)
    """Joint positions at start (rad or m) by joint name; joints left out start at the spec's default."""
    initial_base: dict[str, list[float]] = field(default_factory=dict)
    """A floating base's pose at start: {position: [x, y, z] m in the world, rpy: [roll, pitch, yaw] rad};
    left out: the MJCF's (upright). E.g. lying on its back: {position: [0, 0, 0.15], rpy: [3.1416, 0, 0]}."""
    held_until_thrust: bool | None = None
    """A multirotor is held at its initial pose, at rest (in a hand), until its rotors' thrust carries 80 % of
    its weight (`HELD_RELEASE`): it does not fall while the robot's node starts up, nor while its motors spin up. None: held for a
    robot with rotors (false for the others)."""
    command_delay_s: float = 0.0
    """Seconds from `write_command` until the motors apply the command."""
    state_delay_s: float = 0.0
    """Seconds from a measurement (its stamp) until `read_state` returns it (sensor and bus latency)."""
    noise_q: float = 0.0
    """Standard deviation of Gaussian noise on measured positions (rad or m)."""
    noise_dq: float = 0.0
    """Standard deviation of Gaussian noise on measured velocities (rad/s or m/s)."""
    seed: int = 0
    """Seed of the sensor noise."""
    realtime: bool = True
    """Step on a thread in real time; False: no thread, `step(n)` advances the physics."""
    joints: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Joint overrides: {joint: {damping | armature | frictionloss: {set | scale | add: x}}}."""
    bodies: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Body overrides: {body: {mass: {set | scale | add: x}}}; the body's inertia scales with its mass."""
    geoms: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Geom overrides: {geom: {friction: {set | scale | add: x}}} (the sliding coefficient)."""
    source: Path | None = field(default=None, compare=False)
    """The YAML file the config was read from, for error messages."""

    def __post_init__(self) -> None:
        if not isinstance(self.initial_q, dict):
            self._fail("initial_q", f"expected a mapping joint → position, got {self.initial_q!r}")
        for name, value in self.initial_q.items():
            self._number(f"initial_q.{name}", value)
        if not isinstance(self.initial_base, dict):
            self._fail("initial_base", f"expected a mapping with position and rpy, got {self.initial_base!r}")
        for key, value in self.initial_base.items():
            if key not in ("position", "rpy"):
                self._fail(f"initial_base.{key}", "unknown field (known fields: position, rpy)")
            if not isinstance(value, list) or len(value) != 3:
                self._fail(f"initial_base.{key}", f"expected a list of 3 numbers, got {value!r}")
            for i, number in enumerate(value):
                self._number(f"initial_base.{key}[{i}]", number)
        for key in ("command_delay_s", "state_delay_s", "noise_q", "noise_dq"):
            if self._number(key, getattr(self, key)) < 0:
                self._fail(key, f"expected >= 0, got {getattr(self, key)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            self._fail("seed", f"expected an integer, got {self.seed!r}")
        if not isinstance(self.realtime, bool):
            self._fail("realtime", f"expected true or false, got {self.realtime!r}")
        if self.held_until_thrust is not None and not isinstance(self.held_until_thrust, bool):
            self._fail("held_until_thrust", f"expected true or false, got {self.held_until_thrust!r}")
        for section, names in OVERRIDES.items():
            self._check_overrides(section, getattr(self, section), names)

    @property
    def where(self) -> str:
        """The config's file for error messages, or the class name for a config built in Python."""
        return str(self.source) if self.source else "SimRobotConfig"

    def _fail(self, key: str, message: str) -> None:
        raise SimRobotConfigError(f"{self.where}: {key}: {message}")

    def _number(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self._fail(key, f"expected a finite number, got {value!r}")
        return float(value)

    def _check_overrides(self, key: str, overrides: Any, fields: tuple[str, ...]) -> None:
        if not isinstance(overrides, dict):
            self._fail(key, f"expected a mapping name → {{field: {{set|scale|add: x}}}}, got {overrides!r}")
        for name, entries in overrides.items():
            if not isinstance(entries, dict):
                self._fail(f"{key}.{name}", f"expected a mapping of {', '.join(fields)}, got {entries!r}")
            for parameter, op in entries.items():
                where = f"{key}.{name}.{parameter}"
                if parameter not in fields:
                    self._fail(where, f"unknown field (known fields: {', '.join(fields)})")
                if not isinstance(op, dict) or len(op) != 1 or next(iter(op)) not in OPERATIONS:
                    self._fail(where, f"expected {{set: x}}, {{scale: x}} or {{add: x}}, got {op!r}")
                kind, value = next(iter(op.items()))
                if self._number(f"{where}.{kind}", value) < 0 and kind == "scale":
                    self._fail(f"{where}.scale", f"expected a factor >= 0, got {value}")


def load_sim_robot_config(path: str | Path) -> SimRobotConfig:
    """Read a SimRobot config YAML; raises SimRobotConfigError naming the file and the field."""
    path = Path(path)
    data = read_yaml(path, "SimRobot config", SimRobotConfigError)
    check_fields(data, path, SimRobotConfigError,
                 optional=[name for name in SimRobotConfig.__dataclass_fields__ if name != "source"])
    return SimRobotConfig(**data, source=path)


class SimRobot(RobotInterface):
    """A RobotInterface over a MuJoCo model of the robot, stepped in real time on its own thread.

    Starts disabled (zero torque): commands are obeyed after `enable()`. `model` is the
    MjModel it runs, overrides applied; read it, don't change it.
    """

    def __init__(self, spec: RobotSpec, config: SimRobotConfig | None = None) -> None:
        self.spec = spec
        self.config = config or SimRobotConfig()
        self.model = compile_model(spec, "thrust" if spec.rotors else "position")
        _apply_overrides(self.model, self.config, spec)
        self._data = mujoco.MjData(self.model)
        self.view = RobotView(self.model, spec)
        """Where the spec's joints, actuators and base are in `model`."""
        self._actuators = self.view.actuator_ids
        self._rotors = np.array([self.model.actuator(r.name).id for r in spec.rotors], dtype=np.int64)
        """The rotors' thrust actuators in spec order, (num_rotors,); empty without rotors."""
        self._timestep = self.model.opt.timestep
        self._rng = np.random.default_rng(self.config.seed)
        self._lock = threading.Lock()
        self._pending: deque[tuple[float, Command]] = deque()
        """Written commands with the simulation time they reach the motors, oldest first."""
        self._history: deque[tuple[float, RobotState]] = deque(
            maxlen=math.ceil(self.config.state_delay_s / self._timestep) + 2)
        """Recent measurements with the time they become readable (see `_now`), oldest first."""
        self._callback: Callable[[], None] | None = None
        self._callback_steps = 1
        """Physics steps between the measurements announced to the callback."""
        self._unannounced: deque[float] = deque()
        """When each measurement still to be announced becomes readable (see `_now`), oldest first."""
        self._connected = False
        self._enabled = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats = {"physics_steps": 0, "overruns": 0, "commands_received": 0, "commands_ignored": 0}
        self.view.write_joint_state(self._data.qpos, self._data.qvel, _initial_q(spec, self.config),
                                    np.zeros(spec.num_joints))
        if self.config.initial_base:
            self._place_base(self.config.initial_base)
        self._apply(self._zero_command())
        self._held = None
        """The held base's initial qpos (see `held_until_thrust`); None once released, or never held."""
        held = self.config.held_until_thrust
        if held or (held is None and len(self._rotors)):
            if not len(self._rotors):
                self.config._fail("held_until_thrust", f"{spec.name} has no rotors")
            self._held = self._data.qpos[self._base_qpos:self._base_qpos + 7].copy()
            self._weight = float(self.model.body_subtreemass[self.view.base_body] * -self.model.opt.gravity[2])
        mujoco.mj_forward(self.model, self._data)
        self._measure()

    # --- RobotInterface ---------------------------------------------------------------------
    def connect(self) -> None:
        """Start the physics thread (realtime) or just accept calls (manual stepping)."""
        with self._lock:
            if self._connected:
                return
            self._connected = True
        if self.config.realtime:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"SimRobot({self.spec.name})", daemon=True)
            self._thread.start()

    def enable(self) -> None:
        with self._lock:
            self._require_connected()
            self._enabled = True

    def read_state(self) -> RobotState:
        """The newest measurement at least `state_delay_s` old; stamps are wall-clock (simulation time if not realtime)."""
        with self._lock:
            self._require_connected()
            now = self._now()
            readable = [state for t, state in self._history if t <= now]
            return readable[-1] if readable else self._history[0][1]

    def write_command(self, command: Command) -> None:
        """Queue a command for the actuated joints; it reaches the motors `command_delay_s` later."""
        checked = _checked_command(command, len(self._actuators), len(self._rotors))
        with self._lock:
            self._require_connected()
            self._stats["commands_received"] += 1
            if not self._enabled:
                self._stats["commands_ignored"] += 1
                return
            self._pending.append((self._data.time + self.config.command_delay_s, checked))

    def disable(self) -> None:
        """Zero torque now; queued commands are dropped and new ones ignored until `enable()`."""
        with self._lock:
            self._enabled = False
            self._pending.clear()
            self._apply(self._zero_command())

    def close(self) -> None:
        """Stop and join the physics thread; motors off."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.disable()
        with self._lock:
            self._connected = False

    # --- simulation-only --------------------------------------------------------------------
    def set_state_callback(self, callback: Callable[[], None] | None, *, period: float | None = None) -> None:
        """Call `callback()` the moment a measurement becomes readable, for one measurement every
        `period` seconds (a multiple of the timestep; None: every physics step); None: no more calls.

        Announced are the measurements after physics step k·period/timestep (the states a
        training environment hands its policy). The callback runs on the physics thread
        (in `step()` without one), outside the robot's lock: it may call `read_state`, and
        must return quickly, like a signal handler (set an event, notify a condition).
        """
        steps = 1
        if period is not None:
            steps = round(period / self._timestep)
            if steps < 1 or abs(steps * self._timestep - period) > 1e-9 * max(period, 1.0):
                raise RobotError(f"SimRobot({self.spec.name}).set_state_callback: period {period} s is not a "
                                 f"multiple of the physics timestep {self._timestep} s")
        with self._lock:
            self._callback, self._callback_steps = callback, steps
            self._unannounced.clear()

    def step(self, n: int = 1) -> None:
        """Advance the physics by `n` timesteps; only for a robot with `realtime=False`."""
        if self.config.realtime:
            raise RobotError(f"SimRobot({self.spec.name}).step: the robot steps itself in real time (realtime=True)")
        for _ in range(n):
            with self._lock:
                self._require_connected()
                self._step_once()
            self._announce(until=-math.inf)

    def stats(self) -> dict[str, int]:
        """Counters: `physics_steps`, `overruns` (steps finished after their deadline),
        `commands_received`, `commands_ignored` (received while disabled)."""
        with self._lock:
            return dict(self._stats)

    def rotor_thrust(self) -> np.ndarray:
        """Each rotor's thrust state now (the motor lag's output), (num_rotors,) fractions of top thrust."""
        with self._lock:
            return self._rotor_state().copy()

    def _rotor_state(self) -> np.ndarray:
        """The rotors' thrust states, (num_rotors,) fractions of top thrust (a view of the data; lock held)."""
        return self._data.act[self.model.actuator_actadr[self._rotors]]

    @property
    def timestep(self) -> float:
        """Seconds of physics per step."""
        return self._timestep

    # --- internals --------------------------------------------------------------------------
    def _run(self) -> None:
        """The physics thread: one step per timestep at absolute deadlines, catching up when late;
        in between, each announced measurement at the moment it becomes readable."""
        deadline = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                self._step_once()
            deadline += self._timestep
            self._announce(until=deadline)
            wait = deadline - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
            else:
                with self._lock:
                    self._stats["overruns"] += 1

    def _announce(self, *, until: float) -> None:
        """Call the callback for each measurement readable now or, waiting for it, readable before `until`."""
        while True:
            with self._lock:
                if not self._unannounced or self._unannounced[0] > max(until, self._now()):
                    return
                readable = self._unannounced[0]
            wait = readable - self._now()
            if wait > 0 and self._stop.wait(wait):
                return
            with self._lock:
                if not self._unannounced:  # the callback was replaced meanwhile
                    return
                self._unannounced.popleft()
                callback = self._callback
            callback()

    def _now(self) -> float:
        """The clock of `_history` and `_unannounced`: time.monotonic() in real time; otherwise the
        simulation time plus half a step, so that a delay of whole steps is not lost to rounding."""
        return time.monotonic() if self.config.realtime else self._data.time + 0.5 * self._timestep

    def _step_once(self) -> None:
        """Apply the commands now due, step the physics and measure. Holds the lock."""
        while self._pending and self._pending[0][0] <= self._data.time + 0.5 * self._timestep:
            self._apply(self._pending.popleft()[1])
        mujoco.mj_step(self.model, self._data)
        if self._held is not None:
            thrust = self._rotor_state() @ self.model.actuator_gainprm[self._rotors, 0]
            if thrust >= HELD_RELEASE * self._weight:
                self._held = None   # the rotors take the weight: the hand lets go
            else:
                self._data.qpos[self._base_qpos:self._base_qpos + 7] = self._held
                self._data.qvel[self._base_dof:self._base_dof + 6] = 0.0
        self._stats["physics_steps"] += 1
        self._measure()

    def _apply(self, command: Command) -> None:
        """Set the motor drivers' PD law: force = kp q* - kp q - kd dq + (tau_ff + kd dq*), clamped by forcerange."""
        a = self._actuators
        self.model.actuator_gainprm[a, 0] = command.kp
        self.model.actuator_biasprm[a, 0] = command.tau_ff + command.kd * command.dq
        self.model.actuator_biasprm[a, 1] = -command.kp
        self.model.actuator_biasprm[a, 2] = -command.kd
        self._data.ctrl[a] = command.q
        if len(self._rotors):
            self._data.ctrl[self._rotors] = command.rotor_thrust

    def _measure(self) -> None:
        if self.config.realtime:
            stamp, measured = time.time(), time.monotonic()
        else:
            stamp = measured = self._data.time
        state = self.view.read_state(self._data.qpos, self._data.qvel, self._data.qfrc_actuator, stamp=stamp)
        if self.view.base_body is not None:
            state.base_pos_w = self._data.qpos[self._base_qpos:self._base_qpos + 3].copy()
            state.base_lin_vel_w = self._data.qvel[self._base_dof:self._base_dof + 3].copy()
        if self.config.noise_q:
            state.q += self._rng.normal(0.0, self.config.noise_q, state.q.shape)
        if self.config.noise_dq:
            state.dq += self._rng.normal(0.0, self.config.noise_dq, state.dq.shape)
        readable = measured + self.config.state_delay_s
        self._history.append((readable, state))
        if self._callback is not None and self._stats["physics_steps"] % self._callback_steps == 0:
            self._unannounced.append(readable)

    @property
    def _base_qpos(self) -> int:
        return int(self.model.jnt_qposadr[self.model.body_jntadr[self.view.base_body]])

    @property
    def _base_dof(self) -> int:
        return int(self.model.jnt_dofadr[self.model.body_jntadr[self.view.base_body]])

    def _place_base(self, pose: dict[str, list[float]]) -> None:
        """Write `initial_base` (see SimRobotConfig) into the free joint."""
        if self.view.base_body is None:
            self.config._fail("initial_base", f"{self.spec.name} has no floating base")
        adr = self._base_qpos
        if "position" in pose:
            self._data.qpos[adr:adr + 3] = pose["position"]
        if "rpy" in pose:
            quat = np.zeros(4)
            mujoco.mju_euler2Quat(quat, np.asarray(pose["rpy"], dtype=np.float64), "XYZ")
            self._data.qpos[adr + 3:adr + 7] = quat

    def _zero_command(self) -> Command:
        zeros = np.zeros(len(self._actuators))
        return Command(q=zeros, dq=zeros, kp=zeros, kd=zeros, tau_ff=zeros,
                       rotor_thrust=np.zeros(len(self._rotors)) if len(self._rotors) else None)

    def _require_connected(self) -> None:
        if not self._connected:
            raise RobotError(f"SimRobot({self.spec.name}): not connected; call connect() or use it as a context manager")


def _checked_command(command: Command, size: int, rotors: int) -> Command:
    """The command as float64 (size,) arrays, and (rotors,) rotor thrusts in [0, 1] for a multirotor; RobotError
    naming the field otherwise."""
    fields = {}
    for key in ("q", "dq", "kp", "kd", "tau_ff"):
        value = np.asarray(getattr(command, key), dtype=np.float64)
        if value.shape != (size,):
            raise RobotError(f"Command.{key}: expected shape ({size},) for the actuated joints, got {value.shape}")
        if not np.isfinite(value).all():
            raise RobotError(f"Command.{key}: non-finite value {value}; commands go through the SafetyFilter")
        fields[key] = value.copy()
    if rotors:
        if command.rotor_thrust is None:
            raise RobotError(f"Command.rotor_thrust: expected shape ({rotors},) for the rotors, got None")
        thrust = np.asarray(command.rotor_thrust, dtype=np.float64)
        if thrust.shape != (rotors,):
            raise RobotError(f"Command.rotor_thrust: expected shape ({rotors},) for the rotors, got {thrust.shape}")
        if not (np.isfinite(thrust).all() and (thrust >= 0).all() and (thrust <= 1).all()):
            raise RobotError(f"Command.rotor_thrust: {thrust} outside [0, 1]; commands go through the SafetyFilter")
        fields["rotor_thrust"] = thrust.copy()
    elif command.rotor_thrust is not None:
        raise RobotError("Command.rotor_thrust: this robot has no rotors (expected None)")
    return Command(**fields)


def _initial_q(spec: RobotSpec, config: SimRobotConfig) -> np.ndarray:
    q = spec.default_q.copy()
    for name, value in config.initial_q.items():
        if name not in spec.joint_names:
            raise SimRobotConfigError(f"{config.where}: initial_q.{name}: not a joint of {spec.name} "
                                      f"(joints: {', '.join(spec.joint_names)})")
        i = spec.joint_names.index(name)
        if not spec.lower[i] <= value <= spec.upper[i]:
            raise SimRobotConfigError(f"{config.where}: initial_q.{name}: {value} is outside the joint's limits "
                                      f"[{spec.lower[i]}, {spec.upper[i]}]")
        q[i] = value
    return q


def _apply_overrides(model: mujoco.MjModel, config: SimRobotConfig, spec: RobotSpec) -> None:
    """Change the model's parameters as the config says, through `s2r.sim.parameters`, then its derived constants."""
    recompute = False
    for section in OVERRIDES:
        for name, entries in getattr(config, section).items():
            for key, op in entries.items():
                where = f"{config.where}: {section}.{name}"
                parameter = PARAMETERS[key]
                ids = parameter.resolve(model, spec, (name,), where=where, error=SimRobotConfigError)
                nominal = parameter.nominal(model, ids)
                operation, value = next(iter(op.items()))
                new = combine(operation, nominal, value)
                massless = key == "mass" and not (nominal[0] > 0 and new[0] > 0)
                if new[0] < 0 or massless:
                    expected = "a massive body to stay > 0" if key == "mass" else ">= 0"
                    raise SimRobotConfigError(f"{where}.{key}: {nominal[0]:g} {parameter.unit} becomes {new[0]:g} "
                                              f"{parameter.unit}; expected {expected}")
                parameter.write(lambda field: getattr(model, field)[None], np.array([0]), ids, new[None], model)
                recompute |= parameter.set_const
    if recompute:
        mujoco.mj_setConst(model, mujoco.MjData(model))
