"""PolicyRuntime: run an exported policy on a robot with onnxruntime and numpy only.

Loads the ONNX file, reads its PolicyContract from the metadata, checks it
against the robot's spec (refusing a mismatch, naming the field), and turns a
RobotState into a Command with the same observation terms and action mapping
the simulator used in training. No torch, no MuJoCo: this is what runs on the
robot computer.

    runtime = PolicyRuntime("cartpole.onnx", spec=robot_spec("cartpole"))
    command = runtime.step(state)                     # RobotState (num_joints,) → Command
    commands = runtime.step(batch_state, inputs)      # batched: (N, num_joints) → (N, A)
    runtime.rehearse(state)                           # the same work, nothing remembered: warms the caches
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from s2r.contract import ContractError
from s2r.observations import ObservationHistory
from s2r.runtime.batching import stacked_observation
from s2r.runtime.session import OBS_INPUT, contract_of, open_session
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState

ACTION_OUTPUT = "action"


class PolicyRuntime:
    """One exported mlp policy, ready to turn robot states into commands (a `Runtime`)."""

    rehearses = True
    """`rehearse` runs the step's observation, inference and mapping: worth running before a state is due."""
    computed_inputs = ()
    """Every task input comes from the caller."""
    optional_inputs: Mapping[str, int] = MappingProxyType({})
    """None beyond the contract's."""

    def __init__(self, path: str | Path, *, spec: RobotSpec, num_envs: int = 1) -> None:
        self.path = Path(path)
        self.session = open_session(self.path)
        self.contract = contract_of(self.session, self.path)
        if self.contract.kind != "mlp":
            raise ContractError(f"{self.path}: contract kind {self.contract.kind!r}: this runtime runs 'mlp' policies")
        self.warnings = self.contract.check(spec)
        self.spec = spec
        self.mapping = self.contract.action
        self.num_envs = num_envs
        self.history = ObservationHistory(self.contract.history_length, self.contract.obs_dim, num_envs)
        self.last_action = np.zeros((num_envs, self.mapping.num_actions))

    def reset(self, ids: np.ndarray | None = None) -> None:
        """Forget the history and last action of rows `ids` (all for None), at an episode start."""
        rows = slice(None) if ids is None else ids
        self.last_action[rows] = 0.0
        self.history.reset(ids)

    def observe(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The policy's input for a batched state (num_envs, num_joints), or one robot's (num_joints,):
        (num_envs, obs_dim * history) float32."""
        return stacked_observation(self, state, inputs)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Raw actions for observations (n, obs_dim * history): (n, num_actions) float64."""
        return self.session.run([ACTION_OUTPUT], {OBS_INPUT: obs.astype(np.float32, copy=False)})[0].astype(np.float64)

    def step(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> Command:
        """Observation → inference → action mapping. Unbatched states give an unbatched Command."""
        action = self.action(state, inputs)
        return self.mapping.to_command(action[0] if state.q.ndim == 1 else action)

    def action(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The clipped raw action for a batched state (num_envs, num_joints) or one robot's (num_joints,) with
        unbatched inputs, (num_envs, num_actions); remembered as the last action."""
        action = self.mapping.clip_action(self.act(self.observe(state, inputs)))
        self.last_action[:] = action
        return action

    def rehearse(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> None:
        """`step` on `state` with its command thrown away and the runtime left as it was (the history
        and the last action put back): run shortly before a state is due, it brings the step's code
        and weights into the caches, so that the step that counts runs warm."""
        kept = self.history.buffer.copy(), self.history.fresh.copy(), self.last_action.copy()
        try:
            self.step(state, inputs)
        finally:
            self.history.buffer[...], self.history.fresh[...], self.last_action[...] = kept

    def stats(self) -> dict[str, Any]:
        """None kept: the caller times `step` (the node's inference percentiles)."""
        return {}

    def close(self) -> None:
        """Nothing to release: the session is the runtime's own."""
