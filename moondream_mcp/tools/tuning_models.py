"""What the tuning tools take and return: parameter models (points, boxes, ground truth, metrics, training groups)
and result models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# ---- parameters -------------------------------------------------------------------------------

Skill = Literal["query", "point", "detect"]


class XY(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float = Field(ge=0, le=1, description="0-1 from the left.")
    y: float = Field(ge=0, le=1, description="0-1 from the top.")


class BoxIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x_min: float = Field(ge=0, le=1, description="Left edge, 0-1.")
    y_min: float = Field(ge=0, le=1, description="Top edge, 0-1.")
    x_max: float = Field(ge=0, le=1, description="Right edge, 0-1.")
    y_max: float = Field(ge=0, le=1, description="Bottom edge, 0-1.")


class GroundTruth(BaseModel):
    """The right answer for point/detect rollouts, so the API computes each rollout's reward."""

    model_config = ConfigDict(extra="forbid")
    points: list[XY] | None = Field(default=None, description="Correct points (point skill).")
    boxes: list[BoxIn] | None = Field(default=None, description="Correct boxes (detect; or point: reward if inside).")


class Metric(BaseModel):
    # A list of these rather than a {name: value} object: agent frameworks' strict schemas refuse open objects.
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="The metric's name, e.g. eval_accuracy.")
    value: float = Field(description="Its value.")


class RLGroup(BaseModel):
    """Train on a stored rollout set with one reward per rollout."""

    model_config = ConfigDict(extra="forbid")
    rollout_set_id: str = Field(description="The id generate_rollouts returned.")
    rewards: list[float] | None = Field(
        default=None, description="One reward per rollout, same order as outputs; omit to use the ground-truth "
        "rewards computed when the rollouts were generated.")


class SFTTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str | None = Field(default=None, description="query: the correct answer.")
    reasoning: str | None = Field(default=None, description="query with reasoning on: the reasoning text.")
    points: list[XY] | None = Field(default=None, description="point: the correct points (or give boxes).")
    boxes: list[BoxIn] | None = Field(default=None, description="detect: the correct boxes; point: boxes instead.")


class SFTGroup(BaseModel):
    """Supervised example: an image, a question or object, and the right answer."""

    model_config = ConfigDict(extra="forbid")
    skill: Skill = Field(description="query, point or detect.")
    image: str | None = Field(default=None, description="Image path / URL / data URL (required for point and detect).")
    question: str | None = Field(default=None, description="query: the question.")
    object: str | None = Field(default=None, description="point/detect: what to find.")
    reasoning: bool = Field(default=False, description="query: whether the request has reasoning on.")
    target: SFTTarget = Field(description="The correct output.")


# ---- results ----------------------------------------------------------------------------------


class FinetuneOut(BaseModel):
    finetune_id: str
    name: str | None
    rank: int | None
    created_at_ms: int | None = None
    updated_at_ms: int | None = None


class FinetuneList(BaseModel):
    finetunes: list[FinetuneOut]
    next_cursor: str | None
    has_more: bool


class Ok(BaseModel):
    ok: bool


class RolloutOutput(BaseModel):
    answer: str | None = Field(default=None, description="query: the answer.")
    reasoning: str | None = Field(default=None, description="query with reasoning: the reasoning text.")
    points: list[dict[str, float]] | None = Field(default=None, description="point: the points, 0-1.")
    objects: list[dict[str, float]] | None = Field(default=None, description="detect: the boxes, 0-1.")


class RolloutsOut(BaseModel):
    rollout_set_id: str = Field(description="Pass to train_step; the full rollout data stays on this server.")
    skill: Skill
    outputs: list[RolloutOutput] = Field(description="One per rollout, in order.")
    rewards: list[float] | None = Field(description="Ground-truth rewards per rollout, or null without ground truth.")


class TrainStepOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    step: int | None = Field(description="The finetune's step after this one (null if the API did not say).")
    applied: bool | None
    metrics: dict[str, Any] = Field(description="Whatever else the API reported (kl, grad_norm, reward_mean, ...).")


class CheckpointOut(BaseModel):
    checkpoint_id: str | None
    finetune_id: str
    step: int
    model: str = Field(description="Pass as `model` to detect / point / query / caption to use this checkpoint.")
    created_at_ms: int | None = None


class CheckpointList(BaseModel):
    checkpoints: list[CheckpointOut]
    next_cursor: str | None
    has_more: bool


class SavedOut(BaseModel):
    checkpoint: CheckpointOut | None
    model: str | None = Field(description="The `model` string of the saved checkpoint.")


class MetricsOut(BaseModel):
    ok: bool
    step: int | None = None
    logged_count: int | None = None
