"""Domain randomization: declarative terms that perturb each world of a BatchEnv.

A term names what it perturbs, how it samples (uniform, log-uniform, gaussian),
how it combines the sample with the nominal value (set, scale, add) and when
(`startup`, every `reset`, or every `interval`). Model parameters are the names of
`s2r.sim.parameters` (the vocabulary SimRobot configs and sysid share), written
into the env's per-world model fields; the command latency (seconds), encoder
bias and pushes go through the env's own setters, a sensor delay (seconds) through the
task's (`set_sensor_delay`: the quadrotor tasks delay their motion-capture inputs). A push
adds its force to what else acts on the body (a quadrotor's constant disturbance), so an
interval push of a few tenths of a second is a wind gust. Every world's current values
are kept for the critic (the privileged term `randomization`) and for
TensorBoard histograms. Sampling uses its own generator seeded from the env's
seed, so a run is reproducible.

    terms = (Randomize("mass", Dist("uniform", 0.8, 1.2), "scale"),
             Randomize("command_delay_s", Dist("uniform", 0, 0.01), "set", mode="startup"))
    env = BatchEnv(task, 1024, randomization=terms)

A YAML file holds a list of the same terms (`load_randomization(path)`):

    - {target: damping, dist: [uniform, 0.5, 2.0], operation: scale, names: [shoulder]}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from s2r.sim.parameters import OPERATIONS, PARAMETERS, Operation, combine, object_ids
from s2r.yaml_file import check_fields, read_yaml

if TYPE_CHECKING:
    from s2r.sim.env import BatchEnv

Target = Literal["friction", "mass", "com", "inertia", "damping", "armature", "frictionloss", "kp", "kd",
                 "motor_strength", "thrust_max", "time_constant", "encoder_offset", "command_delay_s",
                 "sensor_delay_s", "push"]
TARGETS: tuple[str, ...] = Target.__args__
Mode = Literal["startup", "reset", "interval"]


class RandomizationError(ValueError):
    """A randomization term that cannot apply; names the file or term and the field."""


@dataclass(frozen=True)
class Dist:
    """A distribution: uniform [a, b], log-uniform [a, b] (a, b > 0), or gaussian (mean a, std b)."""

    kind: Literal["uniform", "log_uniform", "gaussian"]
    a: float
    b: float

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, shape)
        if self.kind == "log_uniform":
            return np.exp(rng.uniform(np.log(self.a), np.log(self.b), shape))
        return rng.normal(self.a, self.b, shape)


@dataclass(frozen=True)
class Randomize:
    """One randomization term."""

    target: Target
    """What it perturbs: a model parameter (`s2r.sim.parameters`, in its unit), the command latency (seconds,
    applied in whole physics steps), the sensor delay (seconds, in whole control periods; tasks with
    `set_sensor_delay`), encoder offsets (rad or m) or pushes (N)."""
    dist: Dist
    operation: Operation = "scale"
    """How the sample combines with the nominal value."""
    mode: Mode = "reset"
    names: tuple[str, ...] = ()
    """Bodies (mass, com, inertia, push), geoms (friction), actuated joints (kp, kd, motor_strength), rotors
    (thrust_max, time_constant) or joints (the rest) it applies to; empty for all."""
    interval_s: tuple[float, float] = (1.0, 3.0)
    """Interval mode: seconds between two applications, drawn uniformly per world."""
    duration_s: float = 0.1
    """Push: how long the force lasts, seconds."""

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise RandomizationError(f"randomization target {self.target!r} is unknown; known: {', '.join(TARGETS)}")
        if self.operation not in OPERATIONS:
            raise RandomizationError(f"randomization {self.target}: operation {self.operation!r}: expected set, scale or add")
        if self.mode not in ("startup", "reset", "interval"):
            raise RandomizationError(f"randomization {self.target}: mode {self.mode!r}: expected startup, reset or interval")
        if self.dist.kind not in ("uniform", "log_uniform", "gaussian"):
            raise RandomizationError(f"randomization {self.target}: dist {self.dist.kind!r}: expected uniform, log_uniform or gaussian")
        if self.target == "push" and self.mode != "interval":
            raise RandomizationError("randomization push: mode must be 'interval'")


def load_randomization(path: str | Path) -> tuple[Randomize, ...]:
    """Terms from a YAML list; errors name the file, the entry and the field."""
    data = read_yaml(path, "randomization terms", RandomizationError, top=list)
    terms = []
    for i, entry in enumerate(data):
        where = f"[{i}]."
        check_fields(entry, path, RandomizationError, required={"target": str, "dist": list},
                     optional={"operation": str, "mode": str, "names": list, "interval_s": list, "duration_s": float},
                     where=where)
        if len(entry["dist"]) != 3:
            raise RandomizationError(f"{path}: {where}dist: expected [kind, a, b], got {entry['dist']!r}")
        try:
            kind, a, b = entry["dist"]
            terms.append(Randomize(
                target=entry["target"], dist=Dist(kind, float(a), float(b)),
                operation=entry.get("operation", "scale"), mode=entry.get("mode", "reset"),
                names=tuple(entry.get("names", ())), interval_s=tuple(entry.get("interval_s", (1.0, 3.0))),
                duration_s=float(entry.get("duration_s", 0.1)),
            ))
        except (TypeError, ValueError) as error:
            raise RandomizationError(f"{path}: [{i}]: {error}") from None
    return tuple(terms)


class Randomizer:
    """Applies terms to an env's worlds and keeps each world's current values, (num_envs, k) per term."""

    def __init__(self, env: BatchEnv, terms: tuple[Randomize, ...], seed: int) -> None:
        self.env, self.terms = env, terms
        self.rng = np.random.default_rng([seed, 0x5EED])
        self.ids = [self._resolve(t) for t in terms]
        self.values = [np.zeros((env.num_envs, self._width(t, ids))) for t, ids in zip(terms, self.ids)]
        self.samples = [self._identity(t, ids) for t, ids in zip(terms, self.ids)]
        """Each term's latest draw per world; a term not yet drawn holds the identity of its operation."""
        self.next_event = [np.zeros(env.num_envs) for _ in terms]
        self.push_until = np.zeros(env.num_envs)
        self._step_s = env.spec.control_period
        self.time = np.zeros(env.num_envs)
        """Seconds since each world's last reset, for interval terms."""
        everyone = np.arange(env.num_envs)
        for k, term in enumerate(terms):
            if term.mode == "startup":
                self._apply(k, everyone)

    @property
    def dim(self) -> int:
        """Width of the privileged `randomization` critic term."""
        return sum(v.shape[1] for v in self.values)

    def observation(self) -> np.ndarray:
        """Every world's current randomized values, (num_envs, dim)."""
        return np.concatenate(self.values, axis=1) if self.values else np.zeros((self.env.num_envs, 0))

    def histograms(self) -> dict[str, np.ndarray]:
        """Sampled values per term, for logging: name → (num_envs * k,)."""
        return {f"randomization/{k}_{t.target}": v.ravel() for k, (t, v) in enumerate(zip(self.terms, self.values))}

    def on_reset(self, ids: np.ndarray) -> None:
        """Resample the `reset` terms of worlds `ids` and restart their interval clocks; their pushes end with the
        reset, which cleared every force on them."""
        self.time[ids] = 0.0
        self.push_until[ids] = 0.0
        for k, term in enumerate(self.terms):
            if term.target == "push":
                self.values[k][ids] = 0.0
            if term.mode == "reset":
                self._apply(k, ids)
            elif term.mode == "interval":
                self.next_event[k][ids] = self.rng.uniform(*term.interval_s, len(ids))

    def on_step(self) -> None:
        """Advance the interval clocks by one control period and fire the due terms."""
        self.time += self._step_s
        for k, term in enumerate(self.terms):
            if term.mode != "interval":
                continue
            due = np.flatnonzero(self.time >= self.next_event[k])
            if len(due):
                self._apply(k, due)
                self.next_event[k][due] = self.time[due] + self.rng.uniform(*term.interval_s, len(due))
            if term.target == "push":
                ended = np.flatnonzero((self.time >= self.push_until) & np.any(self.values[k] != 0, axis=1))
                if len(ended):
                    self.env.apply_force(ended, self.ids[k][0], -self.values[k][ended])
                    self.values[k][ended] = 0.0

    # --- internals ---------------------------------------------------------------------------
    def _resolve(self, term: Randomize) -> np.ndarray:
        env, where = self.env, f"randomization {term.target}: names"
        if term.target in PARAMETERS:
            return PARAMETERS[term.target].resolve(env.model, env.spec, term.names, where=where,
                                                   error=RandomizationError)
        if term.target == "push":
            return object_ids(env.model, env.spec, "body", term.names, where=where, error=RandomizationError)
        if term.target == "encoder_offset":
            missing = [n for n in term.names if n not in env.spec.joint_names]
            if missing:
                raise RandomizationError(f"{where}: no joint {missing[0]!r} in {env.spec.name}'s spec")
            return np.array([env.spec.joint_names.index(n) for n in term.names or env.spec.joint_names])
        if term.target == "sensor_delay_s" and getattr(env.task, "set_sensor_delay", None) is None:
            raise RandomizationError(f"randomization sensor_delay_s: task {env.task.config.name} delays no sensors "
                                     "(the quadrotor tasks delay their motion-capture inputs)")
        return np.zeros(1, dtype=np.int64)  # command_delay_s, sensor_delay_s: one value per world

    def _identity(self, term: Randomize, ids: np.ndarray) -> np.ndarray:
        shape = (self.env.num_envs, len(ids))
        if term.operation == "scale":
            return np.ones(shape)
        if term.operation == "set" and term.target in PARAMETERS and PARAMETERS[term.target].width == 1:
            return np.broadcast_to(PARAMETERS[term.target].nominal(self.env.model, ids), shape).copy()
        return np.zeros(shape)

    @staticmethod
    def _width(term: Randomize, ids: np.ndarray) -> int:
        if term.target in PARAMETERS:
            return PARAMETERS[term.target].width * len(ids)   # com and inertia: three values per body
        return {"push": 3, "command_delay_s": 1, "sensor_delay_s": 1}.get(term.target, len(ids))

    def _apply(self, k: int, worlds: np.ndarray) -> None:
        term, ids, env, n = self.terms[k], self.ids[k], self.env, len(worlds)
        model = env.model
        if term.target == "push":
            direction = self.rng.normal(size=(n, 3))
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            force = direction * term.dist.sample(self.rng, (n, 1))
            env.apply_force(worlds, ids[0], force - self.values[k][worlds])   # a push still on is replaced
            self.values[k][worlds] = force
            self.push_until[worlds] = self.time[worlds] + term.duration_s
            return
        if term.target == "sensor_delay_s":
            delay = combine(term.operation, np.zeros((n, 1)), term.dist.sample(self.rng, (n, 1)))
            self.values[k][worlds] = env.task.set_sensor_delay(worlds, delay[:, 0])[:, None]
            return
        if term.target == "command_delay_s":
            delay = combine(term.operation, np.zeros((n, 1)), term.dist.sample(self.rng, (n, 1)))
            self.values[k][worlds] = env.set_command_delay(worlds, delay[:, 0])[:, None]
            return
        if term.target == "encoder_offset":
            value = combine(term.operation, np.zeros((n, len(ids))), term.dist.sample(self.rng, (n, len(ids))))
            env.set_encoder_offset(worlds, ids, value)
            self.values[k][worlds] = value
            return
        parameter = PARAMETERS[term.target]
        if parameter.width == 3:   # com, inertia: three values per body
            nominal = np.broadcast_to(parameter.nominal(model, ids), (n, len(ids), 3))
            value = combine(term.operation, nominal, term.dist.sample(self.rng, (n, len(ids), 3)))
            parameter.write(env.model_field, worlds, ids, value, model)
            self.values[k][worlds] = (value - nominal).reshape(n, -1)
            env.set_const(worlds)
            return
        # Scalar parameters: resample this term, then rebuild the field from its nominal value through
        # every term on the same target, in order, so that e.g. a mass scale and a payload compose.
        self.samples[k][worlds] = term.dist.sample(self.rng, (n, len(ids)))
        full = np.repeat(parameter.nominal(model, np.arange(len(getattr(model, parameter.field))))[None], n, axis=0)
        touched: set[int] = set()
        for j, other in enumerate(self.terms):
            if other.target == term.target:
                cols = self.ids[j]
                full[:, cols] = np.maximum(combine(other.operation, full[:, cols], self.samples[j][worlds]), 0.0)
                touched.update(cols.tolist())
        for j, other in enumerate(self.terms):
            if other.target == term.target:
                self.values[j][worlds] = full[:, self.ids[j]]
        cols = np.array(sorted(touched))
        parameter.write(env.model_field, worlds, cols, full[:, cols], model)
        if parameter.set_const:
            env.set_const(worlds)


def as_yaml(terms: tuple[Randomize, ...]) -> list[dict[str, Any]]:
    """Terms as the plain data `load_randomization` reads (for config.yaml)."""
    return [{"target": t.target, "dist": [t.dist.kind, t.dist.a, t.dist.b], "operation": t.operation,
             "mode": t.mode, "names": list(t.names), "interval_s": list(t.interval_s), "duration_s": t.duration_s}
            for t in terms]
