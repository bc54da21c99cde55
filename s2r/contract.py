"""PolicyContract: the JSON a policy carries in its ONNX metadata.

It says what the policy eats and what its output means: observation terms in
order with sizes and scales, history length, the action mapping, the control
period and the robot (name and spec hash), plus how it was trained. A runtime
checks it against the robot's spec before the first command and refuses a
mismatch with `ContractError` naming the first field that differs.

    contract = PolicyContract.from_json(text)
    contract.check(spec)          # raises ContractError("... joint_names[1]: ...")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from s2r.actions import ActionMapping
from s2r.observations import INPUT_SIZES, TERMS, ObsTerm, required_inputs, term_sizes
from s2r.spec import RobotSpec

CONTRACT_VERSION = 1
METADATA_KEY = "s2r_contract"
"""The ONNX metadata_props key that holds the contract JSON."""

PolicyKind = Literal["mlp", "diffusion"]
InitialNoise = Literal["gaussian", "policy"]
INITIAL_NOISES: tuple[InitialNoise, ...] = ("gaussian", "policy")


class ContractError(ValueError):
    """A policy's contract is missing, unreadable or does not fit the robot."""


@dataclass(frozen=True)
class PolicyContract:
    """What a policy needs from the robot and what its output means."""

    kind: PolicyKind
    robot: str
    robot_spec_hash: str
    joint_names: tuple[str, ...]
    """All joints, in the order the observation terms see them."""
    observation: tuple[ObsTerm, ...]
    observation_sizes: tuple[int, ...]
    history_length: int
    action: ActionMapping
    control_period: float
    """Seconds between commands."""
    inputs: dict[str, int] = field(default_factory=dict)
    """Task inputs the policy reads (name → size), e.g. {'target': 3}."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """How the policy was made: task, seed, iterations, s2r version, time."""
    initial_noise: InitialNoise = "gaussian"
    """Diffusion policies: where a chunk's sampling starts. "gaussian": noise drawn from N(0, I);
    "policy": a noise policy in the graph (DSRL), its output `noise` from the observation. Written to the
    JSON only when "policy", so every other contract reads and compares as before."""
    version: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        if self.initial_noise not in INITIAL_NOISES:
            raise ContractError(f"contract initial_noise: {self.initial_noise!r} (expected one of "
                                f"{', '.join(INITIAL_NOISES)})")
        if self.initial_noise != "gaussian" and self.kind != "diffusion":
            raise ContractError(f"contract initial_noise: {self.initial_noise!r} needs kind 'diffusion', "
                                f"not {self.kind!r}")

    @property
    def obs_dim(self) -> int:
        """Size of one observation frame (before history stacking)."""
        return sum(self.observation_sizes)

    @classmethod
    def build(cls, *, spec: RobotSpec, terms: tuple[ObsTerm, ...], action: ActionMapping, history_length: int = 1,
              kind: PolicyKind = "mlp", provenance: dict[str, Any] | None = None) -> PolicyContract:
        """A contract for `spec`, with term sizes and inputs computed from the spec."""
        return cls(
            kind=kind,
            robot=spec.name,
            robot_spec_hash=spec.hash,
            joint_names=spec.joint_names,
            observation=tuple(terms),
            observation_sizes=tuple(term_sizes(terms, spec)),
            history_length=history_length,
            action=action,
            control_period=spec.control_period,
            inputs={name: INPUT_SIZES[name](spec) for name in required_inputs(terms)},
            provenance=dict(provenance or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        noise = {} if self.initial_noise == "gaussian" else {"initial_noise": self.initial_noise}
        return {
            "version": self.version,
            "kind": self.kind,
            "robot": self.robot,
            "robot_spec_hash": self.robot_spec_hash,
            "joint_names": list(self.joint_names),
            "observation": [
                {"name": t.name, "size": size, "scale": t.scale, "noise": t.noise}
                for t, size in zip(self.observation, self.observation_sizes)
            ],
            "history_length": self.history_length,
            "action": self.action.to_dict(),
            "control_period": self.control_period,
            "inputs": dict(self.inputs),
            "provenance": self.provenance,
            **noise,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> PolicyContract:
        if not isinstance(data, dict):
            raise ContractError(f"contract: expected a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version != CONTRACT_VERSION:
            raise ContractError(f"contract version: {version!r} is not supported (this s2r reads version {CONTRACT_VERSION})")
        try:
            observation = tuple(data["observation"])
            for i, t in enumerate(observation):
                if t["name"] not in TERMS:
                    raise ContractError(f"contract observation[{i}].name: unknown term {t['name']!r}")
            return cls(
                kind=data["kind"],
                robot=data["robot"],
                robot_spec_hash=data["robot_spec_hash"],
                joint_names=tuple(data["joint_names"]),
                observation=tuple(ObsTerm(t["name"], float(t["scale"]), float(t.get("noise", 0.0))) for t in observation),
                observation_sizes=tuple(int(t["size"]) for t in observation),
                history_length=int(data["history_length"]),
                action=ActionMapping.from_dict(data["action"]),
                control_period=float(data["control_period"]),
                inputs={k: int(v) for k, v in data.get("inputs", {}).items()},
                provenance=dict(data.get("provenance", {})),
                initial_noise=data.get("initial_noise", "gaussian"),
                version=version,
            )
        except KeyError as error:
            raise ContractError(f"contract field {error.args[0]!r}: missing") from None
        except (TypeError, ValueError) as error:
            if isinstance(error, ContractError):
                raise
            raise ContractError(f"contract: malformed ({error})") from None

    @classmethod
    def from_json(cls, text: str) -> PolicyContract:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ContractError(f"contract: not valid JSON ({error})") from None
        return cls.from_dict(data)

    def check(self, spec: RobotSpec) -> list[str]:
        """Raise ContractError at the first field that does not fit `spec`; return warnings."""
        where = f"policy for robot {self.robot!r} vs spec {spec.source or spec.name}"
        if self.robot != spec.name:
            raise ContractError(f"{where}: robot: policy expects {self.robot!r}, spec is {spec.name!r}")
        _compare_names("joint_names", self.joint_names, spec.joint_names, where)
        # A multirotor's actions drive its rotors (thrust mode), in the spec's rotor order.
        commanded = tuple(r.name for r in spec.rotors) if self.action.mode == "thrust" else spec.actuated_joint_names
        _compare_names("action.joint_names", self.action.joint_names, commanded, where)
        for i, (term, size, expected) in enumerate(zip(self.observation, self.observation_sizes, term_sizes(self.observation, spec))):
            if size != expected:
                raise ContractError(
                    f"{where}: observation[{i}] ({term.name}).size: policy expects {size}, the robot gives {expected}"
                )
        if abs(self.control_period - spec.control_period) > 1e-9:
            raise ContractError(
                f"{where}: control_period: policy expects {self.control_period} s, spec has {spec.control_period} s"
            )
        warnings = []
        if self.robot_spec_hash != spec.hash:
            warnings.append(
                f"{where}: robot_spec_hash: policy trained on spec {self.robot_spec_hash}, robot has {spec.hash} "
                "(limits, gains or defaults changed since training)"
            )
        return warnings


def _compare_names(field_name: str, policy: tuple[str, ...], robot: tuple[str, ...], where: str) -> None:
    for i, (a, b) in enumerate(zip(policy, robot)):
        if a != b:
            raise ContractError(f"{where}: {field_name}[{i}]: policy expects {a!r}, the robot has {b!r}")
    if len(policy) != len(robot):
        raise ContractError(f"{where}: {field_name}: policy expects {len(policy)} joints, the robot has {len(robot)}")
