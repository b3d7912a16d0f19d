"""Rewards of point and detect outputs against ground truth, each in [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..model.vision import Box

POINT_RADIUS = 0.1  # a point this far from the nearest true point earns nothing


@dataclass(frozen=True)
class GroundTruth:
    """Exactly one of points and boxes is set."""

    points: tuple[tuple[float, float], ...] | None = None
    boxes: tuple[Box, ...] | None = None


def iou(a: Box, b: Box) -> float:
    width = min(a.x_max, b.x_max) - max(a.x_min, b.x_min)
    height = min(a.y_max, b.y_max) - max(a.y_min, b.y_min)
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    union = (a.x_max - a.x_min) * (a.y_max - a.y_min) + (b.x_max - b.x_min) * (b.y_max - b.y_min) - overlap
    return overlap / union if union > 0 else 0.0


def _count_factor(predicted: int, truth: int) -> float:
    """1 for the right number of answers, less the further off it is."""
    if predicted == truth:
        return 1.0
    return min(predicted, truth) / max(predicted, truth)


def box_reward(predicted: Sequence[Box], truth: Sequence[Box]) -> float:
    """Greedy IoU matching: the sum of matched IoUs over the larger count (both empty: 1)."""
    if not predicted and not truth:
        return 1.0
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)), reverse=True)
    used_p: set[int] = set()
    used_t: set[int] = set()
    total = 0.0
    for overlap, i, j in pairs:
        if overlap <= 0:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        total += overlap
    return total / max(len(predicted), len(truth))


def point_reward(predicted: Sequence[tuple[float, float]], truth: GroundTruth) -> float:
    """Closeness to the nearest true point, or the share of points inside a true box; times a
    penalty for the wrong number of points."""
    targets = truth.points if truth.points is not None else truth.boxes or ()
    if not predicted or not targets:
        return 1.0 if not predicted and not targets else 0.0
    if truth.points is not None:
        scores = [1 - min(1.0, min(math.dist(p, t) for t in truth.points) / POINT_RADIUS) for p in predicted]
    else:
        scores = [1.0 if any(box.contains(*p) for box in truth.boxes or ()) else 0.0 for p in predicted]
    return sum(scores) / len(scores) * _count_factor(len(predicted), len(targets))
