"""PolicyRuntime: run an exported policy on a robot with onnxruntime and numpy only.

Loads the ONNX file, reads its PolicyContract from the metadata, checks it
against the robot's spec (refusing a mismatch, naming the field), and turns a
RobotState into a Command with the same observation terms and action mapping
the simulator used in training. No torch, no MuJoCo: this is what runs on the
robot computer.

    runtime = PolicyRuntime("cartpole.onnx", spec=robot_spec("cartpole"))
    command = runtime.step(state)                     # RobotState (num_joints,) → Command
    commands = runtime.step(batch_state, inputs)      # batched: (N, num_joints) → (N, A)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from s2r.contract import METADATA_KEY, ContractError, PolicyContract
from s2r.observations import LAST_ACTION, ObservationHistory, build_observation
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState

OBS_INPUT = "obs"
ACTION_OUTPUT = "action"


def read_contract(path: str | Path) -> PolicyContract:
    """The contract stored in an ONNX file's metadata; ContractError if absent or unreadable."""
    session = _session(path)
    return _contract_of(session, path)


def _session(path: str | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable files
        raise ContractError(f"{path}: not a loadable ONNX model ({error})") from None


def _contract_of(session: ort.InferenceSession, path: str | Path) -> PolicyContract:
    metadata = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in metadata:
        raise ContractError(f"{path}: no policy contract in the ONNX metadata (key {METADATA_KEY!r}); "
                            "export it with `s2r export`")
    try:
        return PolicyContract.from_json(metadata[METADATA_KEY])
    except ContractError as error:
        raise ContractError(f"{path}: {error}") from None


def as_batch(state: RobotState, inputs: Mapping[str, np.ndarray] | None
             ) -> tuple[RobotState, Mapping[str, np.ndarray] | None, bool]:
    """An unbatched state (num_joints,) and its inputs as a batch of one; the flag says whether it was unbatched."""
    if state.q.ndim != 1:
        return state, inputs, False
    add = lambda a: None if a is None else np.asarray(a)[None]  # noqa: E731
    batched = RobotState(state.stamp, add(state.q), add(state.dq), add(state.tau), add(state.base_quat),
                         add(state.base_ang_vel))
    return batched, {k: add(v) for k, v in (inputs or {}).items()}, True


def first_row(command: Command) -> Command:
    """Row 0 of a batched Command."""
    return Command(command.q[0], command.dq[0], command.kp[0], command.kd[0], command.tau_ff[0])


def observe(runtime: PolicyRuntime, state: RobotState, inputs: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """A runtime's stacked observation of a batched state, with its last action and the task inputs checked.

    Shared by every runtime kind: `runtime` has `contract`, `path`, `spec`, `history` and `last_action`.
    """
    task_inputs = {LAST_ACTION: runtime.last_action, **(inputs or {})}
    for name, size in runtime.contract.inputs.items():
        value = task_inputs.get(name)
        if value is None or np.shape(value)[-1] != size:
            raise ContractError(f"{runtime.path}: input {name!r}: the policy needs {size} values per step, "
                                f"got {None if value is None else np.shape(value)}")
    frame = build_observation(runtime.contract.observation, state, task_inputs, runtime.spec)
    return runtime.history.push(frame).astype(np.float32)


class PolicyRuntime:
    """One exported policy, ready to turn robot states into commands."""

    def __init__(self, path: str | Path, *, spec: RobotSpec, num_envs: int = 1) -> None:
        self.path = Path(path)
        self.session = _session(self.path)
        self.contract = _contract_of(self.session, self.path)
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
        """The policy's input for a batched state (num_envs, num_joints): (num_envs, obs_dim * history) float32."""
        return observe(self, state, inputs)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Raw actions for observations (n, obs_dim * history): (n, num_actions) float64."""
        return self.session.run([ACTION_OUTPUT], {OBS_INPUT: obs.astype(np.float32, copy=False)})[0].astype(np.float64)

    def step(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> Command:
        """Observation → inference → action mapping. Unbatched states give an unbatched Command."""
        state, inputs, single = as_batch(state, inputs)
        command = self.mapping.to_command(self.action(state, inputs))
        return first_row(command) if single else command

    def action(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The clipped raw action for a batched state, (num_envs, num_actions); remembered as the last action."""
        action = self.mapping.clip_action(self.act(self.observe(state, inputs)))
        self.last_action[:] = action
        return action
