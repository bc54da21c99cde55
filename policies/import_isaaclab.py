"""`s2r import isaaclab RUN_DIR`: an Isaac Lab rsl_rl run's policy as an s2r policy, its contract mapped onto s2r.

An Isaac Lab run directory (`logs/rsl_rl/<experiment>/<date>/`) holds what the importer reads:

    exported/policy.onnx   the actor, input `obs` (1, obs_dim), output `actions` (1, num_actions), written by
                           rsl-rl-lib's exporter (`OnPolicyRunner.export_policy_to_onnx`) in Isaac Lab's play script
    params/env.yaml        the env config as Isaac Lab dumps it: `sim.dt`, `decimation`,
                           `scene.robot.init_state.joint_pos` (regex → rad), `actions.<term>` (JointPositionAction:
                           scale, use_default_offset), `observations.policy.<term>` in order, each with `func`
                           ("module:function"), `scale`, `clip`, `history_length`
    params/agent.yaml      rsl_rl's config; `clip_actions` if set

Isaac Lab orders joints as its articulation does (the USD's breadth-first order: for a Go2, all hips,
then all thighs, then all calves), and env.yaml does not record that order, so the importer is told it
(`joint_order`, Isaac Lab's `robot.joint_names`). The s2r policy it writes takes s2r's observation in
s2r's joint order and returns actions in s2r's joint order: the Isaac graph sits between two Gather
nodes that permute every joint-sized block, so the robot side runs it as any s2r policy, contract checked.

Mapped terms (Isaac Lab → s2r): base_ang_vel → base_ang_vel, projected_gravity → projected_gravity,
generated_commands (base_velocity) → cmd_vel, joint_pos_rel → joint_pos, joint_vel_rel → joint_vel,
last_action → last_action, with Isaac's scale. Anything else (base_lin_vel, height_scan, a clip, a
history) is refused naming the term, as are default joint positions or a control period that differ
from the s2r spec's.

    contract = import_isaaclab(Path("logs/rsl_rl/go2_flat/2026-12-02"), robot_spec("go2"), joint_order, out)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import helper, numpy_helper

from s2r.actions import ActionMapping
from s2r.contract import METADATA_KEY, ContractError, PolicyContract
from s2r.observations import ObsTerm, term_sizes
from s2r.policies.export import save_onnx
from s2r.runtime.mlp import ACTION_OUTPUT
from s2r.runtime.session import OBS_INPUT
from s2r.spec import RobotSpec

TERMS = {"base_ang_vel": "base_ang_vel", "projected_gravity": "projected_gravity", "generated_commands": "cmd_vel",
         "joint_pos_rel": "joint_pos", "joint_vel_rel": "joint_vel", "last_action": "last_action"}
"""Isaac Lab observation function → the s2r term that measures the same on the robot."""
JOINT_TERMS = ("joint_pos", "joint_vel", "last_action")
"""s2r terms with one value per joint: the ones whose order the import permutes."""
DEFAULT_CLIP = 100.0
"""Raw-action clip when agent.yaml sets no clip_actions (legged_gym's)."""


class IsaacLabImportError(ContractError):
    """An Isaac Lab run that s2r cannot map; the message names the file and the field."""


def import_isaaclab(run_dir: Path, spec: RobotSpec, joint_order: list[str], out: Path) -> PolicyContract:
    """Write `out`, an s2r policy for `spec` from the Isaac Lab run `run_dir`; its contract.

    `joint_order`: Isaac Lab's joint names in its articulation order (num_joints,)."""
    env_path, onnx_path = run_dir / "params" / "env.yaml", run_dir / "exported" / "policy.onnx"
    for path in (env_path, onnx_path):
        if not path.is_file():
            raise IsaacLabImportError(f"{run_dir}: {path.relative_to(run_dir)}: missing (an Isaac Lab rsl_rl run holds it)")
    env = _read(env_path)
    agent_path = run_dir / "params" / "agent.yaml"
    agent = _read(agent_path) if agent_path.is_file() else {}
    names = list(spec.joint_names)
    if sorted(joint_order) != sorted(names) or len(set(joint_order)) != len(joint_order):
        raise IsaacLabImportError(f"--joint-order: expected each joint of {spec.name} once ({', '.join(names)}), "
                           f"got {', '.join(joint_order)}")
    isaac_index = np.array([joint_order.index(n) for n in names])    # s2r joint k is Isaac joint isaac_index[k]

    period = float(_get(env, env_path, "sim.dt")) * int(_get(env, env_path, "decimation"))
    if abs(period - spec.control_period) > 1e-9:
        raise IsaacLabImportError(f"{env_path}: sim.dt × decimation: {period} s, the {spec.name} spec controls every "
                           f"{spec.control_period} s")
    defaults = _get(env, env_path, "scene.robot.init_state.joint_pos")
    for i, name in enumerate(names):
        matches = [value for pattern, value in defaults.items() if re.fullmatch(pattern, name)]
        if not matches:
            raise IsaacLabImportError(f"{env_path}: scene.robot.init_state.joint_pos: no entry matches {name!r}")
        if abs(float(matches[0]) - spec.default_q[i]) > 1e-6:
            raise IsaacLabImportError(f"{env_path}: scene.robot.init_state.joint_pos: {name} is {matches[0]}, the {spec.name} "
                               f"spec's default_position is {spec.default_q[i]} (s2r measures joint_pos from it)")

    action_scale = _action_scale(env, env_path, len(spec.actuated_index))
    observation = []
    for key, term in _get(env, env_path, "observations.policy").items():
        if not isinstance(term, dict) or "func" not in term:
            continue   # the group's own settings (concatenate_terms, enable_corruption, ...)
        where = f"{env_path}: observations.policy.{key}"
        function = str(term["func"]).rsplit(":", 1)[-1]
        if function not in TERMS:
            raise IsaacLabImportError(f"{where}: func {term['func']!r} has no s2r term measured on the robot "
                               f"(mapped: {', '.join(TERMS)})")
        for setting in ("clip", "history_length"):
            if term.get(setting):
                raise IsaacLabImportError(f"{where}.{setting}: {term[setting]!r}; s2r terms take no {setting}")
        scale = term.get("scale")
        if scale is not None and not isinstance(scale, (int, float)):
            raise IsaacLabImportError(f"{where}.scale: {scale!r}; expected one number")
        observation.append(ObsTerm(TERMS[function], 1.0 if scale is None else float(scale)))
    sizes = term_sizes(observation, spec)

    permutation = np.concatenate([start + (isaac_index if t.name in JOINT_TERMS else np.arange(size))
                                  for t, size, start in zip(observation, sizes, np.cumsum([0, *sizes[:-1]]))])
    # s2r obs → Isaac obs: isaac_obs[j] = s2r_obs[inverse[j]]; Isaac actions → s2r: s2r_act[k] = isaac_act[isaac_index[k]]
    inverse = np.argsort(permutation)
    actuated = [names[i] for i in spec.actuated_index]
    action = ActionMapping(
        joint_names=tuple(actuated), mode="position", scale=(action_scale,) * len(actuated),
        offset=tuple(spec.default_q[spec.actuated_index]), clip=float(agent.get("clip_actions") or DEFAULT_CLIP),
        kp=tuple(spec.joint_array("kp", actuated_only=True)), kd=tuple(spec.joint_array("kd", actuated_only=True)))
    contract = PolicyContract(
        kind="mlp", robot=spec.name, robot_spec_hash=spec.hash, joint_names=tuple(names),
        observation=tuple(observation), observation_sizes=tuple(sizes), history_length=1, action=action,
        control_period=spec.control_period, inputs={"cmd_vel": 3} if any(t.name == "cmd_vel" for t in observation)
        else {}, provenance={"imported_from": "isaaclab", "run_dir": str(run_dir), "joint_order": list(joint_order)})
    model = _wrapped(onnx.load(onnx_path), inverse, isaac_index, onnx_path)
    save_onnx(model, {METADATA_KEY: contract.to_json()}, out)
    return contract


def _wrapped(model: onnx.ModelProto, obs_index: np.ndarray, action_index: np.ndarray, path: Path) -> onnx.ModelProto:
    """The Isaac graph between Gathers: `obs` (batch, n) in s2r order → its input; its output → `action` in s2r order."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise IsaacLabImportError(f"{path}: expected one input and one output (rsl-rl-lib's exporter), got "
                           f"{len(graph.input)} and {len(graph.output)}")
    for old, new in ((graph.input[0].name, "isaaclab_obs"), (graph.output[0].name, "isaaclab_actions")):
        for node in graph.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]
    isaac_in, isaac_out = "isaaclab_obs", "isaaclab_actions"
    width = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    if width != len(obs_index):
        raise IsaacLabImportError(f"{path}: its input has {width} values, env.yaml's policy terms make {len(obs_index)}")
    graph.initializer.extend([numpy_helper.from_array(obs_index.astype(np.int64), "s2r_obs_order"),
                              numpy_helper.from_array(action_index.astype(np.int64), "s2r_action_order")])
    graph.node.insert(0, helper.make_node("Gather", [OBS_INPUT, "s2r_obs_order"], [isaac_in], axis=1))
    graph.node.append(helper.make_node("Gather", [isaac_out, "s2r_action_order"], [ACTION_OUTPUT], axis=1))
    batch = helper.make_tensor_value_info(OBS_INPUT, onnx.TensorProto.FLOAT, ["batch", width])
    out = helper.make_tensor_value_info(ACTION_OUTPUT, onnx.TensorProto.FLOAT, ["batch", len(action_index)])
    del graph.input[:], graph.output[:], graph.value_info[:]   # the exporter's shapes fix the batch at 1
    graph.input.append(batch)
    graph.output.append(out)
    return model


def _action_scale(env: dict, path: Path, num_actuated: int) -> float:
    actions = _get(env, path, "actions")
    terms = {k: v for k, v in actions.items() if isinstance(v, dict)}
    if len(terms) != 1:
        raise IsaacLabImportError(f"{path}: actions: expected one joint-position term, got {', '.join(terms) or 'none'}")
    key, term = next(iter(terms.items()))
    kind = str(term.get("class_type", "")).rsplit(":", 1)[-1]
    if kind != "JointPositionAction":
        raise IsaacLabImportError(f"{path}: actions.{key}.class_type: {term.get('class_type')!r}; s2r maps JointPositionAction")
    if not term.get("use_default_offset", False):
        raise IsaacLabImportError(f"{path}: actions.{key}.use_default_offset: false; s2r offsets actions by the default pose")
    if term.get("clip"):
        raise IsaacLabImportError(f"{path}: actions.{key}.clip: {term['clip']!r}; s2r clips raw actions only")
    scale = term.get("scale", 1.0)
    if not isinstance(scale, (int, float)):
        raise IsaacLabImportError(f"{path}: actions.{key}.scale: {scale!r}; expected one number")
    return float(scale)


class _Loader(yaml.SafeLoader):
    """safe_load plus the one Python tag Isaac Lab's dump writes (tuples, read as lists)."""


_Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise IsaacLabImportError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise IsaacLabImportError(f"{path}: expected a mapping")
    return data


def _get(data: dict, path: Path, key: str) -> Any:
    value: Any = data
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise IsaacLabImportError(f"{path}: {key}: missing")
        value = value[part]
    return value
