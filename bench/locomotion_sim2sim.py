"""Sim-to-sim of an exported go2_flat policy: the `cpu` env, the `warp` env, and SimRobot with hidden offsets.

The same ONNX file drives each one, with tracking error and falls reported the same way:

- `cpu` / `warp`: the training env (`make_env("go2_flat")` on that backend; warp here is Warp's CPU
  device, so few worlds and short episodes), one episode per world of random commands within the
  trained ranges, the walking rule's figures (`bench.locomotion_train.evaluate_walking`'s definitions).
- SimRobot: the robot side's own path — `load_runtime` on the ONNX file, the SafetyFilter (soft
  start, limits, orientation limit), SimRobot's motor drivers and latencies — stepped synchronously
  (no thread: simulation time, exact), with `hardware/configs/go2_offsets.yaml` (2 kg heavier base,
  friction 0.5, 10 ms command and 5 ms sensor latency, encoder noise) or without. Each episode
  starts lying on its belly (`go2_lying.yaml`'s pose), stands up through the soft start, then
  tracks one random command; the error is measured from the policy's first full command on (the
  fade-in's end) against the base's true velocity; a fall is the orientation limit tripping.

    PYTHONPATH=. python -m bench.locomotion_sim2sim --policy go2.onnx [--episodes 16] [--warp-worlds 1 --warp-seconds 1]
    PYTHONPATH=. python -m bench.locomotion_sim2sim --policy go2.onnx --rows cpu_as_warp warp \
        --warp-worlds 16 --warp-seconds 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from s2r.hardware.safety import SafetyFilter
from s2r.runtime.load import load_runtime
from s2r.sim.env import make_env
from s2r.sim.floating_base import rotate_inverse
from s2r.sim.sim_robot import SimRobot, load_sim_robot_config
from s2r.spec import robot_spec

CONFIGS = Path(__file__).resolve().parent.parent / "hardware" / "configs"
RULE = {"lin_vel_error": 0.2, "yaw_rate_error": 0.3, "fall_rate": 0.05}
"""The walking rule (docs/locomotion.md)."""
ROWS = {"cpu": "cpu (MuJoCo batch)", "simrobot": "SimRobot, nominal, from lying",
        "offsets": "SimRobot, hidden offsets, from lying", "warp": "warp (Warp CPU device)",
        "cpu_as_warp": "cpu, the warp row's worlds and seconds"}
"""Each row's key (`--rows`) and name."""


def in_env(policy: Path, backend: str, worlds: int, seconds: float, seed: int = 1) -> dict:
    """Tracking errors and falls of `policy` in the go2_flat env on `backend`: each world's first episode,
    cut at `seconds` (its figures so far) unless it ended before (a fall, or the time-out)."""
    session = ort.InferenceSession(str(policy))
    env = make_env("go2_flat", worlds, seed=seed, backend=backend)
    obs = env.reset(seed=seed)
    first = {k: np.full(worlds, np.nan) for k in ("lin_vel_error", "yaw_rate_error", "fell")}
    with torch.no_grad():
        for _ in range(round(seconds / env.spec.control_period)):
            action = session.run(None, {"obs": obs["policy"].cpu().numpy().astype(np.float32)})[0]
            obs, _, terminated, truncated, info = env.step(torch.as_tensor(action))
            done = np.flatnonzero((terminated | truncated).cpu().numpy())
            for key in first:
                values = info["episode"][key].cpu().numpy()
                fresh = np.isnan(first[key][done])
                first[key][done[fresh]] = values[fresh]
    running = np.flatnonzero(np.isnan(first["fell"]))
    if len(running):
        so_far = env.task.episode_metrics(env, running)
        for key in ("lin_vel_error", "yaw_rate_error"):
            first[key][running] = so_far[key]
        first["fell"][running] = 0.0
    env.close()
    return {"lin_vel_error": float(np.mean(first["lin_vel_error"])),
            "yaw_rate_error": float(np.mean(first["yaw_rate_error"])), "fall_rate": float(np.mean(first["fell"])),
            "episodes": worlds, "seconds": seconds}


def on_sim_robot(policy: Path, offsets: str | None, episodes: int, seconds: float, seed: int = 1) -> dict:
    """The robot side's loop on SimRobot, synchronously: stand up from lying, then track one random command."""
    spec = robot_spec("go2")
    rng = np.random.default_rng(seed)
    lying = load_sim_robot_config(CONFIGS / "go2_lying.yaml")
    lin_errors, yaw_errors, falls, heights = [], [], 0, []
    for episode in range(episodes):
        config = load_sim_robot_config(CONFIGS / offsets) if offsets else load_sim_robot_config(CONFIGS / "go2_lying.yaml")
        config.initial_q, config.initial_base = lying.initial_q, lying.initial_base
        config.realtime, config.seed = False, seed + episode
        command = rng.uniform(-1.0, 1.0, 3)
        if np.linalg.norm(command[:2]) < 0.2:
            command[:2] = 0.0
        runtime = load_runtime(policy, spec)
        safety = SafetyFilter(spec, spec.control_period)
        robot = SimRobot(spec, config)
        robot.connect()
        robot.step(200)  # lying, motors off: it settles
        robot.enable()
        safety.reset()
        decimation = round(spec.control_period / robot.timestep)
        lin, yaw = [], []
        for _ in range(round(seconds / spec.control_period)):
            state = robot.read_state()
            robot.write_command(safety.filter(runtime.step(state, {"cmd_vel": command}), state, state.stamp))
            robot.step(decimation)
            if safety.mode == "running":
                measured = robot.read_state()
                v_b = rotate_inverse(measured.base_quat, measured.base_lin_vel_w)
                lin.append(np.linalg.norm(command[:2] - v_b[:2]))
                yaw.append(abs(command[2] - measured.base_ang_vel[2]))
            if safety.fault is not None:
                break
        heights.append(float(robot.read_state().base_pos_w[2]))
        falls += safety.fault is not None
        lin_errors.append(np.mean(lin) if lin else np.nan)
        yaw_errors.append(np.mean(yaw) if yaw else np.nan)
        robot.close()
        runtime.close()
    return {"lin_vel_error": float(np.nanmean(lin_errors)), "yaw_rate_error": float(np.nanmean(yaw_errors)),
            "fall_rate": falls / episodes, "episodes": episodes, "seconds": seconds,
            "final_height_m": float(np.mean(heights))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="an exported go2_flat ONNX policy")
    parser.add_argument("--episodes", type=int, default=16, help="cpu worlds and SimRobot episodes")
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds per episode (cpu, SimRobot)")
    parser.add_argument("--warp-worlds", type=int, default=0,
                        help="warp worlds (0: none; Warp's CPU device is slow: kernels take minutes to build "
                             "the first time, then a step of 2 worlds takes 0.3-1 s here)")
    parser.add_argument("--warp-seconds", type=float, default=4.0)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS),
                        help="rows to run; warp and cpu_as_warp (the same worlds, seed and seconds) need --warp-worlds")
    parser.add_argument("--out", default="bench/results/locomotion_sim2sim.json")
    args = parser.parse_args()
    policy = Path(args.policy)
    rows = {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = {"cpu": lambda: in_env(policy, "cpu", args.episodes, args.seconds),
            "simrobot": lambda: on_sim_robot(policy, None, args.episodes, args.seconds),
            "offsets": lambda: on_sim_robot(policy, "go2_offsets.yaml", args.episodes, args.seconds),
            "warp": lambda: in_env(policy, "warp", args.warp_worlds, args.warp_seconds),
            "cpu_as_warp": lambda: in_env(policy, "cpu", args.warp_worlds, args.warp_seconds)}
    for key in args.rows:
        if key in ("warp", "cpu_as_warp") and not args.warp_worlds:
            continue
        name = ROWS[key]
        start = time.perf_counter()
        rows[name] = {**runs[key](), "wall_s": time.perf_counter() - start}
        rows[name]["within_rule"] = all(rows[name][k] < v for k, v in RULE.items())
        print(f"{name:40s} {rows[name]['lin_vel_error']:.3f} m/s  {rows[name]['yaw_rate_error']:.3f} rad/s  "
              f"{100 * rows[name]['fall_rate']:.0f} % falls  ({rows[name]['episodes']} × {rows[name]['seconds']:g} s)",
              flush=True)
        out.write_text(json.dumps({"policy": str(policy), "rows": rows}, indent=1))   # after each row


if __name__ == "__main__":
    main()
