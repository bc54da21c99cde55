"""Per-dimension min-max normalization to [-1, 1], the diffusion policy's pre- and post-processing.

Observations and actions are each mapped per dimension from the demonstrations' [min, max]
to [-1, 1] (a dimension that never moves maps to 0). The statistics are saved with the
policy: buffers of the torch model (so the checkpoint holds them and the exported graph
normalizes observations itself) and, for actions, the ONNX metadata the numpy runtime reads.
This module needs numpy only; `RangeNormalizer.module()` builds the torch side.

    norm = RangeNormalizer.fit(actions)          # actions: (N, A)
    x = norm.normalize(actions)                  # (..., A) in [-1, 1]
    norm.unnormalize(x)                          # back, to float precision
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-6
"""Ranges narrower than this count as constant."""


@dataclass(frozen=True)
class RangeNormalizer:
    """Maps each dimension's [low, high] to [-1, 1]: x_n = 2 (x - low) / (high - low) - 1."""

    low: np.ndarray
    """(D,) per-dimension minimum; (T, D) for a normalizer per chunk index."""
    high: np.ndarray
    """Per-dimension maximum, the shape of `low`."""

    @classmethod
    def fit(cls, values: np.ndarray) -> RangeNormalizer:
        """Statistics of samples (N, ...) over the first axis."""
        values = np.asarray(values, dtype=np.float64)
        return cls(values.min(axis=0), values.max(axis=0))

    @property
    def scale(self) -> np.ndarray:
        """(D,) multiplier: 2 / range, 0 for constant dimensions (they normalize to 0)."""
        span = self.high - self.low
        return np.where(span > EPS, 2.0 / np.maximum(span, EPS), 0.0)

    @property
    def center(self) -> np.ndarray:
        return (self.high + self.low) / 2.0

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """(..., D) raw → normalized."""
        return (x - self.center) * self.scale

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        """(..., D) normalized → raw (a constant dimension returns its constant)."""
        return x * (self.high - self.low) / 2.0 + self.center

    def to_dict(self) -> dict[str, Any]:
        return {"low": np.asarray(self.low, dtype=np.float64).tolist(),
                "high": np.asarray(self.high, dtype=np.float64).tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeNormalizer:
        low, high = np.asarray(data["low"], dtype=np.float64), np.asarray(data["high"], dtype=np.float64)
        if low.shape != high.shape or low.ndim not in (1, 2) or np.any(high < low):
            raise ValueError(f"normalizer: low {low.tolist()} and high {high.tolist()} are not matching ranges")
        return cls(low, high)

    def module(self):
        """The torch module that normalizes (..., D) the same way, statistics as buffers."""
        from s2r.policies.diffusion.model import Normalize

        return Normalize(self.center, self.scale)
