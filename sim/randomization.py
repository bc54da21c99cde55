"""Domain randomization: declarative terms that perturb each world of a BatchEnv.

A term names what it perturbs, how it samples (uniform, log-uniform, gaussian),
how it combines the sample with the nominal value (set, scale, add) and when
(`startup`, every `reset`, or every `interval`). Model fields go through the
batch's per-world fields; latency, encoder bias and pushes are applied by the
env. Every world's current values are kept for the critic (the privileged
term `randomization`) and for TensorBoard histograms. Sampling uses its own
generator seeded from the env's seed, so a run is reproducible.

    terms = (Randomize("mass", Dist("uniform", 0.8, 1.2), "scale"),
             Randomize("action_delay", Dist("uniform", 0, 2), "set", mode="startup"))
    env = BatchEnv(task, 1024, randomization=terms)

A YAML file holds a list of the same terms (`load_randomization(path)`):

    - {target: damping, dist: [uniform, 0.5, 2.0], operation: scale, names: [shoulder]}
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mujoco
import numpy as np
import yaml

if TYPE_CHECKING:
    from s2r.sim.env import BatchEnv

Target = Literal["friction", "mass", "com", "damping", "armature", "frictionloss", "kp", "kd", "motor_strength",
                 "encoder_offset", "action_delay", "push"]
TARGETS: tuple[str, ...] = Target.__args__
Operation = Literal["set", "scale", "add"]
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
    """What it perturbs: a model quantity, the action latency (physics steps), encoder offsets (rad) or pushes (N)."""
    dist: Dist
    operation: Operation = "scale"
    """How the sample combines with the nominal value."""
    mode: Mode = "reset"
    names: tuple[str, ...] = ()
    """Bodies (mass, com, push), geoms (friction) or joints (the rest) it applies to; empty for all."""
    interval_s: tuple[float, float] = (1.0, 3.0)
    """Interval mode: seconds between two applications, drawn uniformly per world."""
    duration_s: float = 0.1
    """Push: how long the force lasts, seconds."""

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise RandomizationError(f"randomization target {self.target!r} is unknown; known: {', '.join(TARGETS)}")
        if self.operation not in ("set", "scale", "add"):
            raise RandomizationError(f"randomization {self.target}: operation {self.operation!r}: expected set, scale or add")
        if self.mode not in ("startup", "reset", "interval"):
            raise RandomizationError(f"randomization {self.target}: mode {self.mode!r}: expected startup, reset or interval")
        if self.dist.kind not in ("uniform", "log_uniform", "gaussian"):
            raise RandomizationError(f"randomization {self.target}: dist {self.dist.kind!r}: expected uniform, log_uniform or gaussian")
        if self.target == "push" and self.mode != "interval":
            raise RandomizationError("randomization push: mode must be 'interval'")


def load_randomization(path: str | Path) -> tuple[Randomize, ...]:
    """Terms from a YAML list; errors name the file, the entry and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise RandomizationError(f"{path}: cannot read ({error})") from None
    if not isinstance(data, list):
        raise RandomizationError(f"{path}: expected a list of randomization terms")
    known = {f.name for f in fields(Randomize)}
    terms = []
    for i, entry in enumerate(data):
        where = f"{path}: [{i}]"
        if not isinstance(entry, dict):
            raise RandomizationError(f"{where}: expected a mapping")
        for key in entry:
            if key not in known:
                raise RandomizationError(f"{where}.{key}: unknown field (known: {', '.join(sorted(known))})")
        try:
            kind, a, b = entry["dist"]
            terms.append(Randomize(
                target=entry["target"], dist=Dist(kind, float(a), float(b)),
                operation=entry.get("operation", "scale"), mode=entry.get("mode", "reset"),
                names=tuple(entry.get("names", ())), interval_s=tuple(entry.get("interval_s", (1.0, 3.0))),
                duration_s=float(entry.get("duration_s", 0.1)),
            ))
        except KeyError as error:
            raise RandomizationError(f"{where}.{error.args[0]}: missing") from None
        except (TypeError, ValueError) as error:
            raise RandomizationError(f"{where}: {error}") from None
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
        """Resample the `reset` terms of worlds `ids` and restart their interval clocks."""
        self.time[ids] = 0.0
        for k, term in enumerate(self.terms):
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
                    self.values[k][ended] = 0.0
                    self.env.data_field("xfrc_applied")[np.ix_(ended, self.ids[k])] = 0.0

    # --- internals ---------------------------------------------------------------------------
    def _resolve(self, term: Randomize) -> np.ndarray:
        model = self.env.model
        kind = {"mass": mujoco.mjtObj.mjOBJ_BODY, "com": mujoco.mjtObj.mjOBJ_BODY, "push": mujoco.mjtObj.mjOBJ_BODY,
                "friction": mujoco.mjtObj.mjOBJ_GEOM}.get(term.target, mujoco.mjtObj.mjOBJ_JOINT)
        if kind == mujoco.mjtObj.mjOBJ_JOINT:
            names = term.names or self.env.spec.joint_names
            if term.target in ("kp", "kd", "motor_strength"):
                names = term.names or self.env.spec.actuated_joint_names
        elif kind == mujoco.mjtObj.mjOBJ_BODY:
            names = term.names or tuple(model.body(i).name for i in range(1, model.nbody) if not model.body_mocapid[i] >= 0)
        else:
            names = term.names or tuple(model.geom(i).name for i in range(model.ngeom))
        ids = []
        for name in names:
            index = mujoco.mj_name2id(model, kind, name)
            if index < 0:
                raise RandomizationError(f"randomization {term.target}: names: no {kind.name[6:].lower()} {name!r} in {self.env.spec.mjcf.name}")
            ids.append(index)
        if term.target in ("kp", "kd", "motor_strength"):
            actuators = {model.actuator(a).name: a for a in range(model.nu)}
            missing = [n for n in names if n not in actuators]
            if missing:
                raise RandomizationError(f"randomization {term.target}: names: {missing} are not actuated joints")
            if term.target in ("kp", "kd") and self.env.task.config.action_mode != "position":
                raise RandomizationError(f"randomization {term.target}: the task drives torques; use motor_strength")
            return np.array([actuators[n] for n in names])
        if term.target in ("damping", "armature", "frictionloss"):
            return model.jnt_dofadr[ids]
        if term.target == "encoder_offset":
            return np.array([self.env.spec.joint_names.index(n) for n in names])
        return np.array(ids)

    def _identity(self, term: Randomize, ids: np.ndarray) -> np.ndarray:
        shape = (self.env.num_envs, len(ids))
        if term.operation == "scale":
            return np.ones(shape)
        if term.operation == "set" and term.target in _MODEL_FIELDS:
            field, column = _MODEL_FIELDS[term.target]
            nominal = getattr(self.env.model, field)[ids] if column is None else getattr(self.env.model, field)[ids, column]
            return np.broadcast_to(-nominal if term.target == "kd" else nominal, shape).copy()
        return np.zeros(shape)

    @staticmethod
    def _width(term: Randomize, ids: np.ndarray) -> int:
        return {"com": 3 * len(ids), "push": 3, "action_delay": 1}.get(term.target, len(ids))

    def _combine(self, term: Randomize, nominal: np.ndarray, sample: np.ndarray) -> np.ndarray:
        if term.operation == "set":
            return np.broadcast_to(sample, nominal.shape).copy()
        return nominal * sample if term.operation == "scale" else nominal + sample

    def _apply(self, k: int, worlds: np.ndarray) -> None:
        term, ids, env, n = self.terms[k], self.ids[k], self.env, len(worlds)
        model = env.model
        rows = np.ix_(worlds, ids)
        if term.target == "push":
            direction = self.rng.normal(size=(n, 3))
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            force = direction * term.dist.sample(self.rng, (n, 1))
            self.values[k][worlds] = force
            env.data_field("xfrc_applied")[worlds, ids[0], :3] = force
            self.push_until[worlds] = self.time[worlds] + term.duration_s
            return
        if term.target == "action_delay":
            delay = np.clip(np.rint(self._combine(term, np.zeros((n, 1)), term.dist.sample(self.rng, (n, 1)))),
                            0, env.decimation - 1)
            self.values[k][worlds] = delay
            env.action_delay[worlds] = delay[:, 0].astype(np.int64)
            return
        if term.target == "encoder_offset":
            value = self._combine(term, np.zeros((n, len(ids))), term.dist.sample(self.rng, (n, len(ids))))
            env.encoder_offset[rows] = value
            self.values[k][worlds] = value
            return
        if term.target == "com":
            nominal = np.broadcast_to(model.body_ipos[ids], (n, len(ids), 3))
            value = self._combine(term, nominal, term.dist.sample(self.rng, (n, len(ids), 3)))
            env.model_field("body_ipos")[worlds[:, None], ids] = value
            self.values[k][worlds] = (value - nominal).reshape(n, -1)
            env.batch.set_const(worlds)
            return
        # Model fields: resample this term, then rebuild the field from its nominal value through
        # every term on the same target, in order, so that e.g. a mass scale and a payload compose.
        self.samples[k][worlds] = term.dist.sample(self.rng, (n, len(ids)))
        field, column = _MODEL_FIELDS[term.target]
        nominal = getattr(model, field) if column is None else getattr(model, field)[:, column]
        full = np.repeat((-nominal if term.target == "kd" else nominal)[None], n, axis=0)
        touched: set[int] = set()
        for j, other in enumerate(self.terms):
            if other.target == term.target:
                cols = self.ids[j]
                full[:, cols] = np.maximum(self._combine(other, full[:, cols], self.samples[j][worlds]), 0.0)
                touched.update(cols.tolist())
        for j, other in enumerate(self.terms):
            if other.target == term.target:
                self.values[j][worlds] = full[:, self.ids[j]]
        cols = np.array(sorted(touched))
        value = full[:, cols]
        array = env.model_field(field)
        if column is None:
            array[np.ix_(worlds, cols)] = value
        else:
            array[worlds[:, None], cols, column] = -value if term.target == "kd" else value
        if term.target == "kp":
            env.model_field("actuator_biasprm")[worlds[:, None], cols, 1] = -value
        if term.target == "mass":
            scale = value / np.maximum(model.body_mass[cols], 1e-12)
            env.model_field("body_inertia")[worlds[:, None], cols] = model.body_inertia[cols] * scale[..., None]
        if term.target in ("mass", "armature"):
            env.batch.set_const(worlds)


_MODEL_FIELDS: dict[str, tuple[str, int | None]] = {
    "friction": ("geom_friction", 0),
    "mass": ("body_mass", None),
    "damping": ("dof_damping", None),
    "armature": ("dof_armature", None),
    "frictionloss": ("dof_frictionloss", None),
    "kp": ("actuator_gainprm", 0),
    "kd": ("actuator_biasprm", 2),
    "motor_strength": ("actuator_gear", 0),
}
"""Target → (MjModel field, column or None); kd is stored negated in biasprm[2]."""


def as_yaml(terms: tuple[Randomize, ...]) -> list[dict[str, Any]]:
    """Terms as the plain data `load_randomization` reads (for config.yaml)."""
    return [{"target": t.target, "dist": [t.dist.kind, t.dist.a, t.dist.b], "operation": t.operation,
             "mode": t.mode, "names": list(t.names), "interval_s": list(t.interval_s), "duration_s": t.duration_s}
            for t in terms]
