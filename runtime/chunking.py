"""ChunkedPolicy: a diffusion policy's action chunks on a control loop that never waits for sampling.

Receding horizon with Diffusion Policy's timing (`policies.diffusion.config`): every
`action_horizon` ticks the control thread hands the observation window of that tick to a
planner thread, which samples a chunk of `pred_horizon` actions with the numpy DDIM of
`s2r.runtime.diffusion.DiffusionRuntime` (warm-started from the previous chunk when the
runtime is). The tick goes on with the current chunk meanwhile: a chunk predicts
`pred_horizon - obs_horizon - action_horizon` actions beyond the ones it is meant to execute,
so sampling may take a few control periods without the tick ever waiting for it. A new chunk
is taken at the first tick after it is ready and executed time-aligned: its action for the
tick it planned at is index obs_horizon - 1, so the actions of the ticks that passed while it
was sampled are skipped, not replayed late. Over its first `blend_steps` ticks the command is
a linear cross-fade of the raw actions (before clipping and scaling), the new chunk's weight
rising 1/(B+1), 2/(B+1), ..., B/(B+1) with B = blend_steps, so that a new sample, which may
have chosen another way around the object, never steps the position targets.

With obs_horizon 2, pred_horizon 16, action_horizon 8, blend_steps 3 and a chunk that takes
less than a period to sample (a_i: index i of a chunk; ¼ ½ ¾: the new chunk's weight):

    tick:       t-1   t     t+1   ...   t+7   t+8   t+9   t+10  t+11  t+12  ...   t+16
    observed:   o     o                 o     o
    plan:             P_n                     P_n+1 taken                         P_n+2
    chunk n:          a1    a2    ...   a8    a9    a10   a11   a12
    chunk n+1:                                      a2    a3    a4    a5    ...   a9
    executed:         a1    a2    ...   a8    a9    ¼     ½     ¾     a5    ...   a9

The first chunk is sampled before the first command: until it is ready `step` returns None
(the robot node holds its soft start meanwhile). Ticks on which the current chunk has no
action left (sampling took longer than its spare actions) repeat its last one and count as
`chunk_overruns`; a plan due while the planner is still busy waits for it (`plans_delayed`).
A sampling that raises is re-raised by the next `step`, on the control thread.

    policy = ChunkedPolicy(DiffusionRuntime("dp.onnx", spec=robot_spec("pusher"), warm_start=True),
                           blend_steps=3)
    command = policy.step(state, {"object_pose": pose})   # Command, or None before the first chunk
    policy.close()

No rclpy: it runs on the robot computer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from s2r.reports import SampleWindow, percentiles_us
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.runtime.mlp import as_batch, first_row
from s2r.state import Command, RobotState


@dataclass(frozen=True)
class Chunk:
    """One sampled chunk: raw actions (pred_horizon, num_actions) for the ticks from `planned` - (obs_horizon - 1) on."""

    actions: np.ndarray
    planned: int
    """The tick whose observation window it was sampled from."""


class ChunkedPolicy:
    """Executes a DiffusionRuntime's chunks with a receding horizon, sampling on a planner thread."""

    def __init__(self, runtime: DiffusionRuntime, *, blend_steps: int = 3) -> None:
        spare = runtime.pred_horizon - runtime.obs_horizon - runtime.action_horizon
        if not 0 <= blend_steps <= spare:
            raise ValueError(f"blend_steps: expected 0..{spare} (the actions a chunk predicts beyond the ones it "
                             f"executes: pred_horizon {runtime.pred_horizon} - obs_horizon {runtime.obs_horizon} - "
                             f"action_horizon {runtime.action_horizon}), got {blend_steps}")
        self.runtime = runtime
        self.contract = runtime.contract
        self.warnings = runtime.warnings
        self.blend_steps = blend_steps
        self.ticks = 0
        """Calls of `step` so far: the clock chunks are aligned on."""
        self.current: Chunk | None = None
        self.previous: Chunk | None = None
        """The chunk being faded out, for `blend_steps` ticks after `switched`."""
        self.switched = 0
        """The tick the current chunk took over."""
        self.next_plan = 0
        """The tick the next chunk is due to be planned at."""
        self.planning = False
        """Whether a chunk is being sampled or waits to be taken (control thread only)."""
        self.ready = threading.Event()
        """Set while a sampled chunk waits for the next `step` to take it."""
        self.sampling = SampleWindow()
        """Seconds each chunk took to sample."""
        self.counters = {"chunks_planned": 0, "chunk_switches": 0, "blended_ticks": 0, "chunk_overruns": 0,
                         "plans_delayed": 0}
        self._requests: queue.Queue[tuple[np.ndarray, int, np.ndarray | None] | None] = queue.Queue(maxsize=1)
        self._result: Chunk | Exception | None = None
        self._thread = threading.Thread(target=self._plan, name="chunk planner", daemon=True)
        self._thread.start()

    def step(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> Command | None:
        """This tick's command for an unbatched state (num_joints,); None until the first chunk is ready."""
        state, inputs, _ = as_batch(state, inputs)
        obs = self.runtime.observe(state, inputs)
        self._take_chunk()
        if self.ticks >= self.next_plan:
            if self.planning:
                self.counters["plans_delayed"] += 1
            else:
                self._request(obs)
        action = self._action()
        self.ticks += 1
        if action is None:
            return None
        action = self.runtime.mapping.clip_action(action[None])
        self.runtime.last_action[:] = action
        return first_row(self.runtime.mapping.to_command(action))

    def stats(self) -> dict[str, Any]:
        """Chunk counters and the sampling time p50/p99/max in µs."""
        return {**self.counters, **percentiles_us(self.sampling.values(), "chunk_sampling")}

    def close(self) -> None:
        """Stop the planner thread (after the sampling in progress). Safe to call twice."""
        if self._thread.is_alive():
            self._requests.put(None)  # behind the one request there can be: the planner takes it soon
            self._thread.join()

    # --- control thread ---------------------------------------------------------------------
    def _take_chunk(self) -> None:
        if not self.ready.is_set():
            return
        result, self._result = self._result, None
        self.ready.clear()
        self.planning = False
        if isinstance(result, Exception):
            raise RuntimeError(f"{self.runtime.path}: sampling a chunk failed: {result}") from result
        if self.current is not None:
            self.previous = self.current
            self.counters["chunk_switches"] += 1
        self.current, self.switched = result, self.ticks

    def _request(self, obs: np.ndarray) -> None:
        """Hand this tick's observation window to the planner, with the chunk to warm-start from."""
        previous = None
        if self.runtime.warm_start and self.current is not None:
            # warm_sample shifts the previous chunk by action_horizon; a plan that came later
            # than that (the planner was busy) shifts it by the extra ticks first.
            late = self.ticks - self.current.planned - self.runtime.action_horizon
            index = np.minimum(np.arange(self.runtime.pred_horizon) + max(late, 0), self.runtime.pred_horizon - 1)
            previous = self.current.actions[index][None]
        self.planning = True
        self._requests.put((obs.copy(), self.ticks, previous))
        self.next_plan = self.ticks + self.runtime.action_horizon
        self.counters["chunks_planned"] += 1

    def _action(self) -> np.ndarray | None:
        """This tick's raw action (num_actions,): the current chunk's, cross-faded from the previous one."""
        if self.current is None:
            return None
        index = self._index(self.current)
        if index > self.runtime.pred_horizon - 1:
            self.counters["chunk_overruns"] += 1
        new = self.current.actions[min(index, self.runtime.pred_horizon - 1)]
        since = self.ticks - self.switched
        if self.previous is None or since >= self.blend_steps:
            self.previous = None
            return new
        self.counters["blended_ticks"] += 1
        old = self.previous.actions[min(self._index(self.previous), self.runtime.pred_horizon - 1)]
        weight = (since + 1) / (self.blend_steps + 1)
        return (1.0 - weight) * old + weight * new

    def _index(self, chunk: Chunk) -> int:
        return self.runtime.obs_horizon - 1 + self.ticks - chunk.planned

    # --- planner thread ---------------------------------------------------------------------
    def _plan(self) -> None:
        while (request := self._requests.get()) is not None:
            obs, planned, previous = request
            start = time.perf_counter()
            try:
                sample = self.runtime.sample(obs) if previous is None else self.runtime.warm_sample(obs, previous)
                result: Chunk | Exception = Chunk(self.runtime.unnormalize(sample, obs)[0], planned)
            except Exception as error:  # handed to the control thread, which raises it
                result = error
            self.sampling.add(time.perf_counter() - start)
            self._result = result
            self.ready.set()
