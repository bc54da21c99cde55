"""An Isaac Lab rsl_rl run directory built here from an s2r go2_flat run, to test `s2r import isaaclab` on.

Isaac Lab cannot be installed here, so its run is made the way Isaac Lab would make it: the s2r
actor's weights go into rsl-rl-lib's own `MLPModel` with Isaac Lab's joint order (all hips, all
thighs, all calves: the Go2 USD's breadth-first articulation order), exported by rsl-rl-lib's
exporter (`as_onnx`, `torch.onnx.export` as `OnPolicyRunner.export_policy_to_onnx` calls it) to
`exported/policy.onnx`, with `params/env.yaml` and `params/agent.yaml` in Isaac Lab's schema (the
velocity task's terms, `func` as "module:function", regex default joint positions, tuples as
`!!python/tuple` as its dump writes them).

    PYTHONPATH=. python -m bench.isaaclab_run runs/go2_flat runs/isaaclab_go2
    s2r import isaaclab runs/isaaclab_go2 --robot go2 --joint-order FL_hip_joint,FR_hip_joint,... --out go2_imported.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from tensordict import TensorDict

ISAAC_JOINT_ORDER = [f"{leg}_{part}_joint" for part in ("hip", "thigh", "calf") for leg in ("FL", "FR", "RL", "RR")]
"""The Go2's joints as Isaac Lab's articulation orders them."""
MDP = "isaaclab.envs.mdp"
TERM_FUNCS = {"base_ang_vel": f"{MDP}.observations:base_ang_vel",
              "projected_gravity": f"{MDP}.observations:projected_gravity",
              "cmd_vel": f"{MDP}.observations:generated_commands",
              "joint_pos": f"{MDP}.observations:joint_pos_rel",
              "joint_vel": f"{MDP}.observations:joint_vel_rel",
              "last_action": f"{MDP}.observations:last_action"}
ISAAC_KEYS = {"cmd_vel": "velocity_commands", "last_action": "actions"}


def build_isaaclab_run(s2r_run: Path, out: Path) -> Path:
    """Write an Isaac Lab-format run directory for the go2_flat policy in `s2r_run`; `out`."""
    from rsl_rl.models.mlp_model import MLPModel

    from s2r.policies.train import load_policy
    from s2r.spec import robot_spec

    policy, contract, cfg = load_policy(s2r_run)
    spec = robot_spec(contract.robot)
    names = list(spec.joint_names)
    s2r_of = [names.index(n) for n in ISAAC_JOINT_ORDER]   # Isaac joint j is s2r joint s2r_of[j]
    columns, start = [], 0
    for term, size in zip(contract.observation, contract.observation_sizes):
        block = s2r_of if term.name in ("joint_pos", "joint_vel", "last_action") else range(size)
        columns += [start + i for i in block]
        start += size
    columns = torch.tensor(columns)

    obs = TensorDict({"policy": torch.zeros(1, contract.obs_dim)}, batch_size=[1])
    model = MLPModel(obs, {"actor": ["policy"]}, "actor", contract.action.num_actions,
                     hidden_dims=list(cfg.model.actor_hidden), activation=cfg.model.activation, obs_normalization=True)
    ours = [m for m in policy.actor if isinstance(m, torch.nn.Linear)]
    theirs = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(ours, theirs)):
            weight, bias = a.weight, a.bias
            if i == 0:
                weight = weight[:, columns]
            if i == len(ours) - 1:
                weight, bias = weight[s2r_of], bias[s2r_of]
            b.weight.copy_(weight)
            b.bias.copy_(bias)
        normalizer = policy.actor_normalizer
        std = torch.sqrt(normalizer.var + normalizer.eps)[columns]
        model.obs_normalizer._mean.copy_(normalizer.mean[columns].unsqueeze(0))
        model.obs_normalizer._var.copy_((std ** 2).unsqueeze(0))
        model.obs_normalizer._std.copy_((std - model.obs_normalizer.eps).unsqueeze(0))

    onnx_model = model.as_onnx(verbose=False).to("cpu").eval()
    (out / "exported").mkdir(parents=True, exist_ok=True)
    torch.onnx.export(onnx_model, onnx_model.get_dummy_inputs(), str(out / "exported" / "policy.onnx"),
                      export_params=True, opset_version=18, input_names=onnx_model.input_names,
                      output_names=onnx_model.output_names)

    defaults = {".*L_hip_joint": 0.1, ".*R_hip_joint": -0.1, "F[L,R]_thigh_joint": 0.8, "R[L,R]_thigh_joint": 1.0,
                ".*_calf_joint": -1.5}   # Isaac Lab's UNITREE_GO2_CFG, as regexes
    observations = {"concatenate_terms": True, "enable_corruption": True}
    for term in contract.observation:
        observations[ISAAC_KEYS.get(term.name, term.name)] = {
            "func": TERM_FUNCS[term.name], "params": {"command_name": "base_velocity"} if term.name == "cmd_vel" else {},
            "modifiers": None, "noise": None, "clip": None, "scale": None if term.scale == 1.0 else term.scale,
            "history_length": 0, "flatten_history_dim": True}
    env = {
        "viewer": {"eye": (7.5, 7.5, 7.5)},
        "sim": {"dt": spec.control_period / 4, "render_interval": 4},
        "decimation": 4,
        "scene": {"num_envs": 4096, "robot": {"class_type": "isaaclab.assets.articulation.articulation:Articulation",
                                              "prim_path": "/World/envs/env_.*/Robot",
                                              "init_state": {"pos": (0.0, 0.0, 0.4), "joint_pos": defaults,
                                                             "joint_vel": {".*": 0.0}}}},
        "observations": {"policy": observations},
        "actions": {"joint_pos": {"class_type": f"{MDP}.actions.joint_actions:JointPositionAction",
                                  "asset_name": "robot", "joint_names": [".*"], "scale": contract.action.scale[0],
                                  "offset": 0.0, "preserve_order": False, "use_default_offset": True, "clip": None}},
    }
    (out / "params").mkdir(parents=True, exist_ok=True)
    (out / "params" / "env.yaml").write_text(yaml.dump(env, default_flow_style=False, sort_keys=False))
    (out / "params" / "agent.yaml").write_text(yaml.dump({"seed": cfg.seed, "clip_actions": contract.action.clip,
                                                          "experiment_name": "go2_flat"}, sort_keys=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("s2r_run")
    parser.add_argument("out")
    args = parser.parse_args()
    print(build_isaaclab_run(Path(args.s2r_run), Path(args.out)))


if __name__ == "__main__":
    main()
