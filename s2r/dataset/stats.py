"""Normalization statistics of a dataset's features: per episode while recording, combined per dataset.

Every feature gets min, max, mean, std and count, LeRobot's meta/stats.json: vectors per
dimension (the feature's shape), cameras per channel in [0, 1] (shape (3, 1, 1)).

    stats = vector_stats(values)                      # values (T, D): {"min": [...], ..., "count": [T]}
    dataset = aggregate_stats([stats_a, stats_b])     # weighted by count
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from s2r.dataset.layout import STAT_NAMES, is_video


@dataclass
class RunningStats:
    """Per-channel min, max, sum and sum of squares of one episode's values, updated frame by frame."""

    minimum: np.ndarray
    maximum: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    count: int = 0
    """Values per channel."""
    frames: int = 0

    @classmethod
    def empty(cls, channels: int) -> RunningStats:
        return cls(np.full(channels, np.inf), np.full(channels, -np.inf), np.zeros(channels), np.zeros(channels))

    def update(self, values: np.ndarray) -> None:
        """values: (n, channels) float64."""
        self.minimum = np.minimum(self.minimum, values.min(axis=0))
        self.maximum = np.maximum(self.maximum, values.max(axis=0))
        self.total += values.sum(axis=0)
        self.squares += np.square(values).sum(axis=0)
        self.count += len(values)

    def result(self) -> dict[str, list[float]]:
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 0.0))
        return {"min": self.minimum.tolist(), "max": self.maximum.tolist(), "mean": mean.tolist(),
                "std": std.tolist(), "count": [self.frames]}


def vector_stats(values: np.ndarray) -> dict[str, list[float]]:
    """values: (T, D)."""
    values = values.astype(np.float64)
    return {"min": values.min(axis=0).tolist(), "max": values.max(axis=0).tolist(),
            "mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist(), "count": [len(values)]}


def aggregate_stats(parts: list[dict[str, list[float]]]) -> dict[str, np.ndarray]:
    """Combine per-episode stats (min, max, mean, std, count) into the dataset's, weighting by count.

    var = Σ n_i (σ_i² + (μ_i − μ)²) / Σ n_i, the parallel form of the variance.
    """
    counts = np.array([p["count"][0] for p in parts], dtype=np.float64)
    means = np.array([p["mean"] for p in parts])
    stds = np.array([p["std"] for p in parts])
    total = counts.sum()
    mean = (counts[:, None] * means).sum(axis=0) / total
    var = (counts[:, None] * (stds**2 + (means - mean) ** 2)).sum(axis=0) / total
    return {"min": np.min([p["min"] for p in parts], axis=0), "max": np.max([p["max"] for p in parts], axis=0),
            "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)])}


def stats_shape(spec: Mapping[str, Any]) -> tuple[int, ...]:
    """LeRobot's shapes: per channel (3, 1, 1) for cameras, the feature's shape otherwise."""
    return (3, 1, 1) if is_video(spec) else tuple(spec["shape"])


def episode_stats(row: Mapping[str, Any], key: str) -> dict[str, list[float]]:
    """Feature `key`'s stats out of a meta/episodes row (its `stats/KEY/NAME` columns)."""
    return {name: row[f"stats/{key}/{name}"] for name in (*STAT_NAMES, "count")}
