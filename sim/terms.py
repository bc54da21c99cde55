"""Task terms: rewards and terminations as small vectorized functions with typed parameters.

A task's config lists its terms by name, each reward with a weight and its parameters;
the names and parameter types are checked when the config is built, so a typo or a
wrong type fails at import, naming the term. Every term is a pure function of one
step's `StepContext` (the robot state, the action, the task inputs and the quantities
the task derives from the simulator) and returns one value per world, (num_envs,):
a term gives the same numbers for a batch as for each of its worlds alone
(`StepContext.take`).

    rewards = (Reward("track_lin_vel_xy_exp", 1.0, {"std": 0.5}), Reward("action_rate_l2", -0.01))
    terminations = (Termination("bad_orientation", {"limit_rad": 1.0}),)

New terms register with `@reward_term(Params)` / `@termination_term(Params)` where
`Params` is a frozen dataclass of the term's parameters (`NoParams` for none).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s2r.geometry import wrap_to_pi
from s2r.spec import RobotSpec
from s2r.state import RobotState


@dataclass(frozen=True)
class NoParams:
    """The parameters of a term that takes none."""


@dataclass
class StepContext:
    """What the terms of one step read; every array has the worlds on its first axis.

    `quantities` holds what the task derives from the simulator (`Task.quantities`): for a
    floating base `lin_vel_b` (n, 3) m/s, `base_height` (n,) m, `projected_gravity` (n, 3),
    contact forces; for the reach task `ee_error` (n, 3) m; for push-T `coverage` (n,).
    """

    state: RobotState
    action: np.ndarray
    """The clipped raw action of this step, (n, num_actions)."""
    last_action: np.ndarray
    """The previous step's clipped raw action, (n, num_actions)."""
    inputs: Mapping[str, np.ndarray]
    """The task inputs (commands, targets), each (n, size)."""
    spec: RobotSpec
    dt: float
    """The control period, s."""
    quantities: Mapping[str, np.ndarray] = field(default_factory=dict)

    def take(self, ids: np.ndarray) -> StepContext:
        """The context of worlds `ids` (k,) alone."""
        return StepContext(self.state.take(ids), self.action[ids], self.last_action[ids],
                           {k: v[ids] for k, v in self.inputs.items()}, self.spec, self.dt,
                           {k: v[ids] for k, v in self.quantities.items()})


@dataclass(frozen=True)
class TermDef:
    """A registered term: its function and its parameters' dataclass."""

    fn: Callable[[StepContext, Any], np.ndarray]
    params: type


REWARDS: dict[str, TermDef] = {}
TERMINATIONS: dict[str, TermDef] = {}


def reward_term(params: type = NoParams):
    """Register `fn(ctx, params) -> (n,)` as a reward term named after the function."""
    def register(fn):
        REWARDS[fn.__name__] = TermDef(fn, params)
        return fn
    return register


def termination_term(params: type = NoParams):
    """Register `fn(ctx, params) -> (n,) bool` as a termination term named after the function."""
    def register(fn):
        TERMINATIONS[fn.__name__] = TermDef(fn, params)
        return fn
    return register


def _typed_params(kind: str, name: str, registry: dict[str, TermDef], params: Mapping[str, Any]) -> Any:
    """The term's parameters dataclass from `params`, refusing unknown names and wrong types, naming the term."""
    if name not in registry:
        raise ValueError(f"{kind} term {name!r} is unknown; known: {', '.join(sorted(registry))}")
    cls = registry[name].params
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in params.items():
        if key not in known:
            raise ValueError(f"{kind} term {name!r}: parameter {key!r} is unknown; it takes "
                             f"{', '.join(sorted(known)) or 'none'}")
        if not _is_instance(value, hints[key]):
            raise TypeError(f"{kind} term {name!r}: parameter {key!r} = {value!r} is not {_type_name(hints[key])}")
    return cls(**params)


def _is_instance(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        (item, *rest) = typing.get_args(hint)
        return isinstance(value, tuple) and all(_is_instance(v, item) for v in value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is None else str(hint)


@dataclass(frozen=True)
class Reward:
    """A reward term by name, its weight and its parameters (checked against the term's dataclass)."""

    name: str
    weight: float
    params: Any = dataclasses.field(default_factory=dict)
    """A mapping of parameter names to values; after construction, the term's typed parameters."""

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)):
            raise TypeError(f"reward term {self.name!r}: weight {self.weight!r} is not a number")
        if isinstance(self.params, Mapping):
            object.__setattr__(self, "params", _typed_params("reward", self.name, REWARDS, self.params))

    def __call__(self, ctx: StepContext) -> np.ndarray:
        """The term's unweighted value, (n,)."""
        return REWARDS[self.name].fn(ctx, self.params)


@dataclass(frozen=True)
class Termination:
    """A termination term by name and its parameters; a world whose term holds ends its episode as failed."""

    name: str
    params: Any = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.params, Mapping):
            object.__setattr__(self, "params", _typed_params("termination", self.name, TERMINATIONS, self.params))

    def __call__(self, ctx: StepContext) -> np.ndarray:
        """(n,) bool."""
        return TERMINATIONS[self.name].fn(ctx, self.params)


def weighted_sum(rewards: tuple[Reward, ...], ctx: StepContext, scale: float = 1.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The step reward (n,) and each term's weighted contribution (n,), summed in the listed order
    (`scale` multiplies every weight: the control period for per-second weights)."""
    parts: dict[str, np.ndarray] = {}
    total = None
    for term in rewards:
        value = (term.weight * scale) * term(ctx)
        parts[term.name] = value
        total = value if total is None else total + value
    if total is None:
        total = np.zeros(len(ctx.action))
    return total, parts


# --- joint-space terms (any robot) -----------------------------------------------------------

@dataclass(frozen=True)
class Joints:
    """Spec indices of the joints a term reads; empty for all."""

    joints: tuple[int, ...] = ()


def _pick(x: np.ndarray, joints: tuple[int, ...]) -> np.ndarray:
    return x[:, list(joints)] if joints else x


@reward_term(Joints)
def joint_vel_l2(ctx: StepContext, p: Joints) -> np.ndarray:
    """Σ dq² over the joints, (rad/s)²."""
    return np.sum(_pick(ctx.state.dq, p.joints) ** 2, axis=-1)


@reward_term(Joints)
def joint_torques_l2(ctx: StepContext, p: Joints) -> np.ndarray:
    """Σ τ² over the joints' actuator forces, (N·m)²."""
    return np.sum(_pick(ctx.state.tau, p.joints) ** 2, axis=-1)


@reward_term(Joints)
def joint_acc_l2(ctx: StepContext, p: Joints) -> np.ndarray:
    """Σ ((dq - dq_prev) / dt)² over the joints, from the task's `last_dq` quantity, (rad/s²)²."""
    acc = (ctx.state.dq - ctx.quantities["last_dq"]) / ctx.dt
    return np.sum(_pick(acc, p.joints) ** 2, axis=-1)


@dataclass(frozen=True)
class SoftLimits:
    """The fraction of each joint's range inside which no penalty applies."""

    soft_fraction: float = 0.9


@reward_term(SoftLimits)
def joint_pos_limits(ctx: StepContext, p: SoftLimits) -> np.ndarray:
    """Σ over the joints of how far (rad) each is outside the central `soft_fraction` of its range."""
    low, high = ctx.spec.lower, ctx.spec.upper
    middle, half = (low + high) / 2, (high - low) / 2 * p.soft_fraction
    q = ctx.state.q
    return np.sum(np.clip(middle - half - q, 0, None) + np.clip(q - middle - half, 0, None), axis=-1)


@reward_term()
def action_l2(ctx: StepContext, p: NoParams) -> np.ndarray:
    """Σ a² over the clipped raw action."""
    return np.sum(ctx.action**2, axis=-1)


@reward_term()
def action_rate_l2(ctx: StepContext, p: NoParams) -> np.ndarray:
    """Σ (a - a_prev)² over the clipped raw actions of this and the previous step."""
    return np.sum((ctx.action - ctx.last_action) ** 2, axis=-1)


@dataclass(frozen=True)
class Joint:
    """One joint by spec index."""

    joint: int = 0


@reward_term(Joint)
def joint_upright_cos(ctx: StepContext, p: Joint) -> np.ndarray:
    """(1 + cos θ) / 2 of a continuous joint's angle θ (wrapped): 1 upright, 0 hanging."""
    return 0.5 * (1 + np.cos(wrap_to_pi(ctx.state.q[:, p.joint])))


@dataclass(frozen=True)
class JointBound:
    """One joint by spec index and a bound on its position, rad or m."""

    joint: int = 0
    limit: float = 1.0


@termination_term(JointBound)
def joint_pos_out_of_bounds(ctx: StepContext, p: JointBound) -> np.ndarray:
    """|q| of the joint beyond `limit`."""
    return np.abs(ctx.state.q[:, p.joint]) > p.limit
