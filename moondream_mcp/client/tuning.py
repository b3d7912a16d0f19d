"""The tuning API — finetunes, rollouts, train steps, checkpoints, metrics: typed results and calls."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import APIClient, parse, segment
from .errors import InvalidRequestError
from .skills import Sampling

BASE_MODEL = "moondream3-preview"
# The official SDK always sends lr, 2e-4 (its quickstart's value); the older HTTP reference gives the server's
# default as 0.002, ten times more. Sending it always keeps a step's size from depending on which is right.
DEFAULT_LR = 2e-4
# Train steps run tens of seconds to minutes; the official SDK waits 900 s for one.
DEFAULT_TRAIN_TIMEOUT = 900.0


def checkpoint_model(finetune_id: str, step: int) -> str:
    """The `model` string the skill endpoints take for a saved checkpoint."""
    return f"{BASE_MODEL}/{finetune_id}@{step}"


class _Result(BaseModel):
    # Built with the first answer parsed, not at start-up.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class Finetune(_Result):
    finetune_id: str
    name: str | None = None
    rank: int | None = None
    created_at_ms: int | None = None
    updated_at_ms: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: Any) -> Any:
        # GET /finetunes/{id} answers either flat or as {"finetune": {...}}.
        if isinstance(value, dict) and isinstance(value.get("finetune"), dict):
            return value["finetune"]
        return value


class FinetunePage(_Result):
    finetunes: list[Finetune] = Field(default_factory=list)
    next_cursor: str | None = None
    has_more: bool = False


class Checkpoint(_Result):
    checkpoint_id: str | None = None
    finetune_id: str
    step: int
    created_at_ms: int | None = None
    updated_at_ms: int | None = None
    expires_at_ms: int | None = None


class CheckpointPage(_Result):
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    next_cursor: str | None = None
    has_more: bool = False


class TrainStepResult(BaseModel):
    # Older servers answer {}; newer ones add metrics over time: keep whatever arrives.
    model_config = ConfigDict(extra="allow")

    step: int | None = None
    applied: bool | None = None


class SavedCheckpoint(_Result):
    ok: bool = True
    checkpoint: Checkpoint | None = None


class MetricsLogged(_Result):
    ok: bool = True
    step: int | None = None
    logged_count: int | None = None


# ---- wire bodies: every request the tuning API takes is built here, and only here ---------------

Corners = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max, normalized 0-1


def _box(box: Corners) -> dict[str, float]:
    return dict(zip(("x_min", "y_min", "x_max", "y_max"), box, strict=True))


def skill_request(
    skill: str,
    *,
    image_url: str | None = None,
    question: str | None = None,
    object: str | None = None,
    reasoning: bool | None = None,
    spatial_refs: list[list[float]] | None = None,
    settings: Sampling | None = None,
) -> dict[str, Any]:
    """The `request` of a rollout or SFT group: the skill call it stands for. Refused before sending when
    a piece the skill needs is missing (query: a question; point and detect: an object and an image), or
    given where the docs do not take it (spatial_refs: query only)."""
    if skill == "query":
        if not question:
            raise InvalidRequestError("the query skill needs a question")
        request: dict[str, Any] = {"skill": "query", "question": question}
        if image_url is not None:
            request["image_url"] = image_url
        if reasoning is not None:
            request["reasoning"] = reasoning
        if spatial_refs is not None:
            request["spatial_refs"] = spatial_refs
    else:
        if spatial_refs is not None:
            raise InvalidRequestError("rollouts take spatial_refs for the query skill only")
        if not object:
            raise InvalidRequestError(f"the {skill} skill needs an object")
        if image_url is None:
            raise InvalidRequestError(f"the {skill} skill needs an image")
        request = {"skill": skill, "object": object, "image_url": image_url}
    if settings is not None and (wire := settings.wire()):
        request["settings"] = wire
    return request


def ground_truth(
    *, points: list[tuple[float, float]] | None = None, boxes: list[Corners] | None = None
) -> dict[str, Any]:
    """What the API scores point and detect rollouts against: points, or boxes (for point: inside = hit)."""
    if points is not None:
        return {"points": [{"x": x, "y": y} for x, y in points]}
    return {"boxes": [_box(b) for b in boxes or ()]}


def sft_target(
    skill: str,
    *,
    answer: str | None = None,
    reasoning: str | None = None,
    reasoning_on: bool = False,
    points: list[tuple[float, float]] | None = None,
    boxes: list[Corners] | None = None,
) -> dict[str, Any]:
    """An SFT group's target, checked against the contract's rules before anything is sent."""
    if skill == "query":
        if not answer:
            raise InvalidRequestError("an SFT query group needs target.answer")
        if reasoning_on != (reasoning is not None):
            raise InvalidRequestError("target.reasoning must be given exactly when the query group has reasoning on")
        target: dict[str, Any] = {"answer": answer}
        if reasoning is not None:
            target["reasoning"] = {"text": reasoning}
        return target
    if skill == "point":
        if (points is None) == (boxes is None):
            raise InvalidRequestError("an SFT point group needs exactly one of target.points or target.boxes")
        return ground_truth(points=points, boxes=boxes)
    if boxes is None or points is not None or answer is not None:
        raise InvalidRequestError("an SFT detect group needs target.boxes (and nothing else)")
    return ground_truth(boxes=boxes)


def rl_group(request: str, rollouts: list[str], rewards: list[float]) -> str:
    """An RL group as JSON text: the echoed request and rollouts exactly as received, one reward each."""
    return f'{{"mode":"rl","request":{request},"rollouts":[{",".join(rollouts)}],"rewards":{json.dumps(rewards)}}}'


def sft_group(request: dict[str, Any], target: dict[str, Any]) -> str:
    """An SFT group as JSON text."""
    return json.dumps({"mode": "sft", "request": request, "target": target}, separators=(",", ":"))


def _page(limit: int | None, cursor: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}


class Tuning:
    """Everything under /tuning."""

    def __init__(self, api: APIClient, *, train_timeout: float = DEFAULT_TRAIN_TIMEOUT) -> None:
        self._api = api
        self._train_timeout = train_timeout

    async def create_finetune(self, name: str, rank: int) -> Finetune:
        body = await self._api.request("POST", "tuning/finetunes", json={"name": name, "rank": rank})
        return parse(Finetune, {"name": name, "rank": rank, **body})

    async def list_finetunes(self, *, limit: int | None = None, cursor: str | None = None) -> FinetunePage:
        return parse(FinetunePage, await self._api.request("GET", "tuning/finetunes", params=_page(limit, cursor)))

    async def get_finetune(self, finetune_id: str) -> Finetune:
        return parse(Finetune, await self._api.request("GET", f"tuning/finetunes/{segment(finetune_id)}"))

    async def delete_finetune(self, finetune_id: str) -> bool:
        body = await self._api.request("DELETE", f"tuning/finetunes/{segment(finetune_id)}")
        return bool(body.get("ok", True)) if isinstance(body, dict) else True

    async def rollouts(
        self,
        finetune_id: str,
        request: dict[str, Any],
        *,
        num_rollouts: int,
        ground_truth: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], str]:
        """POST /rollouts for a `request` from skill_request (and `ground_truth` from ground_truth(), for
        rewards); returns the parsed response and its raw text, kept to send back unchanged."""
        body: dict[str, Any] = {"finetune_id": finetune_id, "num_rollouts": num_rollouts, "request": request}
        if ground_truth is not None:
            body["ground_truth"] = ground_truth
        return await self._api.request_raw("POST", "tuning/rollouts", json=body)

    async def train_step(self, finetune_id: str, groups: list[str], lr: float = DEFAULT_LR) -> TrainStepResult:
        """POST /train_step with groups given as JSON text (see rl_group / sft_group), waiting up to the
        train timeout for the answer.

        Retried only when the request certainly never reached the server: a step is not idempotent.
        """
        parts = [f'"finetune_id":{json.dumps(finetune_id)}', f'"groups":[{",".join(groups)}]', f'"lr":{json.dumps(lr)}']
        answer = await self._api.request(
            "POST",
            "tuning/train_step",
            content=("{" + ",".join(parts) + "}").encode(),
            headers={"Content-Type": "application/json"},
            retry="unsent",
            read_timeout=self._train_timeout,
        )
        return parse(TrainStepResult, answer if isinstance(answer, dict) else {})

    async def log_metrics(self, finetune_id: str, step: int, metrics: dict[str, float]) -> MetricsLogged:
        return parse(
            MetricsLogged,
            await self._api.request(
                "POST", f"tuning/finetunes/{segment(finetune_id)}/metrics", json={"step": step, "metrics": metrics}
            ),
        )

    async def list_checkpoints(
        self, finetune_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> CheckpointPage:
        return parse(
            CheckpointPage,
            await self._api.request(
                "GET", f"tuning/finetunes/{segment(finetune_id)}/checkpoints", params=_page(limit, cursor)
            ),
        )

    async def save_checkpoint(self, finetune_id: str) -> SavedCheckpoint:
        return parse(
            SavedCheckpoint,
            await self._api.request("POST", f"tuning/finetunes/{segment(finetune_id)}/checkpoints/save"),
        )

    async def delete_checkpoint(self, finetune_id: str, step: int) -> bool:
        body = await self._api.request("DELETE", f"tuning/finetunes/{segment(finetune_id)}/checkpoints/{segment(step)}")
        return bool(body.get("ok", True)) if isinstance(body, dict) else True
