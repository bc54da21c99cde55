"""SimRobot: a MuJoCo model of the robot that behaves like its hardware.

It steps the training model in real time on its own thread, at absolute
deadlines (the k-th step is due at start + k·timestep, so lateness never
accumulates into drift; late steps are counted as overruns). Its motor drivers
apply the PD law of the last command, clamped to each joint's effort limit,

    tau = clip(kp (q* - q) + kd (dq* - dq) + tau_ff, -effort, effort)

with the very actuators training uses: the model is compiled in position mode
and each command rewrites its actuators' gains, so with kp = kd = 0 a command
is exactly the torque motor of a torque-mode policy, and a held PD command is
exactly a position-mode one. A YAML file adds what makes a robot real:
command and sensor latency, sensor noise and parameters that differ from the
training model (damping, armature, friction, masses).

    config = load_sim_robot_config("hardware/configs/cartpole_hanging.yaml")
    with SimRobot(robot_spec("cartpole"), config) as robot:
        robot.enable()
        robot.write_command(command)       # Command, (num_actuated,) arrays
        state = robot.read_state()         # RobotState, (num_joints,) arrays

Each measurement is stamped with the wall-clock time it was taken and becomes readable
`state_delay_s` later, exactly (not rounded to a physics step). Like a robot that streams
its state, a SimRobot says when: `set_state_callback(callback, period=...)` calls back on
the physics thread the moment a measurement becomes readable, one every `period` seconds
(every physics step by default), so that a node can publish it without polling:

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
import yaml

from s2r.interface import RobotError, RobotInterface
from s2r.sim.model import compile_model
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState

JOINT_OVERRIDES = {"damping": "dof_damping", "armature": "dof_armature", "frictionloss": "dof_frictionloss"}
"""Joint parameters a config may override → the MjModel field they change."""
BODY_OVERRIDES = ("mass",)
"""Body parameters a config may override; the inertia scales with the mass."""


class SimRobotConfigError(ValueError):
    """A SimRobot config is malformed; the message names the file and the field."""


@dataclass
class SimRobotConfig:
    """How the simulated robot differs from an ideal, instantaneous copy of the training model."""

    initial_q: dict[str, float] = field(default_factory=dict)
    """Joint positions at start (rad or m) by joint name; joints left out start at the spec's default."""
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
    """Joint overrides: {joint: {damping | armature | frictionloss: {scale: x} or {add: x}}}."""
    bodies: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Body overrides: {body: {mass: {scale: x} or {add: x}}}; the body's inertia scales with its mass."""
    source: Path | None = field(default=None, compare=False)
    """The YAML file the config was read from, for error messages."""

    def __post_init__(self) -> None:
        if not isinstance(self.initial_q, dict):
            self._fail("initial_q", f"expected a mapping joint → position, got {self.initial_q!r}")
        for name, value in self.initial_q.items():
            self._number(f"initial_q.{name}", value)
        for key in ("command_delay_s", "state_delay_s", "noise_q", "noise_dq"):
            if self._number(key, getattr(self, key)) < 0:
                self._fail(key, f"expected >= 0, got {getattr(self, key)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            self._fail("seed", f"expected an integer, got {self.seed!r}")
        if not isinstance(self.realtime, bool):
            self._fail("realtime", f"expected true or false, got {self.realtime!r}")
        self._check_overrides("joints", self.joints, tuple(JOINT_OVERRIDES))
        self._check_overrides("bodies", self.bodies, BODY_OVERRIDES)

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
            self._fail(key, f"expected a mapping name → {{field: {{scale|add: x}}}}, got {overrides!r}")
        for name, entries in overrides.items():
            if not isinstance(entries, dict):
                self._fail(f"{key}.{name}", f"expected a mapping of {', '.join(fields)}, got {entries!r}")
            for parameter, op in entries.items():
                where = f"{key}.{name}.{parameter}"
                if parameter not in fields:
                    self._fail(where, f"unknown field (known fields: {', '.join(fields)})")
                if not isinstance(op, dict) or len(op) != 1 or next(iter(op)) not in ("scale", "add"):
                    self._fail(where, f"expected {{scale: x}} or {{add: x}}, got {op!r}")
                kind, value = next(iter(op.items()))
                if self._number(f"{where}.{kind}", value) < 0 and kind == "scale":
                    self._fail(f"{where}.scale", f"expected a factor >= 0, got {value}")


def load_sim_robot_config(path: str | Path) -> SimRobotConfig:
    """Read a SimRobot config YAML; raises SimRobotConfigError naming the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SimRobotConfigError(f"{path}: cannot read SimRobot config ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise SimRobotConfigError(f"{path}: not valid YAML: {error}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise SimRobotConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    known = [name for name in SimRobotConfig.__dataclass_fields__ if name != "source"]
    for key in data:
        if key not in known:
            raise SimRobotConfigError(f"{path}: {key}: unknown field (known fields: {', '.join(known)})")
    return SimRobotConfig(**data, source=path)


class SimRobot(RobotInterface):
    """A RobotInterface over a MuJoCo model of the robot, stepped in real time on its own thread.

    Starts disabled (zero torque): commands are obeyed after `enable()`. `model` is the
    MjModel it runs, overrides applied; read it, don't change it.
    """

    def __init__(self, spec: RobotSpec, config: SimRobotConfig | None = None) -> None:
        self.spec = spec
        self.config = config or SimRobotConfig()
        self.model = compile_model(spec, "position")
        _apply_overrides(self.model, self.config, spec)
        self._data = mujoco.MjData(self.model)
        joint_ids = [self.model.joint(name).id for name in spec.joint_names]
        self._qpos_index = self.model.jnt_qposadr[joint_ids]
        self._dof_index = self.model.jnt_dofadr[joint_ids]
        self._actuators = np.array([self.model.actuator(name).id for name in spec.actuated_joint_names])
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
        self._data.qpos[self._qpos_index] = _initial_q(spec, self.config)
        self._apply(self._zero_command())
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
        checked = _checked_command(command, len(self._actuators))
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

    def _measure(self) -> None:
        q = self._data.qpos[self._qpos_index].copy()
        dq = self._data.qvel[self._dof_index].copy()
        if self.config.noise_q:
            q += self._rng.normal(0.0, self.config.noise_q, q.shape)
        if self.config.noise_dq:
            dq += self._rng.normal(0.0, self.config.noise_dq, dq.shape)
        tau = self._data.qfrc_actuator[self._dof_index].copy()
        if self.config.realtime:
            stamp, measured = time.time(), time.monotonic()
        else:
            stamp = measured = self._data.time
        readable = measured + self.config.state_delay_s
        self._history.append((readable, RobotState(stamp=stamp, q=q, dq=dq, tau=tau)))
        if self._callback is not None and self._stats["physics_steps"] % self._callback_steps == 0:
            self._unannounced.append(readable)

    def _zero_command(self) -> Command:
        zeros = np.zeros(len(self._actuators))
        return Command(q=zeros, dq=zeros, kp=zeros, kd=zeros, tau_ff=zeros)

    def _require_connected(self) -> None:
        if not self._connected:
            raise RobotError(f"SimRobot({self.spec.name}): not connected; call connect() or use it as a context manager")


def _checked_command(command: Command, size: int) -> Command:
    """The command as float64 (size,) arrays; RobotError naming the field otherwise."""
    fields = {}
    for key in ("q", "dq", "kp", "kd", "tau_ff"):
        value = np.asarray(getattr(command, key), dtype=np.float64)
        if value.shape != (size,):
            raise RobotError(f"Command.{key}: expected shape ({size},) for the actuated joints, got {value.shape}")
        if not np.isfinite(value).all():
            raise RobotError(f"Command.{key}: non-finite value {value}; commands go through the SafetyFilter")
        fields[key] = value.copy()
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


def _overridden(value: np.ndarray | float, op: dict[str, float]) -> np.ndarray | float:
    kind, x = next(iter(op.items()))
    return value * x if kind == "scale" else value + x


def _apply_overrides(model: mujoco.MjModel, config: SimRobotConfig, spec: RobotSpec) -> None:
    """Change the model's joint and body parameters as the config says, then its derived constants."""
    mjcf = spec.mjcf.name
    for name, entries in config.joints.items():
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if joint < 0:
            known = ", ".join(model.joint(i).name for i in range(model.njnt))
            raise SimRobotConfigError(f"{config.where}: joints.{name}: no joint {name!r} in {mjcf} (joints: {known})")
        dofs = model.dof_jntid == joint
        for parameter, op in entries.items():
            values = getattr(model, JOINT_OVERRIDES[parameter])
            new = _overridden(values[dofs], op)
            if (new < 0).any():
                raise SimRobotConfigError(f"{config.where}: joints.{name}.{parameter}: gives {new}, expected >= 0")
            values[dofs] = new
    for name, entries in config.bodies.items():
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        if body <= 0:
            known = ", ".join(model.body(i).name for i in range(1, model.nbody))
            raise SimRobotConfigError(f"{config.where}: bodies.{name}: no body {name!r} in {mjcf} (bodies: {known})")
        mass = float(model.body_mass[body])
        new = float(_overridden(mass, entries["mass"]))
        if not new > 0 or not mass > 0:
            raise SimRobotConfigError(f"{config.where}: bodies.{name}.mass: {mass} kg becomes {new} kg; "
                                      "expected a massive body to stay > 0")
        model.body_inertia[body] *= new / mass
        model.body_mass[body] = new
    if config.joints or config.bodies:
        mujoco.mj_setConst(model, mujoco.MjData(model))
