"""WarpBatch: the part of `mujoco.batch.Batch`'s API that `BatchEnv` uses, on MuJoCo Warp.

This is the `warp` backend. `BatchEnv` steps N worlds through the same calls on
either backend (`bind`, `expand`, `expanded`, `step`, `reset`, `forward`,
`set_const`), so tasks, observation terms and randomization are written once.

Guarantees:
- Every call works on all worlds in Warp kernels: there is no per-world Python loop.
- `bind` and `expand` return (nworld, ...) numpy arrays the caller reads and writes
  between calls, as with `mujoco.batch`. On Warp's CPU device they are zero-copy views
  of the Warp arrays; on a CUDA device they are host mirrors, pushed to the device before
  each call and pulled after it, and the physics step is captured once in a CUDA graph.
  `tensor(name)` gives a zero-copy torch view of a Data field on the device.
- Worlds whose state turns NaN/Inf are reset, clock included, as MuJoCo's C engine does,
  so `BatchEnv` detects them the same way on both backends.
- A contact or constraint buffer overflow raises `WarpOverflowError` naming the setting
  to raise; a model feature MuJoCo Warp lacks raises `WarpUnsupportedError`.

MuJoCo Warp computes in float32 (MuJoCo's C engine in float64): trajectories agree with
the `cpu` backend to about 1e-4 over a second of the shipped robots (tests/test_warp.py).

    batch = WarpBatch(model, nworld=4096)              # CUDA if present, else Warp's CPU device
    qpos = batch.bind("qpos")                          # (4096, nq)
    batch.expand("body_mass")[:, 1] *= 1.1             # per-world masses
    batch.step(nstep=4)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import mujoco
import numpy as np

log = logging.getLogger(__name__)

SET_CONST_OUTPUTS = ("body_subtreemass", "body_invweight0", "dof_invweight0", "actuator_acc0", "tendon_invweight0")
"""Model fields `set_const` writes: per-world whenever one of its inputs is."""


class WarpUnsupportedError(ValueError):
    """The model uses a feature MuJoCo Warp does not implement."""


class WarpOverflowError(RuntimeError):
    """A contact or constraint buffer overflowed: the physics of those worlds would be wrong."""

    def __init__(self, message: str, worlds: np.ndarray) -> None:
        super().__init__(message)
        self.worlds = worlds


def warp_device() -> str:
    """The device the `warp` backend runs on: this rank's CUDA GPU (LOCAL_RANK under torchrun), else
    Warp's CPU device (slow)."""
    import warp as wp

    wp.config.log_level = wp.LOG_WARNING  # no greeting, no line per compiled module
    wp.init()
    if not wp.get_cuda_device_count():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % wp.get_cuda_device_count()}"


class WarpBatch:
    """`nworld` copies of one MjModel stepped by MuJoCo Warp."""

    def __init__(self, model: mujoco.MjModel, nworld: int, *, device: str | None = None,
                 nconmax: int | None = None, njmax: int | None = None, source: str = "model",
                 host_mirrors: bool | None = None) -> None:
        """`nconmax`/`njmax`: contacts and constraint rows allocated per world (MuJoCo Warp's defaults if None).
        `source` names the model in errors (its MJCF file). `host_mirrors`: serve `bind`/`expand` from host
        copies synchronized around each call (None: on CUDA devices, where views cannot be zero-copy; True on
        the CPU device runs the GPU's synchronization path, for tests)."""
        device = device or warp_device()  # first: it quiets Warp before it initializes
        import mujoco_warp as mjw
        import warp as wp

        self._wp, self._mjw = wp, mjw
        self.device = wp.get_device(device)
        self.nsim = nworld
        self.model = model
        with wp.ScopedDevice(self.device):
            try:
                self.m = mjw.put_model(model)
            except NotImplementedError as error:
                raise WarpUnsupportedError(
                    f"{source}: a feature MuJoCo Warp does not support ({error}). Use --backend cpu for this model."
                ) from error
            self.d = mjw.make_data(model, nworld=nworld, nconmax=nconmax, njmax=njmax)
        self.nconmax, self.njmax = self.d.naconmax // nworld, self.d.njmax
        self._graph_capture = self.device.is_cuda and wp.is_mempool_enabled(self.device)
        """Whether steps are captured in CUDA graphs (a CUDA device with Warp's memory pool)."""
        self._buffer_overflows = int(mjw.OverflowType.ALL) & ~int(mjw.OverflowType.ITERATIONS |
                                                                  mjw.OverflowType.LS_ITERATIONS)
        """Overflow flags that mean dropped contacts or constraints (solver iteration limits are not)."""
        self._mirrored = self.device.is_cuda if host_mirrors is None else host_mirrors
        self._data_views: dict[str, np.ndarray] = {}
        self._model_views: dict[str, np.ndarray] = {}
        self._graphs: dict[tuple[int, int], Any] = {}
        self._qpos, self._qvel = self.bind("qpos"), self.bind("qvel")
        self._overflow = self.bind("overflow")
        if self.device.is_cpu:
            log.warning("MuJoCo Warp: no CUDA device, running on Warp's CPU device: correct but slow "
                        "(for parity checks); --backend cpu is the fast choice on this machine")

    # --- arrays -------------------------------------------------------------------------
    def bind(self, name: str) -> np.ndarray:
        """A live (nworld, ...) array over a Data field."""
        if name not in self._data_views:
            self._data_views[name] = self._view(self._data_array(name))
        return self._data_views[name]

    def expand(self, name: str) -> np.ndarray:
        """Give a model field per-world values (the shared ones, copied); return them live, (nworld, ...)."""
        if name not in self._model_views:
            array = self._model_array(name)
            if array.shape[0] != self.nsim:
                array = self._tile(name, array)
            self._model_views[name] = self._view(array)
        return self._model_views[name]

    def expanded(self, name: str) -> np.ndarray | None:
        """A model field's per-world values, read-only (nworld, ...), or None while it is shared."""
        array = self._model_array(name)
        if array.shape[0] != self.nsim:
            return None
        values = self._model_views[name].copy() if name in self._model_views else array.numpy()
        values.flags.writeable = False
        return values

    def tensor(self, name: str):
        """A zero-copy torch tensor over a Data field on the device, (nworld, ...)."""
        return self._wp.to_torch(self._data_array(name))

    # --- physics --------------------------------------------------------------------------
    def step(self, nstep: int = 1, stage: mujoco.mjtStage = mujoco.mjtStage.mjSTAGE_NONE) -> None:
        """Advance every world by `nstep` physics steps, then compute the forward stages up to `stage`
        (`mjSTAGE_POS`: positions such as site_xpos are those of the new state)."""
        self._push()
        key = (nstep, int(stage))
        if self._graph_capture:
            if key not in self._graphs:
                with self._wp.ScopedCapture(self.device) as capture:
                    self._step(nstep, stage)
                self._graphs[key] = capture.graph
            self._wp.capture_launch(self._graphs[key])
        else:
            self._step(nstep, stage)
        self._pull()
        self._check(stage)

    def reset(self, ids: np.ndarray, stage: mujoco.mjtStage = mujoco.mjtStage.mjSTAGE_NONE) -> None:
        """Reset worlds `ids` to the model's defaults, then compute stages up to `stage`."""
        mask = np.zeros(self.nsim, dtype=bool)
        mask[np.asarray(ids)] = True
        self._push()
        self._mjw.reset_data(self.m, self.d, reset=self._wp.array(mask, dtype=bool, device=self.device))
        self._forward(stage)
        self._pull()

    def forward(self, ids: np.ndarray | None = None, stage: mujoco.mjtStage = mujoco.mjtStage.mjSTAGE_ACC) -> None:
        """Compute the forward stages up to `stage`. Every world is computed: for the others it is a no-op."""
        self._push()
        self._forward(stage)
        self._pull()

    def set_const(self, ids: np.ndarray | None = None) -> None:
        """Recompute the fields derived from masses, inertias and armatures (mj_setConst), per world."""
        for name in SET_CONST_OUTPUTS:
            if hasattr(self.m, name) and self._model_array(name).size:
                self.expand(name)
        self._push()
        self._mjw.set_const(self.m, self.d)
        self._pull(models=True)

    # --- internals ------------------------------------------------------------------------
    def _step(self, nstep: int, stage: mujoco.mjtStage) -> None:
        for _ in range(nstep):
            self._mjw.step(self.m, self.d)
        self._forward(stage)

    def _forward(self, stage: mujoco.mjtStage) -> None:
        stage = int(stage)
        if stage >= int(mujoco.mjtStage.mjSTAGE_ACC):
            self._mjw.forward(self.m, self.d)
        elif stage >= int(mujoco.mjtStage.mjSTAGE_VEL):
            self._mjw.fwd_position(self.m, self.d)
            self._mjw.fwd_velocity(self.m, self.d)
        elif stage >= int(mujoco.mjtStage.mjSTAGE_POS):
            self._mjw.fwd_position(self.m, self.d)

    def _check(self, stage: mujoco.mjtStage) -> None:
        """Reset diverged worlds (as MuJoCo does) and refuse overflowed buffers."""
        bad = ~(np.isfinite(self._qpos).all(axis=1) & np.isfinite(self._qvel).all(axis=1))
        if bad.any():
            self.reset(np.flatnonzero(bad), stage)
        overflowed = np.flatnonzero(self._overflow & self._buffer_overflows)
        if len(overflowed):
            flags = int(np.bitwise_or.reduce(self._overflow[overflowed]))
            names = [f.name for f in self._mjw.OverflowType if f.value and not f.value & (f.value - 1) and flags & f.value]
            raise WarpOverflowError(
                f"MuJoCo Warp: {', '.join(names)} overflow in {len(overflowed)} world(s), e.g. {overflowed[:5].tolist()}: "
                f"contacts beyond nconmax={self.nconmax} or constraint rows beyond njmax={self.njmax} per world "
                f"were dropped. Raise them: make_env(..., nconmax=N, njmax=N).", overflowed)

    def _data_array(self, name: str):
        array = getattr(self.d, name, None)
        if array is None or not hasattr(array, "numpy") or array.shape[:1] != (self.nsim,):
            raise KeyError(f"WarpBatch.bind: {name!r} is not a per-world MuJoCo Warp Data field")
        return array

    def _model_array(self, name: str):
        array = getattr(self.m, name, None)
        if array is None or not hasattr(array, "numpy") or array.ndim < 1:
            raise KeyError(f"WarpBatch.expand: {name!r} is not a MuJoCo Warp Model array field")
        return array

    def _tile(self, name: str, array):
        """Replace a shared model field by per-world copies (captured graphs hold the old pointer)."""
        tiled = self._wp.array(np.repeat(array.numpy(), self.nsim, axis=0), dtype=array.dtype, device=self.device)
        setattr(self.m, name, tiled)
        self._graphs.clear()
        return tiled

    def _view(self, array) -> np.ndarray:
        return array.numpy().copy() if self._mirrored else array.numpy()

    def _push(self) -> None:
        if self._mirrored:
            for name, host in self._data_views.items():
                getattr(self.d, name).assign(host)
            for name, host in self._model_views.items():
                getattr(self.m, name).assign(host)

    def _pull(self, models: bool = False) -> None:
        if self._mirrored:
            for name, host in self._data_views.items():
                host[...] = getattr(self.d, name).numpy()
            if models:
                for name, host in self._model_views.items():
                    host[...] = getattr(self.m, name).numpy()
