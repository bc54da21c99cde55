"""ChunkedPolicy: a diffusion policy's action chunks on a control loop, the same on the robot and in simulation.

Receding horizon with Diffusion Policy's timing (`policies.diffusion.config`): every
`action_horizon` ticks a world hands the observation window of that tick to the sampler of a
`DiffusionRuntime` (warm-started from the previous chunk when the runtime is), which returns a
chunk of `pred_horizon` raw actions. A chunk is executed time-aligned: its action for the tick
it was planned at is index obs_horizon - 1, so the ticks that passed while it was sampled are
skipped, not replayed late. Over its first `blend_steps` ticks the command is a linear
cross-fade of the raw actions (before clipping and scaling), the new chunk's weight rising
1/(B+1), 2/(B+1), ..., B/(B+1) with B = blend_steps, so that a new sample, which may have
chosen another way around the object, never steps the position targets.

Two modes, one execution:

- On the robot (the default): a planner thread samples while the tick goes on with the
  current chunk, which predicts `pred_horizon - obs_horizon - action_horizon` actions beyond
  the ones it is meant to execute, so sampling may take a few control periods without the
  tick ever waiting for it. A new chunk is taken at the first tick after it is ready. The
  first chunk is sampled before the first command: until it is ready `step` returns None (the
  robot node holds its soft start meanwhile). Ticks on which the current chunk has no action
  left (sampling took longer than its spare actions) repeat its last one and count as
  `chunk_overruns`; a plan due while the planner is still busy waits for it
  (`plans_delayed`). A sampling that raises is re-raised by the next `step`, on the control
  thread. One robot: num_envs 1.
- Synchronous (`synchronous=True`, the simulator's evaluation): the worlds that plan are
  sampled on the calling thread, batched over the env's N worlds (each DDIM step one session
  run), and a chunk is taken `sampling_ticks` ticks after the tick it was planned at (0: at
  once; a world's first chunk after a reset always at once). With sampling_ticks 1 it
  executes what the planner thread executes when sampling takes under a period; with
  sampling_ticks 0 and blend_steps 0 it is the evaluation s2r measured before this executor
  ran in simulation.

With obs_horizon 2, pred_horizon 16, action_horizon 8 and blend_steps 3 (a_i: index i of a
chunk; ¼ ½ ¾: the new chunk's weight), around the switch from chunk n (planned at tick t) to
chunk n+1:

    tick:              t+7   t+8   t+9   t+10  t+11  t+12  t+13  ...   t+16
    observed:          o     o
    plan:                    P_n+1                                     P_n+2
    chunk n:           a8    a9    a10   a11   a12   a13
    chunk n+1:               a1    a2    a3    a4    a5    a6    ...   a9
    planner thread:    a8    a9    ¼     ½     ¾     a5    a6    ...        taken at t+9
    synchronous:       a8    ¼     ½     ¾     a4    a5    a6    ...        sampling_ticks 0

    policy = ChunkedPolicy(DiffusionRuntime("dp.onnx", spec=robot_spec("pusher"), warm_start=True))
    command = policy.step(state, {"object_pose": pose})   # Command, or None before the first chunk
    policy.close()

    batched = ChunkedPolicy(DiffusionRuntime("dp.onnx", spec=spec, num_envs=50), synchronous=True)
    actions = batched.action(states, inputs)              # (50, A) clipped raw actions, one per world

No rclpy: it runs on the robot computer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from s2r.reports import SampleWindow, percentiles_us
from s2r.runtime.batching import as_batch, first_row
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.state import Command, RobotState

DEFAULT_BLEND_STEPS = 3
"""Ticks a new chunk is cross-faded in over, on the robot and in `s2r eval` unless told otherwise."""


@dataclass(frozen=True)
class Chunk:
    """One sampled chunk: raw actions (pred_horizon, num_actions) for the ticks from planned - (obs_horizon - 1) on."""

    actions: np.ndarray
    planned: int
    """The tick whose observation window it was sampled from."""


class ChunkedPolicy:
    """Executes a DiffusionRuntime's chunks with a receding horizon (a `Runtime` of kind "diffusion")."""

    rehearses = False
    """A tick's step looks up the current chunk: nothing to warm up (see `rehearse`)."""
    computed_inputs = ()
    """Every task input comes from the caller."""
    optional_inputs: Mapping[str, int] = MappingProxyType({})
    """None beyond the contract's."""

    def __init__(self, runtime: DiffusionRuntime, *, blend_steps: int = DEFAULT_BLEND_STEPS,
                 synchronous: bool = False, sampling_ticks: int = 0) -> None:
        horizon = runtime.action_horizon
        if not synchronous and runtime.num_envs != 1:
            raise ValueError(f"num_envs: the planner thread serves one robot, got {runtime.num_envs} worlds "
                             "(synchronous=True batches a simulator's worlds)")
        if not synchronous and sampling_ticks:
            raise ValueError("sampling_ticks: an option of the synchronous mode (on the planner thread a chunk "
                             "takes as long as its sampling)")
        if not 0 <= sampling_ticks <= horizon:
            raise ValueError(f"sampling_ticks: expected 0..{horizon} (action_horizon), got {sampling_ticks}")
        delay = sampling_ticks if synchronous else 1
        limit = runtime.pred_horizon - runtime.obs_horizon - horizon + 1 - delay
        if not 0 <= blend_steps <= limit:
            raise ValueError(f"blend_steps: expected 0..{limit} (a chunk's actions from the tick it is planned at, "
                             f"pred_horizon {runtime.pred_horizon} - obs_horizon {runtime.obs_horizon} + 1, cover "
                             f"the action_horizon {horizon} it executes, the {delay} tick(s) its successor takes "
                             f"to arrive and the cross-fade), got {blend_steps}")
        self.runtime = runtime
        self.path: Path = runtime.path
        self.contract = runtime.contract
        self.spec = runtime.spec
        self.warnings = runtime.warnings
        self.num_envs = runtime.num_envs
        self.blend_steps = blend_steps
        self.synchronous = synchronous
        self.sampling_ticks = sampling_ticks
        n, shape = self.num_envs, (self.num_envs, runtime.pred_horizon, runtime.mapping.num_actions)
        self.ticks = np.zeros(n, dtype=np.int64)
        """Calls of `step` since each world's reset: the clock chunks are aligned on."""
        self.next_plan = np.zeros(n, dtype=np.int64)
        """The tick each world's next chunk is due to be planned at."""
        self.chunk, self.planned, self.has_chunk = np.zeros(shape), np.zeros(n, dtype=np.int64), np.zeros(n, bool)
        """Each world's current chunk (N, Tp, A), the tick it was planned at, and whether it has one."""
        self.fading, self.fading_planned, self.fading_out = np.zeros(shape), np.zeros(n, dtype=np.int64), \
            np.zeros(n, bool)
        """The chunk being faded out, for `blend_steps` ticks after `switched`."""
        self.switched = np.zeros(n, dtype=np.int64)
        """The tick each world's current chunk took over."""
        self.pending, self.pending_planned, self.has_pending = np.zeros(shape), np.zeros(n, dtype=np.int64), \
            np.zeros(n, bool)
        """Synchronous mode: chunks sampled and waiting `sampling_ticks` to be taken."""
        self.planning = False
        """Planner thread: whether a chunk is being sampled or waits to be taken (control thread only)."""
        self.ready = threading.Event()
        """Planner thread: set while a sampled chunk waits for the next `step` to take it."""
        self.sampling = SampleWindow()
        """Seconds each sampling took (a batch of worlds in the synchronous mode)."""
        self.counters = {"chunks_planned": 0, "chunk_switches": 0, "blended_ticks": 0, "chunk_overruns": 0,
                         "plans_delayed": 0}
        self._requests: queue.Queue[tuple[np.ndarray, int, np.ndarray | None] | None] = queue.Queue(maxsize=1)
        self._result: Chunk | Exception | None = None
        self._thread = None if synchronous else threading.Thread(target=self._plan, name="chunk planner",
                                                                 daemon=True)
        if self._thread is not None:
            self._thread.start()

    def reset(self, ids: np.ndarray | None = None) -> None:
        """Forget the history, last action and chunks of worlds `ids` (all for None), at an episode start.
        On the planner thread, a chunk being sampled is waited for and dropped."""
        if self.planning:
            self.ready.wait()
            self._result, self.planning = None, False
            self.ready.clear()
        rows = slice(None) if ids is None else ids
        for flags in (self.has_chunk, self.fading_out, self.has_pending):
            flags[rows] = False
        self.ticks[rows] = 0
        self.next_plan[rows] = 0
        self.runtime.reset(ids)

    def action(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray | None:
        """This tick's clipped raw actions (num_envs, A) for a batched state (num_envs, num_joints) and task inputs
        (num_envs, size); None until the first chunk is ready (planner thread only)."""
        obs = self.runtime.observe(state, inputs)
        if self.synchronous:
            self._take(self.has_pending & (self.ticks - self.pending_planned >= self.sampling_ticks), self.pending,
                       self.pending_planned)
            self._plan_now(obs)
        else:
            self._take_planned()
            if self.ticks[0] >= self.next_plan[0]:
                if self.planning:
                    self.counters["plans_delayed"] += 1
                else:
                    self._request(obs)
        raw = self._raw_action()
        self.ticks += 1
        if raw is None:
            return None
        action = self.runtime.mapping.clip_action(raw)
        self.runtime.last_action[:] = action
        return action

    def step(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> Command | None:
        """This tick's command, batched or for an unbatched state (num_joints,); None as for `action`."""
        state, inputs, single = as_batch(state, inputs)
        action = self.action(state, inputs)
        if action is None:
            return None
        command = self.runtime.mapping.to_command(action)
        return first_row(command) if single else command

    def rehearse(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> None:
        """Nothing: a tick's step looks up the current chunk, and the sampling, the work that is slow, runs
        on the planner thread (the synchronous mode is the simulator's, which has no deadline to warm up for)."""

    def stats(self) -> dict[str, Any]:
        """The execution settings, chunk counters and the sampling time p50/p99/max in µs."""
        settings = {"action_horizon": self.runtime.action_horizon, "warm_start": self.runtime.warm_start,
                    "blend_steps": self.blend_steps, "synchronous": self.synchronous,
                    "sampling_ticks": self.sampling_ticks}
        return {**settings, **self.counters, **percentiles_us(self.sampling.values(), "chunk_sampling")}

    def close(self) -> None:
        """Stop the planner thread (after the sampling in progress). Safe to call twice."""
        if self._thread is not None and self._thread.is_alive():
            self._requests.put(None)  # behind the one request there can be: the planner takes it soon
            self._thread.join()

    # --- execution, both modes ----------------------------------------------------------------
    def _take(self, rows: np.ndarray, chunks: np.ndarray, planned: np.ndarray) -> None:
        """Worlds `rows` (N,) bool switch to chunks[rows] planned at planned[rows]; a current chunk fades out."""
        if not rows.any():
            return
        switching = rows & self.has_chunk
        self.counters["chunk_switches"] += int(switching.sum())
        self.fading[switching], self.fading_planned[switching] = self.chunk[switching], self.planned[switching]
        self.fading_out[rows] = switching[rows]
        self.chunk[rows], self.planned[rows] = chunks[rows], planned[rows]
        self.switched[rows] = self.ticks[rows]
        self.has_chunk |= rows
        self.has_pending &= ~rows

    def _raw_action(self) -> np.ndarray | None:
        """This tick's raw actions (N, A): each world's current chunk's, cross-faded from the previous one."""
        if not self.has_chunk.all():
            return None
        last = self.runtime.pred_horizon - 1
        rows = np.arange(self.num_envs)
        index = self._index(self.planned)
        self.counters["chunk_overruns"] += int((index > last).sum())
        new = self.chunk[rows, np.minimum(index, last)]
        since = self.ticks - self.switched
        self.fading_out &= since < self.blend_steps
        if not self.fading_out.any():
            return new
        blending = self.fading_out
        self.counters["blended_ticks"] += int(blending.sum())
        old = self.fading[rows, np.minimum(self._index(self.fading_planned), last)]
        weight = ((since + 1) / (self.blend_steps + 1))[:, None]
        return np.where(blending[:, None], (1.0 - weight) * old + weight * new, new)

    def _index(self, planned: np.ndarray) -> np.ndarray:
        """Index in chunks planned at ticks `planned` (N,) of this tick's action."""
        return self.runtime.obs_horizon - 1 + self.ticks - planned

    def _previous(self, rows: np.ndarray) -> np.ndarray:
        """The current chunks of worlds `rows` to warm-start from (n, Tp, A). warm_sample shifts them by
        action_horizon; a plan that came later than that (the planner was busy) shifts them by the extra ticks."""
        late = np.maximum(self.ticks[rows] - self.planned[rows] - self.runtime.action_horizon, 0)
        index = np.minimum(np.arange(self.runtime.pred_horizon)[None] + late[:, None], self.runtime.pred_horizon - 1)
        return self.chunk[rows][np.arange(len(late))[:, None], index]

    def _sample(self, obs: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """Raw chunks (n, Tp, A) for observation windows (n, To*D): in full, or warm-started from `previous`."""
        start = time.perf_counter()
        sample = self.runtime.sample(obs) if previous is None else self.runtime.warm_sample(obs, previous)
        chunks = self.runtime.unnormalize(sample, obs)
        self.sampling.add(time.perf_counter() - start)
        return chunks

    # --- synchronous mode -----------------------------------------------------------------------
    def _plan_now(self, obs: np.ndarray) -> None:
        """Sample the chunks due this tick, cold ones (no chunk to start from) first, then warm starts."""
        due = self.ticks >= self.next_plan
        if not due.any():
            return
        warm = due & self.has_chunk & self.runtime.warm_start
        cold = due & ~warm
        chunks = np.zeros_like(self.pending)
        if cold.any():
            chunks[cold] = self._sample(obs[cold], None)
        if warm.any():
            chunks[warm] = self._sample(obs[warm], self._previous(warm))
        self.counters["chunks_planned"] += int(due.sum())
        planned = self.ticks.copy()
        self.next_plan[due] = self.ticks[due] + self.runtime.action_horizon
        now = due & (~self.has_chunk | (self.sampling_ticks == 0))
        later = due & ~now
        self.pending[later], self.pending_planned[later], self.has_pending[later] = chunks[later], planned[later], True
        self._take(now, chunks, planned)

    # --- planner thread: control side ---------------------------------------------------------
    def _take_planned(self) -> None:
        if not self.ready.is_set():
            return
        result, self._result = self._result, None
        self.ready.clear()
        self.planning = False
        if isinstance(result, Exception):
            raise RuntimeError(f"{self.runtime.path}: sampling a chunk failed: {result}") from result
        self._take(np.ones(1, bool), result.actions[None], np.array([result.planned]))

    def _request(self, obs: np.ndarray) -> None:
        """Hand this tick's observation window to the planner, with the chunk to warm-start from."""
        warm = self.runtime.warm_start and self.has_chunk[0]
        previous = self._previous(np.ones(1, bool)) if warm else None
        self.planning = True
        self._requests.put((obs.copy(), int(self.ticks[0]), previous))
        self.next_plan[0] = self.ticks[0] + self.runtime.action_horizon
        self.counters["chunks_planned"] += 1

    # --- planner thread -------------------------------------------------------------------------
    def _plan(self) -> None:
        while (request := self._requests.get()) is not None:
            obs, planned, previous = request
            try:
                result: Chunk | Exception = Chunk(self._sample(obs, previous)[0], planned)
            except Exception as error:  # handed to the control thread, which raises it
                result = error
            self._result = result
            self.ready.set()
