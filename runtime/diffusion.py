"""DiffusionRuntime: an exported diffusion policy's sampler, with onnxruntime and a numpy DDIM loop (no torch).

It loads the ONNX file, checks its contract (kind "diffusion") against the robot, keeps the
last `obs_horizon` observations of each world, and samples chunks of `pred_horizon` raw
actions from them, each DDIM step one session run over every world that plans. Executing the
chunks (receding horizon, every `action_horizon` ticks, time-aligned and cross-faded) is
`s2r.runtime.chunking.ChunkedPolicy`'s, on the robot and in simulation alike (the timing
diagram is there and in `policies.diffusion.config`).

Chunks are raw actions; with relative actions (the default) the network predicts them relative to
the newest measured joint positions, normalized per chunk index, and `unnormalize` adds the
reference back (`ActionReference`).

A DSRL policy (contract `initial_noise: "policy"`) carries its noise policy in the same graph: a
chunk's sampling starts from the graph's `noise` output for the observation window instead of a
draw from N(0, I), and is then the same DDIM loop; its chunks never warm-start.

Warm start (`warm_start=True`): a world that has a previous chunk starts from it shifted by the
executed steps (its tail padded with the last action), noised to the level of the schedule's
last `warm_start_steps` DDIM steps, and runs only those steps; a world after a reset samples in
full. The DDIM update (η = 0) is that of `policies.diffusion.sampler`:

    x̂0 = clip((x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t, -1, 1);   x_prev = √ᾱ_prev x̂0 + √(1-ᾱ_prev) ε̂

    runtime = DiffusionRuntime("dp.onnx", spec=robot_spec("pusher"), num_envs=50)
    obs = runtime.observe(state, {"object_pose": pose})              # (50, To * D)
    chunk = runtime.unnormalize(runtime.sample(obs), obs)            # (50, Tp, A) raw actions
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2r.contract import ContractError
from s2r.observations import ObservationHistory
from s2r.runtime.batching import stacked_observation
from s2r.runtime.session import OBS_INPUT, contract_of, open_session
from s2r.spec import RobotSpec
from s2r.state import RobotState

SAMPLE_INPUT = "sample"
TIMESTEP_INPUT = "timestep"
EPS_OUTPUT = "eps"
NOISE_OUTPUT = "noise"
"""The graph output of a DSRL noise policy (contract initial_noise "policy"): a chunk's initial noise
(B, pred_horizon, A) from the observation window alone."""
DIFFUSION_KEY = "s2r_diffusion"
"""The ONNX metadata_props key that holds the sampler's metadata (horizons, schedule, action normalizer)."""
CHECKPOINT = "diffusion.pt"
"""The checkpoint file of a diffusion run directory (written by `policies.diffusion.train`), by which the
evaluation tells a diffusion run from an mlp one without importing the trainer."""


@dataclass(frozen=True)
class ActionReference:
    """Where relative actions are measured from: the newest observed joint positions as a raw action.

    With a position-mode mapping q = offset + scale * a, the joint positions q_t at the step a
    chunk is planned are the raw action r_t = (q_t - offset) / scale; the policy predicts a - r_t.
    `start`, `stop`: the joint_pos term's slice of one observation frame; `obs_scale` its scale.
    """

    start: int
    stop: int
    obs_scale: float
    offset: np.ndarray
    """(A,) the action mapping's offset."""
    scale: np.ndarray
    """(A,) the action mapping's scale."""

    @classmethod
    def for_contract(cls, contract) -> ActionReference:
        """From a PolicyContract: its joint_pos term and position-mode action mapping; ValueError otherwise."""
        names = [t.name for t in contract.observation]
        if "joint_pos" not in names or contract.action.mode != "position" \
                or tuple(contract.action.joint_names) != tuple(contract.joint_names):
            raise ValueError(f"relative_actions: needs a joint_pos observation term and position actions on every "
                             f"joint; the policy observes {names} with {contract.action.mode} actions")
        i = names.index("joint_pos")
        start = int(sum(contract.observation_sizes[:i]))
        return cls(start, start + contract.observation_sizes[i], contract.observation[i].scale,
                   np.asarray(contract.action.offset), np.asarray(contract.action.scale))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Raw action (..., A) at the joint positions of observation frames (..., D)."""
        return (frame[..., self.start:self.stop] / self.obs_scale - self.offset) / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "stop": self.stop, "obs_scale": self.obs_scale,
                "offset": self.offset.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionReference:
        return cls(int(data["start"]), int(data["stop"]), float(data["obs_scale"]),
                   np.asarray(data["offset"], dtype=np.float64), np.asarray(data["scale"], dtype=np.float64))


class DiffusionRuntime:
    """One exported diffusion policy's sampler over `num_envs` worlds (ChunkedPolicy executes its chunks)."""

    def __init__(self, path: str | Path, *, spec: RobotSpec, num_envs: int = 1, warm_start: bool = False,
                 warm_start_steps: int | None = None, action_horizon: int | None = None, seed: int = 0) -> None:
        self.path = Path(path)
        self.session = open_session(self.path)
        self.contract = contract_of(self.session, self.path)
        if self.contract.kind != "diffusion":
            raise ContractError(f"{self.path}: contract kind {self.contract.kind!r}: this runtime runs "
                                "'diffusion' policies (use s2r.runtime.mlp.PolicyRuntime for 'mlp')")
        self.warnings = self.contract.check(spec)
        metadata = self.session.get_modelmeta().custom_metadata_map
        if DIFFUSION_KEY not in metadata:
            raise ContractError(f"{self.path}: no sampler metadata (key {DIFFUSION_KEY!r}); "
                                "export it with policies.diffusion.export")
        meta = json.loads(metadata[DIFFUSION_KEY])
        self.spec = spec
        self.mapping = self.contract.action
        self.num_envs = num_envs
        self.obs_horizon = int(meta["obs_horizon"])
        self.pred_horizon = int(meta["pred_horizon"])
        self.action_horizon = int(action_horizon or meta["action_horizon"])
        """Actions executed from each chunk before planning again (warm starts shift by it): the trained one, or
        fewer (replanning more often, as LeRobot's n_action_steps), up to pred_horizon - obs_horizon + 1."""
        if not 1 <= self.action_horizon <= self.pred_horizon - self.obs_horizon + 1:
            raise ValueError(f"action_horizon: {self.action_horizon} not in [1, "
                             f"{self.pred_horizon - self.obs_horizon + 1}] for pred_horizon {self.pred_horizon}")
        self.alphas_cumprod = [float(a) for a in meta["alphas_cumprod"]]
        self.timesteps = [int(t) for t in meta["timesteps"]]
        """DDIM steps of a full sampling, noisiest first."""
        self.noise_policy = self.contract.initial_noise == "policy"
        """Whether sampling starts from the graph's noise policy (DSRL) rather than from N(0, I)."""
        if warm_start and self.noise_policy:
            raise ValueError(f"{self.path}: warm_start: a DSRL policy starts every chunk from its noise policy's "
                             "output (contract initial_noise 'policy'); it does not warm-start")
        self.warm_start = warm_start
        self.warm_start_steps = int(warm_start_steps or meta["warm_start_steps"])
        if not 1 <= self.warm_start_steps <= len(self.timesteps):
            raise ValueError(f"warm_start_steps: {self.warm_start_steps} not in [1, {len(self.timesteps)}]")
        self.clip_sample = float(meta["clip_sample"])
        self.prediction = meta.get("prediction", "epsilon")
        """What the network outputs: the noise ε̂ ("epsilon") or the clean chunk x̂0 ("sample")."""
        low, high = np.asarray(meta["action_norm"]["low"]), np.asarray(meta["action_norm"]["high"])
        self._action_center, self._action_half_range = (high + low) / 2, (high - low) / 2
        reference = meta.get("action_reference")
        self.reference = None if reference is None else ActionReference.from_dict(reference)
        """Relative actions: chunks are predicted relative to the newest joint positions (as a raw action)."""
        self.rng = np.random.default_rng(seed)
        self.history = ObservationHistory(self.obs_horizon, self.contract.obs_dim, num_envs)
        self.last_action = np.zeros((num_envs, self.mapping.num_actions))
        """(num_envs, A) the raw actions executed last (the executor writes them)."""

    def reset(self, ids: np.ndarray | None = None) -> None:
        """Forget the observation history and last action of rows `ids` (all for None), at an episode start."""
        rows = slice(None) if ids is None else ids
        self.history.reset(ids)
        self.last_action[rows] = 0.0

    def observe(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The policy's input for a batched state (num_envs, num_joints): (num_envs, obs_horizon * obs_dim) float32."""
        return stacked_observation(self, state, inputs)

    # --- sampling -------------------------------------------------------------------------
    def denoise(self, obs: np.ndarray, sample: np.ndarray, timesteps: list[int]) -> np.ndarray:
        """DDIM from `sample` (n, Tp, A) through `timesteps` (noisiest first) given obs (n, To*D): normalized chunk."""
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)
        abar = self.alphas_cumprod
        for i, t in enumerate(timesteps):
            output = self.session.run([EPS_OUTPUT], {OBS_INPUT: obs, SAMPLE_INPUT: sample,
                                                     TIMESTEP_INPUT: np.full(len(obs), t, dtype=np.int64)})[0]
            abar_prev = abar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
            if self.prediction == "epsilon":
                eps = output
                x0 = (sample - np.float32(np.sqrt(1 - abar[t])) * eps) / np.float32(np.sqrt(abar[t]))
            else:
                x0 = output
                eps = (sample - np.float32(np.sqrt(abar[t])) * x0) / np.float32(np.sqrt(1 - abar[t]))
            x0 = np.clip(x0, -self.clip_sample, self.clip_sample)
            sample = np.float32(np.sqrt(abar_prev)) * x0 + np.float32(np.sqrt(1 - abar_prev)) * eps
        return sample

    def sample(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """A full DDIM sampling from `noise` (n, Tp, A) (if None: the noise policy's for `obs`, or a draw from
        N(0, I)): normalized chunk (n, Tp, A)."""
        if noise is None:
            noise = self.policy_noise(obs) if self.noise_policy else self._noise(len(obs))
        return self.denoise(obs, noise, self.timesteps)

    def policy_noise(self, obs: np.ndarray) -> np.ndarray:
        """The DSRL noise policy's initial noise (n, Tp, A) float32 for observation windows (n, To*D)."""
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        placeholder = np.zeros((len(obs), self.pred_horizon, self.mapping.num_actions), dtype=np.float32)
        return self.session.run([NOISE_OUTPUT], {OBS_INPUT: obs, SAMPLE_INPUT: placeholder,
                                                 TIMESTEP_INPUT: np.zeros(len(obs), dtype=np.int64)})[0]

    def warm_sample(self, obs: np.ndarray, previous: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """The last `warm_start_steps` DDIM steps from the previous raw chunk (n, Tp, A), shifted by
        action_horizon (tail padded with its last action), normalized for `obs` and noised to the level
        of the first of those steps. Returns the normalized chunk (n, Tp, A)."""
        shift = self.action_horizon
        shifted = np.concatenate([previous[:, shift:], np.repeat(previous[:, -1:], shift, axis=1)], axis=1)
        steps = self.timesteps[-self.warm_start_steps:]
        abar = self.alphas_cumprod[steps[0]]
        if noise is None:
            noise = self._noise(len(obs))
        start = np.float32(np.sqrt(abar)) * self.normalize(shifted, obs) + np.float32(np.sqrt(1 - abar)) * noise
        return self.denoise(obs, start.astype(np.float32), steps)

    def reference_action(self, obs: np.ndarray) -> np.ndarray:
        """(n, A) raw action the chunks of observation windows (n, To*D) are relative to (0 if absolute)."""
        if self.reference is None:
            return np.zeros((len(obs), self.mapping.num_actions))
        return self.reference(obs[:, -self.contract.obs_dim:].astype(np.float64))

    def unnormalize(self, chunk: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Normalized chunk (n, Tp, A) sampled for windows `obs` (n, To*D) → raw actions, float64."""
        return chunk.astype(np.float64) * self._action_half_range + self._action_center \
            + self.reference_action(obs)[:, None]

    def normalize(self, actions: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Raw actions (n, Tp, A) → the normalized chunk for windows `obs`, the inverse of `unnormalize`."""
        relative = actions - self.reference_action(obs)[:, None]
        return (relative - self._action_center) / np.where(self._action_half_range > 0, self._action_half_range, 1.0)

    def _noise(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, self.pred_horizon, self.mapping.num_actions), dtype=np.float32)
