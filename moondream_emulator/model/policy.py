"""The emulated model's skill: a systematic error on a few hard colours, scaled by a policy's error scale
that training shrinks when rewards agree with how good the rollouts were.

The base model is the policy with scale 1. It sees most colours exactly, but misplaces the boxes and
points of hard colours by HARD_COLOURS[colour] (normalized units) in a direction fixed by the image's
digest, and answers questions that hinge on a hard colour by mistaking it for another one, for some
(image, question) pairs. A finetune's policy multiplies those errors by its scale s; sampling at
temperature T adds noise of standard deviation (NOISE_FLOOR + base error) * s * T * top_p around that.

Learning: each RL group's agreement is the correlation between its rewards and the negative error of
each rollout (which the emulator knows, having sampled them). A step multiplies s by
exp(-LEARNING_SPEED * lr_factor * mean agreement): truthful rewards shrink s, shuffled ones leave it
where it was on average, inverted ones grow it.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .vision import Box, Region, Scene

HARD_COLOURS: dict[str, float] = {"orange": 0.08, "purple": 0.08}
CONFUSED_WITH: dict[str, str] = {"orange": "yellow", "purple": "blue"}
NOISE_FLOOR = 0.02  # sampling noise of every colour at s = 1, T = 1
WRONG_ANSWER_RATE = 0.5  # share of hard-colour answers the base model gets wrong

# Ten steps whose rewards agree fully with quality (ground-truth detect rewards do) take s to
# exp(-0.8) ~ 0.45 at the default lr.
LEARNING_SPEED = 0.08
DEFAULT_LR = 2e-4
LR_EXPONENT = 0.3  # lr matters, mildly: 16x the default lr learns 2.3x as fast
LR_FACTOR_RANGE = (0.25, 3.0)
SFT_AGREEMENT = 0.3  # an SFT group counts as a weak, always-positive RL signal
SCALE_RANGE = (0.05, 4.0)


def base_error(colour: str) -> float:
    return HARD_COLOURS.get(colour, 0.0)


def _unit(digest: bytes, *salt: str) -> float:
    """A number in [0, 1) fixed by the image and the salt."""
    hashed = hashlib.sha256(digest + "\0".join(salt).encode()).digest()
    return int.from_bytes(hashed[:8], "big") / 2**64


def _clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return min(high, max(low, value))


@dataclass(frozen=True)
class Sampling:
    """How a rollout is drawn; temperature 0 gives the policy's best guess, without noise."""

    temperature: float
    top_p: float
    rng: random.Random

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Policy:
    scale: float = 1.0  # 1.0: the base model; smaller is better

    def bias(self, colour: str, digest: bytes) -> tuple[float, float]:
        """The systematic offset of everything this policy places of `colour` in this image."""
        error = base_error(colour) * self.scale
        if error == 0:
            return 0.0, 0.0
        angle = 2 * math.pi * _unit(digest, "direction", colour)
        return error * math.cos(angle), error * math.sin(angle)

    def spread(self, colour: str, sampling: Sampling | None) -> float:
        """The standard deviation of sampling noise on each coordinate."""
        if sampling is None or sampling.greedy:
            return 0.0
        return (NOISE_FLOOR + base_error(colour)) * self.scale * sampling.temperature * sampling.top_p

    def point(self, region: Region, digest: bytes, sampling: Sampling | None = None) -> tuple[float, float]:
        dx, dy = self.bias(region.colour, digest)
        sigma = self.spread(region.colour, sampling)
        x, y = region.centre
        if sigma:
            assert sampling is not None
            dx, dy = dx + sampling.rng.gauss(0, sigma), dy + sampling.rng.gauss(0, sigma)
        if dx == dy == 0:
            return region.centre
        return _clamp(x + dx), _clamp(y + dy)

    def box(self, region: Region, digest: bytes, sampling: Sampling | None = None) -> Box:
        dx, dy = self.bias(region.colour, digest)
        sigma = self.spread(region.colour, sampling)
        if dx == dy == sigma == 0:
            return region.box
        edges = [region.box.x_min + dx, region.box.x_max + dx, region.box.y_min + dy, region.box.y_max + dy]
        if sigma:
            assert sampling is not None
            edges = [edge + sampling.rng.gauss(0, sigma) for edge in edges]
        x0, x1, y0, y1 = (_clamp(edge) for edge in edges)
        return Box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def confuses(self, scene: Scene, digest: bytes, question: str, sampling: Sampling | None = None) -> bool:
        """Whether this answer mistakes the scene's hard colours for others (see `confused`)."""
        if not any(r.colour in CONFUSED_WITH for r in scene.regions):
            return False
        greedy = sampling is None or sampling.greedy
        draw = _unit(digest, "answer", question) if greedy or sampling is None else sampling.rng.random()
        return draw < _clamp(WRONG_ANSWER_RATE * self.scale)


BASE = Policy()


def confused(scene: Scene) -> Scene:
    """The scene as a policy that mistakes each hard colour for its neighbour sees it."""
    regions = tuple(
        replace(r, colour=CONFUSED_WITH[r.colour]) if r.colour in CONFUSED_WITH else r for r in scene.regions
    )
    return replace(scene, regions=regions)


def agreement(rewards: Sequence[float], errors: Sequence[float]) -> float:
    """The correlation between rewards and rollout quality (-error); 0 when either does not vary."""
    n = len(rewards)
    if n < 2 or n != len(errors):
        return 0.0
    quality = [-e for e in errors]
    mean_r, mean_q = sum(rewards) / n, sum(quality) / n
    cov = sum((r - mean_r) * (q - mean_q) for r, q in zip(rewards, quality))
    var_r = sum((r - mean_r) ** 2 for r in rewards)
    var_q = sum((q - mean_q) ** 2 for q in quality)
    if var_r <= 1e-12 or var_q <= 1e-12:
        return 0.0
    return _clamp(cov / math.sqrt(var_r * var_q), -1.0, 1.0)


def lr_factor(lr: float) -> float:
    return _clamp((lr / DEFAULT_LR) ** LR_EXPONENT, *LR_FACTOR_RANGE)


def learn(scale: float, agreements: Sequence[float], lr: float = DEFAULT_LR) -> float:
    """The error scale after one step whose groups agreed this much (SFT groups: SFT_AGREEMENT)."""
    if not agreements:
        return scale
    mean = sum(agreements) / len(agreements)
    return _clamp(scale * math.exp(-LEARNING_SPEED * lr_factor(lr) * mean), *SCALE_RANGE)
