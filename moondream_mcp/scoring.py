"""How right an answer is, in one place: box IoU matching and F1, point hits, and answer match rules —
shared by the rewards of query rollouts and by evaluation. Pure functions; knows nothing of MCP."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max, normalized 0-1
Point = tuple[float, float]  # x, y, normalized 0-1
MatchRule = Literal["exact", "normalized", "regex", "contains"]
MATCH_RULES: tuple[str, ...] = ("exact", "normalized", "regex", "contains")

IOU_THRESHOLD = 0.5  # a detected box counts as a true positive at this IoU or more
POINT_RADIUS = 0.05  # a point this close (normalized distance) to a label point is a hit

# ---- boxes ----------------------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def match_boxes(predicted: Sequence[Box], truth: Sequence[Box]) -> list[tuple[int, int, float]]:
    """One-to-one matches (predicted index, truth index, IoU), greedily by highest IoU first; pairs that do
    not overlap are never matched. Greedy is what detection benchmarks do and is exact for the few
    boxes an image holds."""
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)), reverse=True)
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches = []
    for overlap, i, j in pairs:
        if overlap <= 0:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        matches.append((i, j, overlap))
    return matches


@dataclass(frozen=True)
class DetectScore:
    iou: float  # sum of matched IoUs over the larger of the two counts: extra and missing boxes both cost
    tp: int  # matches at IoU >= threshold
    fp: int
    fn: int


def score_detect(predicted: Sequence[Box], truth: Sequence[Box], threshold: float = IOU_THRESHOLD) -> DetectScore:
    if not predicted and not truth:
        return DetectScore(1.0, 0, 0, 0)
    matches = match_boxes(predicted, truth)
    tp = sum(1 for _, _, overlap in matches if overlap >= threshold)
    mean_iou = sum(overlap for _, _, overlap in matches) / max(len(predicted), len(truth))
    return DetectScore(mean_iou, tp, len(predicted) - tp, len(truth) - tp)


def f1(tp: int, fp: int, fn: int) -> float:
    """F1 from counts; 1.0 when there was nothing to find and nothing was found."""
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


# ---- points ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointScore:
    hit_rate: float  # hits over the larger of the two counts
    hits: int


def _inside(point: Point, box: Box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def score_point(
    predicted: Sequence[Point],
    *,
    points: Sequence[Point] | None = None,
    boxes: Sequence[Box] | None = None,
    radius: float = POINT_RADIUS,
) -> PointScore:
    """Hits matched one to one: a predicted point hits a label point within `radius`, or a label box it
    falls inside. Extra points and missed targets both lower the rate."""
    targets: Sequence[Point | Box] = points if points is not None else boxes or ()
    if not predicted and not targets:
        return PointScore(1.0, 0)
    candidates: list[tuple[float, int, int]] = []
    for i, p in enumerate(predicted):
        if points is not None:
            for j, point in enumerate(points):
                distance = math.dist(p, point)
                if distance <= radius:
                    candidates.append((distance, i, j))
            continue
        for j, box in enumerate(boxes or ()):
            if _inside(p, box):
                centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                candidates.append((math.dist(p, centre), i, j))
    used_p: set[int] = set()
    used_t: set[int] = set()
    for _, i, j in sorted(candidates):
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    hits = len(used_p)
    return PointScore(hits / max(len(predicted), len(targets)), hits)


# ---- answers --------------------------------------------------------------------------------------

_NUMBER_WORDS = {
    word: str(n)
    for n, word in enumerate(
        (
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        )
    )
}
_NUMBER_WORDS["no"] = "0"  # "no red shapes" — only as a whole answer, see normalize()
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation if c not in "%.-"})


def normalize(text: str) -> str:
    """Lower case, punctuation and articles dropped, number words as digits, spaces collapsed:
    "Two." == "2", "The orange one" == "orange one"."""
    words = text.lower().translate(_PUNCTUATION).split()
    # Dots and dashes inside numbers ("3.5", "-2") stay; at a word's edge they are punctuation.
    words = [w.strip(".-") or w for w in words]
    words = [w for w in words if w and w not in _ARTICLES]
    if len(words) == 1 and words[0] in _NUMBER_WORDS:
        return _NUMBER_WORDS[words[0]]
    return " ".join(_NUMBER_WORDS.get(w, w) if w != "no" else w for w in words)


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable regex, or None."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regex {pattern!r}: {exc}"
    return None


def choose(answer: str, choices: Sequence[str]) -> str | None:
    """The choice an answer names: the one it equals once normalized, else the only one it mentions."""
    said = normalize(answer)
    normalized = [normalize(c) for c in choices]
    for choice, norm in zip(choices, normalized):
        if said == norm:
            return choice
    mentioned = [c for c, norm in zip(choices, normalized) if norm and re.search(rf"\b{re.escape(norm)}\b", said)]
    return mentioned[0] if len(mentioned) == 1 else None


def answer_correct(answer: str, expected: str, match: str = "normalized", choices: Sequence[str] | None = None) -> bool:
    """Whether a model's answer is right by the label's rule.

    With `choices`, the answer is first mapped to the choice it names (see choose) and that choice must
    equal `expected` once normalized. Otherwise by `match`: exact (after trimming), normalized (see
    normalize), regex (`expected` must match the whole trimmed answer, ignoring case), or contains
    (the normalized answer contains the normalized label as whole words).
    """
    if choices:
        picked = choose(answer, choices)
        return picked is not None and normalize(picked) == normalize(expected)
    if match == "exact":
        return answer.strip() == expected.strip()
    if match == "regex":
        return re.fullmatch(expected, answer.strip(), re.IGNORECASE | re.DOTALL) is not None
    if match == "contains":
        label = normalize(expected)
        return bool(label) and re.search(rf"\b{re.escape(label)}\b", normalize(answer)) is not None
    return normalize(answer) == normalize(expected)
