"""The `s2r` command line: train, export, info, eval, bench, demo, deploy.

Every command that takes `--json` prints one JSON object as the last line of
stdout; tables and progress go elsewhere (tables before it, progress to stderr).
Heavy modules (torch, MuJoCo) are imported inside the commands that need them,
so `s2r info` works on a robot computer.

One meaning per option: `--robot SPEC` is always the robot's spec (a shipped robot's name or a
spec YAML), `--driver KIND[:WHERE]` always the driver that reaches it (`s2r.hardware.drivers`;
`sim:SIMROBOT.yaml` for a SimRobot that differs from its model). An option the chosen mode
would ignore is refused (exit status 2), and output piped into `head` ends quietly:

    s2r deploy runs/demo/cartpole.onnx --driver sim:hardware/configs/cartpole_hanging.yaml --duration 8
    s2r excite --robot arm --driver sim:hardware/configs/arm_perturbed.yaml --out arm.mcap
    s2r train push_t --policy diffusion --num-envs 8      # s2r train: --num-envs does not apply to --policy diffusion

Why one file of over 400 lines: each command's handler is a few lines that call one library
function, and `build_parser` is the CLI's whole surface in one place (what a user reads with
`--help`); splitting them would put a command's options away from the code that reads them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from s2r.apps.pictures import name_pictures
from s2r.contract import ContractError
from s2r.hardware.drivers import DriverError, help_text, parse_driver
from s2r.sim.emulate import add_arguments as emulate_arguments
from s2r.spec import SpecError


class UsageError(Exception):
    """An option that does not apply to the mode chosen; main() prints it as one line, exit status 2."""


def _refuse(args: argparse.Namespace, options: tuple[str, ...], mode: str) -> None:
    """UsageError for the first of `options` given on the command line (not None, not False)."""
    for option in options:
        if getattr(args, option.removeprefix("--").replace("-", "_")) not in (None, False):
            raise UsageError(f"{option} does not apply to {mode}")


def _driver(text: str) -> str:
    """argparse type of --driver: KIND[:WHERE], checked against the driver registry."""
    try:
        return str(parse_driver(text))
    except DriverError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--driver: ")) from None


def _emit(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        # JSON has no NaN: a metric with no data yet (no finished episode) is null.
        clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}
        print(json.dumps(clean, default=float))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


PPO_OPTIONS = ("--backend", "--device", "--nproc", "--num-envs", "--iterations", "--resume", "--randomize", "--robot",
               "--video-every")
"""`s2r train` options of reinforcement learning in simulation (--policy ppo)."""
DIFFUSION_OPTIONS = ("--dataset", "--epochs")
"""`s2r train` options of imitation (--policy diffusion)."""


def cmd_train(args: argparse.Namespace) -> None:
    _refuse(args, PPO_OPTIONS if args.policy == "diffusion" else DIFFUSION_OPTIONS, f"--policy {args.policy}")
    if args.algo != "ppo":
        _train_offpolicy(args)
        return
    if args.nproc is not None and args.nproc > 1:
        from s2r.policies.distributed import launch

        raise SystemExit(launch(args.nproc, _without_option(args.argv, "--nproc")))
    out = Path(args.out or f"runs/{args.task}")
    if args.policy == "diffusion":
        _train_diffusion(args, out)
        return
    if args.video_every:
        os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo's first import: the clips render off-screen
    from s2r.policies.runner import TrainingDivergedError
    from s2r.policies.train import default_config, train

    cfg = default_config(args.task, backend=args.backend or "cpu", device=args.device, num_envs=args.num_envs,
                         iterations=args.iterations, seed=args.seed, randomize=args.randomize, robot=args.robot,
                         video_every=args.video_every)
    try:
        metrics = train(cfg, out, resume=args.resume, progress=not args.json)
    except TrainingDivergedError as error:
        raise SystemExit(f"s2r train: training diverged: {error}") from None
    if os.environ.get("RANK", "0") != "0":
        return  # a torchrun rank other than 0: rank 0 reports
    _emit({"task": args.task, "out": str(out), **metrics}, args.json, f"trained {args.task} → {out}")
    name_pictures("s2r train", out)


def _train_offpolicy(args: argparse.Namespace) -> None:
    """`s2r train TASK --algo td3|sac`: off-policy training to the task's success rule."""
    if args.policy != "ppo":
        raise UsageError(f"--algo {args.algo} does not apply to --policy {args.policy}")
    _refuse(args, tuple(o for o in PPO_OPTIONS if o != "--num-envs"), f"--algo {args.algo}")
    from s2r.policies.offpolicy.train import OffPolicyTrainConfig, train_offpolicy
    from s2r.policies.runner import TrainingDivergedError

    overrides = {k: v for k, v in (("num_envs", args.num_envs), ("seed", args.seed)) if v is not None}
    try:
        cfg = OffPolicyTrainConfig(task=args.task, algo=args.algo, **overrides)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = Path(args.out or f"runs/{args.task}_{args.algo}")
    try:
        metrics = train_offpolicy(cfg, out, progress=not args.json)
    except TrainingDivergedError as error:
        raise SystemExit(f"s2r train: training diverged: {error}") from None
    _emit({"task": args.task, "algo": args.algo, "out": str(out), **metrics}, args.json,
          f"trained {args.task} with {args.algo.upper()} → {out}")
    name_pictures("s2r train", out)


def _without_option(argv: list[str], name: str) -> list[str]:
    """`argv` less `name VALUE` or `name=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _train_diffusion(args: argparse.Namespace, out: Path) -> None:
    from s2r.policies.diffusion.config import DiffusionConfig
    from s2r.policies.diffusion.train import train_diffusion

    if not args.dataset:
        raise SystemExit("s2r train: --policy diffusion needs --dataset DATASET (record one with s2r demos)")
    cfg = DiffusionConfig(task=args.task, seed=args.seed or 0, **({"epochs": args.epochs} if args.epochs else {}))
    metrics = train_diffusion(cfg, Path(args.dataset), out, progress=not args.json)
    _emit({"task": args.task, "out": str(out), **metrics}, args.json, f"trained a diffusion policy for {args.task} → {out}")
    name_pictures("s2r train", out)


def cmd_finetune(args: argparse.Namespace) -> None:
    from s2r.policies.finetune import FinetuneConfig, finetune
    from s2r.policies.runner import TrainingDivergedError

    options = (("num_envs", args.num_envs), ("control_ticks", args.control_ticks), ("max_cpu_s", args.max_cpu_s),
               ("eval_episodes", args.eval_episodes), ("seed", args.seed), ("reward", args.reward))
    cfg = FinetuneConfig(method=args.method, task=args.task, **{k: v for k, v in options if v is not None})
    out = Path(args.out or f"{args.source.rstrip('/')}_{args.method}")
    try:
        metrics = finetune(cfg, Path(args.source), out, resume=args.resume, progress=not args.json)
    except TrainingDivergedError as error:
        raise SystemExit(f"s2r finetune: training diverged: {error}") from None
    _emit({"out": str(out), **metrics}, args.json, f"fine-tuned {args.source} with {args.method} → {out}")


def cmd_import(args: argparse.Namespace) -> None:
    from s2r.contract import ContractError
    from s2r.policies.import_isaaclab import import_isaaclab
    from s2r.spec import robot_spec

    try:
        contract = import_isaaclab(Path(args.run_dir), robot_spec(args.robot),
                                   [n.strip() for n in args.joint_order.split(",")], Path(args.out))
    except ContractError as error:
        print(f"s2r import: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.out} (robot {contract.robot}, terms {', '.join(t.name for t in contract.observation)}, "
          f"Isaac Lab's joint order mapped onto the spec's)")


def cmd_export(args: argparse.Namespace) -> None:
    from s2r.policies.diffusion.export import export_diffusion
    from s2r.policies.diffusion.train import is_diffusion_run
    from s2r.policies.export import export_onnx
    from s2r.policies.train import load_policy

    if is_diffusion_run(Path(args.run_dir)):
        path = export_diffusion(Path(args.run_dir), Path(args.out))
        print(f"wrote {path} (diffusion policy)")
        return
    policy, contract, _ = load_policy(Path(args.run_dir))
    path = export_onnx(policy, contract, Path(args.out))
    print(f"wrote {path} (robot {contract.robot}, obs {contract.obs_dim}×{contract.history_length}, "
          f"{contract.action.num_actions} {contract.action.mode} actions)")


def cmd_info(args: argparse.Namespace) -> None:
    from s2r.runtime.load import check_policy_file

    contract = check_policy_file(Path(args.file))
    if args.json:
        print(json.dumps(contract.to_dict()))
    else:
        print(contract.to_json())


def cmd_eval(args: argparse.Namespace) -> None:
    if args.worlds is not None and not args.video:
        raise UsageError("--worlds applies to --video only")
    os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo's first import: the video renders off-screen
    from s2r.policies.evaluate import evaluate

    sampler = {k: v for k, v in (("warm_start", args.warm_start), ("action_horizon", args.action_horizon),
                                 ("blend_steps", args.blend_steps), ("sampling_ticks", args.sampling_ticks))
               if v is not None}
    result = evaluate(Path(args.source), task=args.task, episodes=args.episodes, seed=args.seed, backend=args.backend,
                      randomize=args.randomize, video=Path(args.video) if args.video else None,
                      video_worlds=args.worlds or 4, **sampler)
    _emit(result, args.json, f"evaluation of {args.source}")
    name_pictures("s2r eval", [result.get("video"), result.get("video_still")])


BENCH_OPTIONS = {"sim": ("--task", "--num-envs", "--backend"), "train": ("--task",),
                 "loop": ("--rate", "--rt-priority"),
                 "deploy": ("--policy", "--driver", "--duration", "--rt-priority"), "can_bus": ("--ticks",)}
"""The options each benchmark takes."""


def cmd_bench(args: argparse.Namespace) -> None:
    _refuse(args, tuple({o for options in BENCH_OPTIONS.values() for o in options} - set(BENCH_OPTIONS[args.what])),
            f"bench {args.what}")
    if args.what == "sim" and args.backend == "warp":
        result = _bench_module("gpu_sim").run(task=args.task or "cartpole", num_envs=args.num_envs or 4096)
    elif args.what == "sim":
        result = _bench_module("sim").run(task=args.task or "cartpole", num_envs=args.num_envs or 1024)
    elif args.what == "train":
        result = _bench_module("train").run(task=args.task or "cartpole")
    elif args.what == "deploy":
        if not args.policy:
            raise UsageError("bench deploy: --policy FILE.onnx is required (a cartpole or pendulum policy)")
        bench = _bench_module("deploy")
        result = bench.run(args.policy, driver=args.driver or bench.DEFAULT_DRIVER, duration=args.duration or 10.0,
                           rt_priority=50 if args.rt_priority is None else args.rt_priority)
    elif args.what == "can_bus":
        result = _bench_module("can_bus").run(ticks=args.ticks or 300)
    else:
        result = _bench_module("loop").run(rate=args.rate or 500.0,
                                           rt_priority=50 if args.rt_priority is None else args.rt_priority)
    _emit(result, args.json, f"s2r bench {args.what}")
    name_pictures(f"s2r bench {args.what}", result)


def _bench_module(name: str) -> Any:
    """bench.NAME from the source checkout s2r runs from: bench/ is not installed with s2r."""
    import importlib

    import s2r

    root = Path(s2r.__file__).resolve().parent.parent
    if not (root / "bench" / "__init__.py").is_file():
        raise SystemExit(f"s2r bench: the benchmarks are in the source checkout's bench/, and this s2r is installed "
                         f"from {root}, which has none: run it from a clone (pip install -e .)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"bench.{name}")


def cmd_deploy(args: argparse.Namespace) -> None:
    if args.port is not None and args.view != "web":
        raise UsageError("--port applies to --view web only")
    os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo's first import: the web view renders off-screen
    from s2r.apps.deploy import DeployError, deploy

    try:
        result = deploy(args.file, robot=args.robot, driver=args.driver, duration=args.duration, record=args.record,
                        out_dir=args.out, rt_priority=args.rt_priority, domain_id=args.domain_id, split=args.split,
                        foxglove=args.foxglove, view=args.view, view_port=args.port or 8080, announce=lambda line: print(f"s2r deploy: {line}", file=sys.stderr, flush=True))
    except DeployError as error:
        raise SystemExit(f"s2r deploy: {error}") from None
    _emit(result, args.json, f"deploy {args.file} on {args.driver}")


def cmd_emulate(args: argparse.Namespace) -> None:
    from s2r.sim.emulate import run

    run(args)


def cmd_excite(args: argparse.Namespace) -> None:
    from s2r.calibration.excitation import excite

    result = excite(robot=args.robot, driver=args.driver, duration_s=args.duration, rate_hz=args.rate, seed=args.seed,
                    joints=args.joints.split(",") if args.joints else None, realtime=args.realtime, out=args.out)
    _emit(result, args.json, f"excitation → {args.out}")


def cmd_sysid(args: argparse.Namespace) -> None:
    from s2r.calibration.sysid import format_result, identify, parse_bounds
    from s2r.spec import robot_spec

    spec = robot_spec(args.robot)
    out = Path(args.out) if args.out else Path(args.file).with_name(f"{spec.name}_calibrated.yaml")
    result = identify(Path(args.file), spec, args.params.split(","), out=out, bounds=parse_bounds(args.bound),
                      max_iters=args.max_iters)
    print(json.dumps(result.to_dict()) if args.json else format_result(result))
    name_pictures("s2r sysid", result.to_dict())


def cmd_demos(args: argparse.Namespace) -> None:
    from s2r.sim.demos import record_demos

    result = record_demos(args.task, expert=args.expert, episodes=args.episodes, out=Path(args.out), image=args.image,
                          seed=args.seed, successful_only=args.successful_only, action_noise=args.action_noise,
                          hold_s=args.hold, plan_horizon=args.plan_horizon, progress=not args.json)
    _emit(result, args.json, f"{args.expert} demonstrations of {args.task} → {args.out}")


def cmd_dataset(args: argparse.Namespace) -> None:
    from s2r.dataset import check_dataset, dataset_info

    root = Path(args.dataset)
    _refuse(args, ("--episode", "--save") if args.action != "view" else ("--task", "--json"), f"dataset {args.action}")
    if args.action == "view":
        from s2r.apps.view_dataset import view_dataset

        shown = view_dataset(root, episode=args.episode or 0, save=Path(args.save) if args.save else None)
        name_pictures("s2r dataset view", shown["saved"])
        return
    if args.action == "info":
        report = dataset_info(root)
    elif args.task:
        from s2r.sim.task_dataset import task_expectation

        report = check_dataset(root, expect=task_expectation(args.task))
    else:
        report = check_dataset(root)
    print(json.dumps(report.to_dict()) if args.json else report.format())


def cmd_teleop(args: argparse.Namespace) -> None:
    if args.leader or args.follower:
        cmd_leader_follower(args)
        return
    if args.cmd_vel:
        _refuse(args, ("task", "--duration", "--record", "--robot", "--out", "--port"),
                "teleop through cmd_vel (--cmd-vel)")
        if args.device not in ("keyboard", "gamepad"):
            raise UsageError("--cmd-vel needs --device keyboard or --device gamepad")
        from s2r.apps.teleop_cmd_vel import publish_cmd_vel
        from s2r.ros import resolve_domain_id

        try:
            domain_id = resolve_domain_id(args.domain_id)
        except ValueError as error:
            raise UsageError(str(error)) from None
        raise SystemExit(publish_cmd_vel(args.device, linear_speed=args.linear_speed, angular_speed=args.angular_speed,
                                         rate_hz=args.rate_hz, domain_id=domain_id))
    _refuse(args, ("--duration", "--record", "--robot", "--domain-id"),
            "teleop of a simulated task (--leader/--follower: arms)")
    if args.task is None or args.device is None:
        raise UsageError("give a task and --device (simulation), or --leader KIND:PORT --follower KIND:PORT (arms)")
    if args.port is not None and args.view != "web":
        raise UsageError("--port applies to --view web only")
    os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo's first import: the web view renders off-screen
    from s2r.apps.teleop import run_teleop
    from s2r.hardware.teleop import DeviceUnavailable, open_device

    try:
        with open_device(args.device) as device:
            result = run_teleop(args.task, device, out=Path(args.out) if args.out else None,
                                episodes=args.episodes, progress=not args.json, view=args.view,
                                **({"port": args.port} if args.port is not None else {}))
    except DeviceUnavailable as error:
        print(f"s2r teleop: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    _emit(result, args.json, f"teleoperated {args.task} with {args.device}")


def cmd_leader_follower(args: argparse.Namespace) -> None:
    from s2r.hardware.teleop.leader_follower import teleoperate
    from s2r.interface import RobotError
    from s2r.spec import robot_spec

    if not (args.leader and args.follower):
        raise UsageError("leader-follower teleop needs both --leader KIND:PORT and --follower KIND:PORT")
    _refuse(args, ("task", "--device", "--out", "--cmd-vel", "--domain-id"),
            "leader-follower teleop (--record DIR records it)")
    try:
        result = teleoperate(args.leader, args.follower, robot_spec(args.robot or "so101"),
                             duration_s=args.duration or 60.0, record=Path(args.record) if args.record else None)
    except RobotError as error:
        print(f"s2r teleop: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    _emit(result, args.json, f"{args.follower} following {args.leader}")


def cmd_calibrate_camera(args: argparse.Namespace) -> None:
    from s2r.calibration.camera import run_calibrate_camera

    result = run_calibrate_camera(Path(args.images_dir), args.board, args.rows, args.cols, args.square, Path(args.out),
                                  hand_eye=Path(args.hand_eye) if args.hand_eye else None, mode=args.mode,
                                  marker=args.marker, dictionary=args.dictionary)
    _emit(result, args.json, f"camera calibration → {args.out}")
    name_pictures("s2r calibrate-camera", result)


def cmd_calibrate_motors(args: argparse.Namespace) -> None:
    from s2r.calibration.motors import CalibrationAborted, TerminalOperator, run_calibrate_motors
    from s2r.interface import RobotError
    from s2r.spec import robot_spec

    if (args.driver is None) == (args.from_lerobot is None):
        raise UsageError("give --driver KIND:PORT (calibrate the arm) or --from-lerobot FILE.json (convert), one of them")
    if args.from_lerobot:
        _refuse(args, ("--yes",), "--from-lerobot")
    try:
        result = run_calibrate_motors(args.driver, robot_spec(args.robot), Path(args.out),
                                      operator=TerminalOperator(yes=args.yes, record_s=args.record_s),
                                      lerobot=Path(args.from_lerobot) if args.from_lerobot else None)
    except (RobotError, CalibrationAborted) as error:
        print(f"s2r calibrate-motors: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    _emit({"robot": result["robot"], "out": result["out"], "reversed": ", ".join(result["reversed"]) or "none",
           **{f"{name} range": entry["range"] for name, entry in result["joints"].items()}}
          if not args.json else result, args.json, f"motor calibration → {args.out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from s2r.apps.demo import run_demo

    run_demo(Path(args.out), iterations=args.iterations)


BACKENDS = ("cpu", "warp")  # sim.env.BACKENDS, without importing the simulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2r", description="Sim-to-real control stack: train, export, evaluate, deploy.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a task with PPO on the batched simulator")
    p.add_argument("task", help="pendulum, cartpole or reach")
    p.add_argument("--backend", choices=BACKENDS,
                   help="ppo: simulation backend, cpu (MuJoCo, the default) or warp (MuJoCo Warp on an NVIDIA GPU)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="ppo: where the networks train (default cpu)")
    p.add_argument("--nproc", type=int,
                   help="ppo: data-parallel ranks on this machine (torchrun; one per GPU, else per CPU core; "
                        "default 1)")
    p.add_argument("--num-envs", type=int, help="ppo: parallel worlds (task default if omitted)")
    p.add_argument("--iterations", type=int, help="ppo: PPO iterations (task default if omitted)")
    p.add_argument("--seed", type=int, help="seed (0 if omitted)")
    p.add_argument("--out", help="run directory (default runs/TASK)")
    p.add_argument("--resume", action="store_true", help="ppo: continue from OUT/checkpoint.pt")
    p.add_argument("--video-every", type=int, metavar="N",
                   help="ppo: a clip of the policy every N iterations (OUT/videos/, TensorBoard's images)")
    p.add_argument("--randomize", nargs="?", const="default", metavar="FILE.yaml",
                   help="ppo: domain randomization, the task's default terms or a randomization YAML")
    p.add_argument("--robot", metavar="SPEC",
                   help="ppo: train on this spec of the task's robot, a name or YAML (e.g. from s2r sysid)")
    p.add_argument("--algo", default="ppo", choices=["ppo", "td3", "sac"],
                   help="ppo (on-policy, the default); td3 or sac: off-policy, to the task's success rule "
                        "(pendulum, quadrotor_hover)")
    p.add_argument("--policy", default="ppo", choices=["ppo", "diffusion"],
                   help="ppo: reinforcement learning in simulation; diffusion: imitation of a dataset")
    p.add_argument("--dataset", help="diffusion: the LeRobot v3 dataset to imitate (from s2r demos or s2r teleop)")
    p.add_argument("--epochs", type=int, help="diffusion: passes over the dataset")
    p.add_argument("--json", action="store_true", help="print metrics as one JSON line")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a diffusion policy run with RL in simulation (DPPO or DSRL)")
    p.add_argument("task")
    p.add_argument("--method", required=True, choices=["dppo", "dsrl"],
                   help="dppo: PPO on the denoising chain; dsrl: SAC choosing the frozen denoiser's initial noise")
    p.add_argument("--from", dest="source", required=True, metavar="RUN_DIR",
                   help="the diffusion run directory (s2r train TASK --policy diffusion)")
    p.add_argument("--out", help="run directory (default RUN_DIR_METHOD); OUT/policy.onnx is the fine-tuned policy")
    p.add_argument("--num-envs", type=int)
    p.add_argument("--control-ticks", type=int, help="budget: control ticks of all worlds (default 600,000)")
    p.add_argument("--max-cpu-s", type=float, help="budget: process CPU seconds (default 1800)")
    p.add_argument("--eval-episodes", type=int, help="episodes of the final evaluation (default 100; 0: none)")
    p.add_argument("--reward", choices=["success", "task"],
                   help="success (default): the fraction of ticks the task's success condition holds; "
                        "task: the task's shaped reward")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue from OUT/finetune.pt")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_finetune)

    p = sub.add_parser("export", help="export a run's policy to ONNX with its contract")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("import", help="an Isaac Lab rsl_rl run's exported policy as an s2r policy (docs/locomotion.md)")
    p.add_argument("source", choices=["isaaclab"])
    p.add_argument("run_dir", help="the run directory: exported/policy.onnx, params/env.yaml (params/agent.yaml)")
    p.add_argument("--robot", required=True, help="the s2r robot spec the policy drives, a name or YAML")
    p.add_argument("--joint-order", required=True,
                   help="Isaac Lab's joint names in its articulation order, comma-separated (env.yaml does not hold it)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("info", help="print the contract stored in an ONNX policy")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("eval", help="evaluate an ONNX file or a run directory in simulation")
    p.add_argument("source", help="FILE.onnx or a run directory")
    p.add_argument("--task", help="task (default: the one the policy was trained on)")
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", default="cpu", choices=BACKENDS)
    p.add_argument("--warm-start", action=argparse.BooleanOptionalAction,
                   help="diffusion: sample each chunk from the previous one (default: off, as policy_node)")
    p.add_argument("--blend-steps", type=int, metavar="N",
                   help="diffusion: ticks over which a new chunk is cross-faded in (default: policy_node's, 3)")
    p.add_argument("--sampling-ticks", type=int, metavar="N",
                   help="diffusion: ticks a chunk takes to arrive after its observation (default 0)")
    p.add_argument("--action-horizon", type=int, metavar="N",
                   help="diffusion: actions executed per chunk (default: the trained one, 8)")
    p.add_argument("--randomize", nargs="?", const="default", metavar="FILE.yaml",
                   help="evaluate on perturbed worlds: the task's randomization, or a YAML (e.g. a perturbed robot)")
    p.add_argument("--video", metavar="FILE.mp4",
                   help="film the first worlds off-screen into one tiled MP4 (task, time, command or goal, success)")
    p.add_argument("--worlds", type=int, metavar="K", help="--video: worlds to film (default 4)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("bench", help="benchmarks against peers, measured in one run (from a source checkout)")
    p.add_argument("what", choices=list(BENCH_OPTIONS))
    p.add_argument("--task", help="sim, train: the task (default cartpole)")
    p.add_argument("--num-envs", type=int, help="sim: worlds (default 1024 on cpu, 4096 on warp)")
    p.add_argument("--backend", choices=BACKENDS, help="sim: the backend to measure (default cpu)")
    p.add_argument("--rate", type=float, help="loop: rate in Hz (default 500)")
    p.add_argument("--ticks", type=int, help="can_bus: ticks per round and mode (default 300)")
    p.add_argument("--policy", help="deploy: the exported policy to deploy (cartpole or pendulum)")
    p.add_argument("--driver", type=_driver, metavar="KIND[:WHERE]",
                   help="deploy: the robot (default: sim with hardware/configs/cartpole_hanging_no_latency.yaml)")
    p.add_argument("--duration", type=float, help="deploy: seconds of control per run (default 10)")
    p.add_argument("--rt-priority", type=int,
                   help="loop, deploy: SCHED_FIFO priority where permitted; 0: normal scheduling (default 50)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("deploy", help="run an ONNX policy in the robot's real-time loop, ROS 2 around it, and report")
    p.add_argument("file", help="the exported FILE.onnx")
    p.add_argument("--robot", metavar="SPEC", help="the robot's spec, a name or YAML (default: the policy's robot)")
    p.add_argument("--driver", default="sim", type=_driver, metavar="KIND[:WHERE]",
                   help=f"the robot's driver (default sim): {help_text()}")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of control after the first command")
    p.add_argument("--record", help="write every topic to this MCAP file")
    p.add_argument("--out", help="directory for the nodes' logs and summaries (default: a temporary one)")
    p.add_argument("--rt-priority", type=int, default=50,
                   help="SCHED_FIFO priority of the control threads where permitted; 0: normal scheduling")
    p.add_argument("--domain-id", metavar="N|random",
                   help="ROS domain to join (default: $ROS_DOMAIN_ID if set, else 0); random: a random one")
    p.add_argument("--split", action="store_true",
                   help="run the policy in its own process (policy_node), state and command over DDS")
    p.add_argument("--view", default="auto", choices=["auto", "viewer", "web", "none"],
                   help="live view of the robot following its joint_states: MuJoCo's viewer (auto, the default: "
                        "where there is a display), web: a page on localhost, none")
    p.add_argument("--port", type=int, help="--view web: the page's port (default 8080)")
    p.add_argument("--foxglove", type=int, nargs="?", const=8765, metavar="PORT",
                   help="serve state, commands, safety events and diagnostics live to Foxglove on ws://127.0.0.1:PORT "
                        "(default 8765; layout: docs/foxglove/s2r_layout.json)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_deploy)

    p = sub.add_parser("excite", help="drive a robot with a safe multisine and record commands and states (MCAP)")
    p.add_argument("--robot", required=True, metavar="SPEC", help="the robot's spec, a name (arm) or YAML")
    p.add_argument("--driver", default="sim", type=_driver, metavar="KIND[:WHERE]",
                   help=f"the robot's driver (default sim): {help_text()}")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of excitation, after a 1 s soft start")
    p.add_argument("--rate", type=float, help="command rate in Hz (default: 1 / the spec's control period)")
    p.add_argument("--joints", help="comma-separated joints to excite (default: every position-controlled joint)")
    p.add_argument("--seed", type=int, default=0, help="seed of the multisine's phases")
    p.add_argument("--realtime", action="store_true", help="sim: step in real time (default: as fast as it computes)")
    p.add_argument("--out", required=True, help="the .mcap file to write")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_excite)

    p = sub.add_parser("sysid", help="identify a robot's model parameters from an MCAP recording (mujoco.sysid)")
    p.add_argument("file", help="the FILE.mcap recording (from s2r excite or s2r deploy --record)")
    p.add_argument("--robot", required=True, metavar="SPEC", help="the recorded robot's spec, a name (arm) or YAML")
    p.add_argument("--params", default="damping,armature,frictionloss,command_delay_s",
                   help="comma-separated kinds to fit: damping, armature, frictionloss, kp, kd, command_delay_s")
    p.add_argument("--bound", action="append", metavar="NAME=LO:HI",
                   help="bounds of a kind or parameter, e.g. damping=0:3 or kp.elbow=20:60 (repeatable)")
    p.add_argument("--max-iters", type=int, default=50, help="least-squares iterations at most")
    p.add_argument("--out", help="calibrated spec YAML to write (default: ROBOT_calibrated.yaml beside FILE); "
                                 "its MJCF, randomization YAML, fit figure and result JSON go beside it")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(fn=cmd_sysid)

    p = sub.add_parser("demos", help="record expert demonstrations of a task in simulation into a LeRobot v3 dataset")
    p.add_argument("task", help="push_t")
    p.add_argument("--expert", default="scripted", choices=["scripted"], help="who demonstrates")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--out", required=True, help="dataset directory (appended to when it holds a dataset)")
    p.add_argument("--image", action="store_true", help="also record the top camera, 96×96 (MUJOCO_GL=egl)")
    p.add_argument("--successful-only", action="store_true", help="leave failed episodes out; run until N succeed")
    p.add_argument("--action-noise", type=float, default=0.0,
                   help="std of gaussian noise (raw action units) added to the executed actions while the clean "
                        "expert action is recorded (DART): the demos also show recoveries")
    p.add_argument("--hold", type=float, default=2.0, metavar="S",
                   help="seconds the task's success must hold before an episode ends (the expert finishes and rests)")
    p.add_argument("--plan-horizon", type=int, default=0, metavar="H",
                   help="also record the expert's noise-free next H actions from every frame (action.plan), "
                        "rolled out in a copy of the simulator; diffusion training uses them as action chunks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(fn=cmd_demos)

    p = sub.add_parser("dataset", help="inspect, validate or view a LeRobot v3 dataset")
    p.add_argument("action", choices=["info", "check", "view"],
                   help="info: episodes, frames, fps and stats from meta/; check: validate every frame and video; "
                        "view: one episode in rerun (camera frames, state and action plots on one time line)")
    p.add_argument("dataset", help="the dataset directory")
    p.add_argument("--task", help="check: also check robot, observation and action sizes against this task")
    p.add_argument("--episode", type=int, help="view: the episode to show (default 0)")
    p.add_argument("--save", metavar="FILE.rrd", help="view: write a rerun recording instead of opening the viewer "
                                                      "(headless machines; open it with `rerun FILE.rrd`)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.set_defaults(fn=cmd_dataset)

    p = sub.add_parser("emulate", help="serve a robot's motors on an emulated bus (a pty) moving its MuJoCo model; "
                                       "prints the port, takes fault switches on stdin (docs/drivers.md)")
    emulate_arguments(p)
    p.set_defaults(fn=cmd_emulate)

    p = sub.add_parser("teleop", help="teleoperate a task in simulation with a device, recording a LeRobot v3 dataset")
    p.add_argument("task", nargs="?", choices=["push_t", "reach"], help="a simulated task (with --device)")
    p.add_argument("--device", choices=["keyboard", "gamepad", "spacemouse"])
    p.add_argument("--leader", type=_driver, help="leader-follower: the torque-free leader arm, KIND:PORT")
    p.add_argument("--follower", type=_driver, help="leader-follower: the arm that follows it, KIND:PORT "
                                                    "(through the safety filter, at the spec's control rate)")
    p.add_argument("--robot", help="leader-follower: both arms' spec (default so101)")
    p.add_argument("--duration", type=float, help="leader-follower: seconds to run (default 60)")
    p.add_argument("--record", metavar="DIR", help="leader-follower: record a LeRobot v3 dataset with the frames' "
                                                   "measurement times")
    p.add_argument("--out", help="dataset directory to record into (appended to if it holds one); none: no recording")
    p.add_argument("--episodes", type=int, default=1, help="episodes to record; discarded ones do not count")
    p.add_argument("--view", default="auto", choices=["auto", "viewer", "web", "none"],
                   help="live view: MuJoCo's viewer (auto: where there is a display), web: a page on localhost "
                        "streaming the scene (remote machines), none")
    p.add_argument("--port", type=int, help="--view web: the page's port (default 8080)")
    p.add_argument("--cmd-vel", action="store_true", help="publish the device's command as geometry_msgs/Twist on "
                                                          "cmd_vel for a deployed robot (a go2 policy), until Esc")
    p.add_argument("--linear-speed", type=float, default=0.5, help="--cmd-vel: m/s at full deflection")
    p.add_argument("--angular-speed", type=float, default=1.0, help="--cmd-vel: rad/s at full deflection")
    p.add_argument("--rate-hz", type=float, default=20.0, help="--cmd-vel: Twists per second")
    p.add_argument("--domain-id", metavar="N|random",
                   help="--cmd-vel: ROS domain to join (default: $ROS_DOMAIN_ID if set, else 0), as s2r deploy's")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(fn=cmd_teleop)

    p = sub.add_parser("calibrate-camera", help="camera intrinsics and distortion (and hand-eye) from images of a board")
    p.add_argument("images_dir", help="folder of board images (.png, .jpg, .jpeg, .bmp, .tif)")
    p.add_argument("--board", required=True, choices=["charuco", "checkerboard"])
    p.add_argument("--rows", type=int, required=True, help="squares down the board (not inner corners)")
    p.add_argument("--cols", type=int, required=True, help="squares across the board (not inner corners)")
    p.add_argument("--square", type=float, required=True, help="square side in metres, measured on the print")
    p.add_argument("--marker", type=float, help="ChArUco marker side in metres (default 0.75 × square)")
    p.add_argument("--dictionary", default="DICT_4X4_50", help="ChArUco marker dictionary")
    p.add_argument("--out", default="camera.yaml", help="calibration file to write (default camera.yaml)")
    p.add_argument("--hand-eye", metavar="POSES.yaml", help="gripper pose of each image: also solve the camera's mount")
    p.add_argument("--mode", default="eye_in_hand", choices=["eye_in_hand", "eye_to_hand"],
                   help="with --hand-eye: camera on the gripper, or fixed")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(fn=cmd_calibrate_camera)

    p = sub.add_parser("calibrate-motors", help="calibrate a bus robot's motors (home, direction, range) or convert "
                                                "LeRobot's calibration JSON, writing the calibration YAML")
    p.add_argument("--robot", required=True, help="the robot's spec: a shipped robot's name or a spec YAML")
    p.add_argument("--driver", type=_driver, help=f"the bus, KIND:PORT[@BAUD] ({help_text()})")
    p.add_argument("--from-lerobot", metavar="FILE.json", help="convert LeRobot's SO-100/SO-101 calibration instead")
    p.add_argument("--out", required=True, help="calibration YAML to write (then --driver KIND:PORT,calibration=OUT)")
    p.add_argument("--yes", action="store_true", help="scripted: never wait for Enter (motion steps still wait for motion)")
    p.add_argument("--record-s", type=float, default=10.0, help="with --yes: seconds the range step records")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(fn=cmd_calibrate_motors)

    p = sub.add_parser("demo", help="train cartpole, export, evaluate the ONNX file and report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--iterations", type=int, help="PPO iterations (task default if omitted)")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args.fn(args)
        sys.stdout.flush()
    except UsageError as error:
        print(f"s2r {args.command}: {error}", file=sys.stderr)
        return 2
    except (SpecError, ContractError, ValueError, FileNotFoundError) as error:
        print(f"s2r {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader closed stdout (`s2r info FILE | head -1`). As the Python docs advise: point
        # stdout at devnull, so that the flush at exit does not fail again, and exit with 1.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
