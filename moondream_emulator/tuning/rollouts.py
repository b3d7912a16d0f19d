"""Sampling one rollout from a policy, and writing it as the API does: an output plus opaque,
token-like training metadata, as JSON text built by hand.

The metadata is derived from the output (coordinates quantized to 0-1023, words hashed to token ids)
plus a random salt, so no two rollouts are alike. Some of its numbers are written as Python would
never write them (`1.000`, `-3.512e-01`), so a client that parses and re-serializes a rollout instead
of sending back the bytes it received is caught.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from ..model import answers
from ..model.policy import Policy, Sampling, confused
from ..model.sight import Sight, matching
from ..model.vision import Box
from ..skills.validation import Settings
from .rewards import iou

RolloutSkill = Literal["query", "point", "detect"]
VOCABULARY = 51_200
COORD_BINS = 1024
_COORD_BASE = VOCABULARY - COORD_BINS  # the last ids of the vocabulary stand for coordinate bins
_EOS = 0
_ANSWER_SEPARATOR = 3
_TOKENS_PER_POINT = 2  # x, y
_TOKENS_PER_BOX = 3  # centre x, centre y, size
_SALT_LENGTH = (12, 48)


@dataclass(frozen=True)
class SkillRequest:
    """A checked rollout (or SFT) request: what to ask, of which image, sampled how."""

    skill: RolloutSkill
    body: dict[str, Any]  # as received
    text: str  # the question (query) or the object (point, detect)
    sight: Sight | None
    reasoning: bool
    settings: Settings  # every field set: the API's rollout defaults filled in


@dataclass
class Sampled:
    """One rollout's output, how far it is from the truth (0 is perfect), and its token-like trace."""

    output: dict[str, Any]
    finish_reason: str
    error: float
    points: list[tuple[float, float]] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)
    thinking_tokens: list[int] = field(default_factory=list)
    coords: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)


def sample(request: SkillRequest, policy: Policy, rng: random.Random) -> Sampled:
    settings = request.settings
    assert settings.temperature is not None and settings.top_p is not None
    sampling = Sampling(settings.temperature, settings.top_p, rng)
    if request.skill == "query":
        return _query(request, policy, sampling)
    assert request.sight is not None
    regions = matching(request.sight.scene, request.text)[: settings.max_objects]
    per_item = _TOKENS_PER_POINT if request.skill == "point" else _TOKENS_PER_BOX
    fits = max(0, ((settings.max_tokens or 1) - 1) // per_item)  # room left for the end-of-answer token
    finish_reason = "length" if len(regions) > fits else "stop"
    regions = regions[:fits]
    digest = request.sight.digest
    if request.skill == "point":
        points = [policy.point(r, digest, sampling) for r in regions]
        errors = [math.dist(p, r.centre) for p, r in zip(points, regions)]
        out = Sampled(
            {"points": [{"x": _round(x), "y": _round(y)} for x, y in points]},
            finish_reason,
            _mean(errors),
            points=points,
        )
        out.coords = [_bin(v) for p in points for v in p]
        out.answer_tokens = [_COORD_BASE + c for c in out.coords]
    else:
        boxes = [policy.box(r, digest, sampling) for r in regions]
        errors = [1 - iou(b, r.box) for b, r in zip(boxes, regions)]
        objects = [{key: _round(v) for key, v in b.as_dict().items()} for b in boxes]
        out = Sampled({"objects": objects}, finish_reason, _mean(errors), boxes=boxes)
        out.coords = [_bin(v) for b in boxes for v in ((b.x_min + b.x_max) / 2, (b.y_min + b.y_max) / 2)]
        out.sizes = [_bin(v) for b in boxes for v in (b.x_max - b.x_min, b.y_max - b.y_min)]
        out.answer_tokens = [
            _COORD_BASE + c
            for i in range(len(boxes))
            for c in (*out.coords[2 * i : 2 * i + 2], _size_token(out.sizes[2 * i : 2 * i + 2]))
        ]
    out.answer_tokens.append(_EOS)
    out.thinking_tokens = _salt(rng)
    return out


def _query(request: SkillRequest, policy: Policy, sampling: Sampling) -> Sampled:
    question = request.text
    if request.sight is None:
        answer, seen, error = answers.NO_IMAGE_ANSWER, None, 0.0
    else:
        scene = request.sight.scene
        right = answers.answer(question, scene)
        seen = confused(scene) if policy.confuses(scene, request.sight.digest, question, sampling) else scene
        answer = answers.answer(question, seen)
        error = 0.0 if answer == right else 1.0
    answer, finish_reason = answers.limit(answer, request.settings.max_tokens)
    output: dict[str, Any] = {"answer": answer}
    out = Sampled(output, finish_reason, error)
    out.thinking_tokens = _salt(sampling.rng)
    if request.reasoning:
        reasoning = answers.reasoning(question, seen, answer)
        output["reasoning"] = reasoning.as_dict()
        out.thinking_tokens += _words(reasoning.text) + [_ANSWER_SEPARATOR]
        out.coords = [_bin(v) for g in reasoning.grounding for point in g["points"] for v in point]
    out.answer_tokens = _words(answer) + [_EOS]
    return out


def wire_text(skill: RolloutSkill, sampled: Sampled, settings: Settings, rng: random.Random) -> str:
    """The rollout as JSON text, keys in the API's order."""
    logprobs = [-(0.001 + rng.expovariate(4.0)) for _ in sampled.answer_tokens]
    parts = [
        f'"skill":{json.dumps(skill)}',
        f'"output":{json.dumps(sampled.output, separators=(",", ":"))}',
        f'"finish_reason":{json.dumps(sampled.finish_reason)}',
        f'"answer_tokens":{_ints(sampled.answer_tokens)}',
        f'"thinking_tokens":{_ints(sampled.thinking_tokens)}',
        f'"has_answer_separator":{"true" if _ANSWER_SEPARATOR in sampled.thinking_tokens else "false"}',
        f'"coords":{_ints(sampled.coords)}',
        f'"sizes":{_ints(sampled.sizes)}',
        # Written as json.dumps never would: re-serializing changes these bytes.
        f'"logprobs":[{",".join(f"{v:.3e}" for v in logprobs)}]',
        f'"sampling":{{"temperature":{settings.temperature:.3f},"top_p":{settings.top_p:.3f}}}',
    ]
    return "{" + ",".join(parts) + "}"


def _round(value: float) -> float:
    return round(value, 6)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _bin(value: float) -> int:
    return min(COORD_BINS - 1, max(0, round(value * (COORD_BINS - 1))))


def _size_token(size: list[int]) -> int:
    # Width and height share one token: a coarse 32 x 32 grid of sizes.
    width, height = size
    return (width // 32) * 32 + height // 32


def _ints(values: list[int]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def _words(text: str) -> list[int]:
    """Token ids for text: each word hashed into the text part of the vocabulary, long words split."""
    ids = []
    for word in answers.tokens(text):
        for start in range(0, max(1, len(word)), 4):
            digest = hashlib.blake2b(word[start : start + 4].encode(), digest_size=4).digest()
            ids.append(4 + int.from_bytes(digest, "big") % (_COORD_BASE - 4))
    return ids


def _salt(rng: random.Random) -> list[int]:
    return [rng.randrange(4, _COORD_BASE) for _ in range(rng.randint(*_SALT_LENGTH))]
