"""Checks of tuning request bodies, each raising the ApiError the real API would answer with."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from ..errors import ApiError
from ..model.policy import DEFAULT_LR
from ..model.sight import look
from ..model.vision import Box
from ..skills import validation
from .finetunes import RLGroup
from .rewards import GroundTruth
from .rollouts import SkillRequest

NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
RANKS = (8, 16, 24, 32)
MAX_ROLLOUTS = 16
PAGE_DEFAULT, PAGE_MAX = 50, 100
ROLLOUT_SKILLS = ("query", "point", "detect")
# Rollout sampling defaults (the skill endpoints' own defaults differ).
ROLLOUT_TEMPERATURE, ROLLOUT_TOP_P = 1.0, 1.0
ROLLOUT_MAX_TOKENS = {"query": 128, "point": 128, "detect": 256}
_BOX_KEYS = ("x_min", "y_min", "x_max", "y_max")


def invalid(param: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def required(body: dict[str, Any], key: str) -> Any:
    """The member `key` of a request body; a missing_field error when it is absent or null."""
    value = body.get(key)
    if value is None:
        raise invalid(key, f"{key} is required", "missing_field")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return _number(value) and float(value).is_integer()


@contextmanager
def within(prefix: str) -> Iterator[None]:
    """Errors from checks of a nested object name where it sits ("request.object", "groups[1].request")."""
    try:
        yield
    except ApiError as error:
        error.param = f"{prefix}.{error.param}" if error.param else prefix
        error.message = f"{prefix}: {error.message}"
        raise


def json_object(body: Any, name: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, f"{name} must be a JSON object", code="invalid_json")
    return body


def name(body: dict[str, Any]) -> str:
    value = required(body, "name")
    if not isinstance(value, str) or NAME.fullmatch(value) is None:
        raise invalid("name", "name must be 1-128 letters, digits, '.', '_' or '-'")
    return value


def rank(body: dict[str, Any]) -> int:
    value = required(body, "rank")
    if not (_integer(value) and int(value) in RANKS):
        raise invalid("rank", "rank must be one of 8, 16, 24, 32")
    return int(value)


def page(params: Mapping[str, str]) -> tuple[int, str | None]:
    """`limit` (1-100, default 50) and `cursor` from a query string."""
    raw = params.get("limit")
    try:
        limit = PAGE_DEFAULT if raw is None else int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= PAGE_MAX:
        raise invalid("limit", f"limit must be an integer from 1 to {PAGE_MAX}")
    cursor = params.get("cursor")
    return limit, cursor or None


def finetune_id(body: dict[str, Any]) -> str:
    value = required(body, "finetune_id")
    if not isinstance(value, str) or not value:
        raise invalid("finetune_id", "finetune_id must be a non-empty string")
    return value


def num_rollouts(body: dict[str, Any]) -> int:
    value = required(body, "num_rollouts")
    if not (_integer(value) and 1 <= value <= MAX_ROLLOUTS):
        raise invalid("num_rollouts", f"num_rollouts must be an integer from 1 to {MAX_ROLLOUTS}")
    return int(value)


def step_number(raw: str) -> int:
    if not raw.isdigit():
        raise invalid("step", "step must be a non-negative integer")
    return int(raw)


async def skill_request(value: Any, prefix: str) -> SkillRequest:
    """A rollout or SFT request, checked field by field as the skill endpoints check theirs."""
    with within(prefix):
        body = json_object(value, "the request")
        skill = required(body, "skill")
        if skill not in ROLLOUT_SKILLS:
            raise invalid("skill", "skill must be one of query, point, detect")
        if skill == "query":
            text = validation.text(body, "question")
            data = validation.image_bytes(body, required=False)
            validation.spatial_refs(body)
        else:
            text = validation.text(body, "object")
            data = validation.image_bytes(body, required=True)
        reasoning = validation.flag(body, "reasoning") if skill == "query" else False
        settings = validation.settings(body)
        settings = replace(
            settings,
            temperature=ROLLOUT_TEMPERATURE if settings.temperature is None else settings.temperature,
            top_p=ROLLOUT_TOP_P if settings.top_p is None else settings.top_p,
            max_tokens=settings.max_tokens or ROLLOUT_MAX_TOKENS[skill],
        )
        sight = await look(data) if data is not None else None
    return SkillRequest(skill, body, text, sight, reasoning, settings)


def _points(value: Any, param: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or not all(
        isinstance(p, dict) and set(p) == {"x", "y"} and all(_number(v) and 0 <= v <= 1 for v in p.values())
        for p in value
    ):
        raise invalid(param, f"{param} must be a list of {{x, y}} with values in 0-1")
    return tuple((float(p["x"]), float(p["y"])) for p in value)


def _boxes(value: Any, param: str) -> tuple[Box, ...]:
    if not isinstance(value, list) or not all(
        isinstance(b, dict)
        and set(b) == set(_BOX_KEYS)
        and all(_number(v) and 0 <= v <= 1 for v in b.values())
        and b["x_min"] <= b["x_max"]
        and b["y_min"] <= b["y_max"]
        for b in value
    ):
        raise invalid(param, f"{param} must be a list of {{x_min, y_min, x_max, y_max}} with values in 0-1")
    return tuple(Box(*(float(b[k]) for k in _BOX_KEYS)) for b in value)


def _only(value: dict[str, Any], allowed: set[str], param: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(param, f"{param} has unexpected fields: {', '.join(unknown)}")


def ground_truth(value: Any, skill: str) -> GroundTruth | None:
    if value is None:
        return None
    if skill == "query":
        raise invalid("ground_truth", "ground_truth is for point and detect; score query rollouts yourself")
    if not isinstance(value, dict):
        raise invalid("ground_truth", "ground_truth must be an object")
    _only(value, {"points", "boxes"}, "ground_truth")
    has_points, has_boxes = value.get("points") is not None, value.get("boxes") is not None
    if skill == "point":
        if has_points == has_boxes:
            raise invalid("ground_truth", "point ground_truth needs exactly one of points or boxes")
        if has_points:
            return GroundTruth(points=_points(value["points"], "ground_truth.points"))
        return GroundTruth(boxes=_boxes(value["boxes"], "ground_truth.boxes"))
    if not has_boxes or has_points:
        raise invalid("ground_truth", "detect ground_truth needs boxes (and no points)")
    return GroundTruth(boxes=_boxes(value["boxes"], "ground_truth.boxes"))


def lr(body: dict[str, Any]) -> float:
    value = body.get("lr")
    if value is None:
        return DEFAULT_LR
    if not (_number(value) and value > 0):
        raise invalid("lr", "lr must be a number > 0")
    return float(value)


def groups(body: dict[str, Any]) -> list[Any]:
    value = required(body, "groups")
    if not isinstance(value, list) or not value:
        raise invalid("groups", "groups must be a non-empty list")
    return value


def mode(group: Any, index: int) -> str:
    """ "rl" or "sft"; a group without a mode (as older docs show) is RL when it has rollouts and rewards."""
    param = f"groups[{index}]"
    group = json_object(group, param)
    value = group.get("mode")
    if value is None:
        if "rollouts" in group and "rewards" in group:
            return "rl"
        raise invalid(f"{param}.mode", f"{param}: mode must be rl or sft")
    if value not in ("rl", "sft"):
        raise invalid(f"{param}.mode", f"{param}: mode must be rl or sft")
    return value


def rl_group(group: dict[str, Any], index: int) -> RLGroup:
    param = f"groups[{index}]"
    _only(group, {"mode", "request", "rollouts", "rewards"}, param)
    request = group.get("request")
    if not isinstance(request, dict):
        raise invalid(f"{param}.request", f"{param}: request must be the object /rollouts echoed")
    rollouts = group.get("rollouts")
    if not isinstance(rollouts, list) or not rollouts or not all(isinstance(r, dict) for r in rollouts):
        raise invalid(f"{param}.rollouts", f"{param}: rollouts must be a non-empty list of rollouts")
    rewards = group.get("rewards")
    if not isinstance(rewards, list) or not all(_number(r) for r in rewards):
        raise invalid(f"{param}.rewards", f"{param}: rewards must be a list of numbers")
    if len(rewards) != len(rollouts):
        raise invalid(
            f"{param}.rewards",
            f"{param}: {len(rollouts)} rollouts but {len(rewards)} rewards: give one reward per rollout",
        )
    return RLGroup(request, rollouts, [float(r) for r in rewards])


async def sft_group(group: dict[str, Any], index: int) -> None:
    param = f"groups[{index}]"
    _only(group, {"mode", "request", "target"}, param)
    request = await skill_request(group.get("request"), f"{param}.request")
    with within(param):
        target(group.get("target"), request)


def target(value: Any, request: SkillRequest) -> None:
    """SFT targets: query {answer} (+ reasoning {text, grounding?} exactly when the request reasons), point
    exactly one of points / boxes, detect boxes."""
    if value is None:
        raise invalid("target", "target is required", "missing_field")
    if not isinstance(value, dict):
        raise invalid("target", "target must be an object")
    if request.skill == "query":
        _only(value, {"answer", "reasoning"}, "target")
        answer = value.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise invalid("target.answer", "target.answer must be a non-empty string")
        reasoning = value.get("reasoning")
        if request.reasoning != (reasoning is not None):
            raise invalid(
                "target.reasoning",
                "target.reasoning ({text, grounding?}) must be given exactly when the request has reasoning on",
            )
        if reasoning is not None:
            _sft_reasoning(reasoning)
        return
    if request.skill == "point":
        _only(value, {"points", "boxes"}, "target")
        has_points, has_boxes = value.get("points") is not None, value.get("boxes") is not None
        if has_points == has_boxes:
            raise invalid("target", "a point target needs exactly one of points or boxes")
        if has_points:
            _points(value["points"], "target.points")
        else:
            _boxes(value["boxes"], "target.boxes")
        return
    _only(value, {"boxes"}, "target")
    if value.get("boxes") is None:
        raise invalid("target.boxes", "a detect target needs boxes", "missing_field")
    _boxes(value["boxes"], "target.boxes")


def _sft_reasoning(value: Any) -> None:
    """{text, grounding?}: grounding as a query answers it, spans of `text` with the points they looked at."""
    rule = "target.reasoning must be {text: <non-empty string>, grounding?: [{start_idx, end_idx, points}]}"
    if not (
        isinstance(value, dict)
        and set(value) <= {"text", "grounding"}
        and isinstance(value.get("text"), str)
        and value["text"].strip()
    ):
        raise invalid("target.reasoning", rule)
    grounding = value.get("grounding")
    if grounding is None:
        return
    if not isinstance(grounding, list):
        raise invalid("target.reasoning.grounding", rule)
    length = len(value["text"])
    for span in grounding:
        if not (
            isinstance(span, dict)
            and set(span) == {"start_idx", "end_idx", "points"}
            and _integer(span["start_idx"])
            and _integer(span["end_idx"])
            and 0 <= span["start_idx"] <= span["end_idx"] <= length
            and isinstance(span["points"], list)
            and all(
                isinstance(p, list) and len(p) == 2 and all(_number(v) and 0 <= v <= 1 for v in p)
                for p in span["points"]
            )
        ):
            raise invalid(
                "target.reasoning.grounding",
                "target.reasoning.grounding must be [{start_idx, end_idx, points: [[x, y], ...]}] with indices "
                "into text and points in 0-1",
            )


def metrics(body: dict[str, Any]) -> tuple[int, dict[str, float]]:
    step = required(body, "step")
    if not (_integer(step) and step >= 0):
        raise invalid("step", "step must be an integer >= 0")
    value = required(body, "metrics")
    if not isinstance(value, dict) or not value:
        raise invalid("metrics", "metrics must be an object of name: number, with at least one")
    bad = sorted(k for k, v in value.items() if not _number(v))
    if bad:
        raise invalid("metrics", f"metrics must be numbers; not: {', '.join(bad)}")
    return int(step), {k: float(v) for k, v in value.items()}
