"""Tuning as MCP tools: finetunes, rollouts (kept server-side), train steps, checkpoints, metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import ToolAnnotations
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..client import APIConnectionError, APITimeoutError, NotFoundError, Sampling, ServerError, StreamError, tuning
from ..client.rawjson import array_items, member
from ..client.tuning import (
    DEFAULT_LR,
    Checkpoint,
    Finetune,
    checkpoint_model,
    rl_group,
    sft_group,
    sft_target,
    skill_request,
)
from ..failures import EXPECTED
from ..state import Ctx
from ..store import RolloutSet
from . import bounds
from .confirm import Answer, Confirmation, ask, can_ask, require_yes
from .progress import progress
from .results import compact
from .schemas import NonEmpty
from .skills import MaxObjects, SpatialRefs
from .toolsets import Toolbox

# ---- parameter and result models ------------------------------------------------------------

Skill = Literal["query", "point", "detect"]


def _unit(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError("a coordinate is 0-1")
    return value


# The schema states only the maximum (bounds.Coordinate); the whole range is checked here.
Unit = Annotated[bounds.Coordinate, AfterValidator(_unit)]


class XY(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: Unit
    y: Unit


class BoxIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x_min: Unit
    y_min: Unit
    x_max: Unit
    y_max: Unit


class GroundTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: list[XY] | None = Field(default=None, max_length=bounds.POINTS)
    boxes: list[BoxIn] | None = Field(default=None, max_length=bounds.POINTS)


class Metric(BaseModel):
    # A list of these rather than a {name: value} object: agent frameworks' strict schemas refuse open objects.
    model_config = ConfigDict(extra="forbid")
    name: NonEmpty = Field(max_length=bounds.NAME_CHARS)
    value: float


class RLGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rollout_set_id: str = Field(max_length=bounds.NAME_CHARS)
    rewards: list[float] | None = Field(
        default=None, max_length=16, description="One per rollout; omit for ground-truth rewards."
    )


class SFTTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str | None = Field(default=None, max_length=bounds.TEXT_CHARS)
    reasoning: str | None = Field(default=None, max_length=bounds.TEXT_CHARS)
    points: list[XY] | None = Field(default=None, max_length=bounds.POINTS)
    boxes: list[BoxIn] | None = Field(default=None, max_length=bounds.POINTS)


class SFTGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    skill: Skill
    image: str | None = None
    question: str | None = Field(default=None, max_length=bounds.TEXT_CHARS)
    object: str | None = Field(default=None, max_length=bounds.OBJECT_CHARS)
    reasoning: bool = False
    target: SFTTarget


# ---- results ----------------------------------------------------------------------------------


class FinetuneInfo(BaseModel):
    finetune_id: str
    name: str | None
    rank: int | None
    created_at_ms: int | None = None
    updated_at_ms: int | None = None


class FinetuneList(BaseModel):
    finetunes: list[FinetuneInfo]
    next_cursor: str | None
    has_more: bool


class Ok(BaseModel):
    ok: bool


class RolloutView(BaseModel):
    answer: str | None = Field(default=None, description="query: the answer.")
    reasoning: str | None = Field(default=None, description="query with reasoning: the reasoning text.")
    points: list[dict[str, float]] | None = Field(default=None, description="point: the points, 0-1.")
    objects: list[dict[str, float]] | None = Field(default=None, description="detect: the boxes, 0-1.")


class Rollouts(BaseModel):
    rollout_set_id: str = Field(description="Pass to train_step; the full rollout data stays on this server.")
    skill: Skill
    outputs: list[RolloutView] = Field(description="One per rollout, in order.")
    rewards: list[float] | None = Field(description="Ground-truth rewards per rollout, or null without ground truth.")


class StepApplied(BaseModel):
    model_config = ConfigDict(extra="allow")
    step: int | None = Field(description="The finetune's step after this one (null if the API did not say).")
    applied: bool | None
    metrics: dict[str, Any] = Field(description="Whatever else the API reported (kl, grad_norm, reward_mean, ...).")


class CheckpointInfo(BaseModel):
    checkpoint_id: str | None
    finetune_id: str
    step: int
    model: str = Field(description="Pass as `model` to the skill tools to use this checkpoint.")
    created_at_ms: int | None = None
    expires_at_ms: int | None = Field(default=None, description="When the API deletes it; null: kept.")


class CheckpointList(BaseModel):
    checkpoints: list[CheckpointInfo]
    next_cursor: str | None
    has_more: bool


class Saved(BaseModel):
    checkpoint: CheckpointInfo | None
    model: str | None = Field(description="The `model` string of the saved checkpoint.")


class LoggedMetrics(BaseModel):
    ok: bool
    step: int | None = None
    logged_count: int | None = None


# ---- parameters -------------------------------------------------------------------------------

FinetuneId = Annotated[NonEmpty, Field(max_length=bounds.NAME_CHARS, description="Finetune.")]
Limit = Annotated[int | None, Field(ge=1, le=100, description="Page size.")]
Cursor = Annotated[str | None, Field(max_length=bounds.NAME_CHARS, description="From next_cursor.")]

# ---- helpers ----------------------------------------------------------------------------------


def _finetune(f: Finetune) -> FinetuneInfo:
    return FinetuneInfo(
        finetune_id=f.finetune_id,
        name=f.name,
        rank=f.rank,
        created_at_ms=f.created_at_ms,
        updated_at_ms=f.updated_at_ms,
    )


def _checkpoint(c: Checkpoint) -> CheckpointInfo:
    return CheckpointInfo(
        checkpoint_id=c.checkpoint_id,
        finetune_id=c.finetune_id,
        step=c.step,
        model=checkpoint_model(c.finetune_id, c.step),
        created_at_ms=c.created_at_ms,
        expires_at_ms=c.expires_at_ms,
    )


def _compact(rollout: dict[str, Any]) -> RolloutView:
    output = rollout.get("output") or {}
    reasoning = output.get("reasoning")
    if isinstance(reasoning, dict):
        reasoning = reasoning.get("text")
    return RolloutView(
        answer=output.get("answer"), reasoning=reasoning, points=output.get("points"), objects=output.get("objects")
    )


def _sft_wire(group: SFTGroup, image_url: str | None) -> str:
    t = group.target
    request = skill_request(
        group.skill,
        question=group.question,
        object=group.object,
        image_url=image_url,
        reasoning=group.reasoning if group.skill == "query" else None,
    )
    return sft_group(
        request,
        sft_target(
            group.skill,
            answer=t.answer,
            reasoning=t.reasoning,
            reasoning_on=group.reasoning,
            points=[(p.x, p.y) for p in t.points] if t.points is not None else None,
            boxes=[(b.x_min, b.y_min, b.x_max, b.y_max) for b in t.boxes] if t.boxes is not None else None,
        ),
    )


async def _ask_delete_finetune(finetune_id: str, ctx: Ctx) -> Confirmation | Elicit[Confirmation]:
    if not can_ask(ctx):
        return Confirmation()
    api = ctx.request_context.lifespan_context.client.tuning
    what = f"finetune {finetune_id}"
    try:
        found = await api.get_finetune(finetune_id)
        page = await api.list_checkpoints(finetune_id, limit=100)
    except NotFoundError:
        return Confirmation()  # nothing to delete: the tool says so
    except EXPECTED:
        pass  # ask about the id alone rather than not ask
    else:
        saved = f"{len(page.checkpoints)}{'+' if page.has_more else ''}"
        what = f"finetune {found.name} ({finetune_id}, rank {found.rank}) and its {saved} saved checkpoint(s)"
    return ask(ctx, f"Delete {what}? This cannot be undone.")


async def _ask_delete_checkpoint(finetune_id: str, step: int, ctx: Ctx) -> Confirmation | Elicit[Confirmation]:
    if not can_ask(ctx):
        return Confirmation()
    api = ctx.request_context.lifespan_context.client.tuning
    warning = ""
    try:
        page = await api.list_checkpoints(finetune_id, limit=100)
    except NotFoundError:
        return Confirmation()
    except EXPECTED:
        pass
    else:
        steps = [c.step for c in page.checkpoints]
        if not page.has_more and step not in steps:
            return Confirmation()  # no such checkpoint: the tool says so
        if not page.has_more and step == max(steps):
            warning = " It is the latest one: deleting it blocks further training of the finetune."
    return ask(ctx, f"Delete the checkpoint {checkpoint_model(finetune_id, step)}?{warning}")


READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
CREATE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
ADD = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)


def register(tools: Toolbox) -> None:
    @tools.tool("tuning", read_only=False, title="Create a finetune", annotations=CREATE)
    @compact
    async def create_finetune(
        name: Annotated[
            str,
            Field(pattern=r"^[A-Za-z0-9._-]+$", max_length=128, description="Finetune name."),
        ],
        rank: Annotated[Literal[8, 16, 24, 32], Field(description="LoRA rank.")],
        ctx: Ctx,
    ) -> FinetuneInfo:
        """Create a finetune, or get the one with this name and rank."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            return _finetune(await state.client.tuning.create_finetune(name, rank))

    @tools.tool("tuning", read_only=True, title="List finetunes", annotations=READ)
    @compact
    async def list_finetunes(ctx: Ctx, limit: Limit = None, cursor: Cursor = None) -> FinetuneList:
        """List finetunes."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            page = await state.client.tuning.list_finetunes(limit=limit, cursor=cursor)
        return FinetuneList(
            finetunes=[_finetune(f) for f in page.finetunes], next_cursor=page.next_cursor, has_more=page.has_more
        )

    @tools.tool("tuning", read_only=True, title="Get a finetune", annotations=READ)
    @compact
    async def get_finetune(finetune_id: FinetuneId, ctx: Ctx) -> FinetuneInfo:
        """Get a finetune."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            return _finetune(await state.client.tuning.get_finetune(finetune_id))

    @tools.tool("tuning", read_only=False, title="Delete a finetune", annotations=DELETE)
    @compact
    async def delete_finetune(
        finetune_id: FinetuneId, ctx: Ctx, answer: Annotated[Answer, Resolve(_ask_delete_finetune)]
    ) -> Ok:
        """Delete a finetune and its checkpoints."""
        require_yes(answer, f"finetune {finetune_id} was not deleted")
        state = ctx.request_context.lifespan_context
        with state.errors():
            return Ok(ok=await state.client.tuning.delete_finetune(finetune_id))

    @tools.tool("tuning", read_only=False, title="Generate rollouts", annotations=ADD)
    @compact
    async def generate_rollouts(
        finetune_id: FinetuneId,
        skill: Annotated[Skill, Field(description="Skill.")],
        ctx: Ctx,
        image: Annotated[str | None, Field(description="Path or URL.")] = None,
        question: Annotated[str | None, Field(max_length=bounds.TEXT_CHARS, description="query: the question.")] = None,
        object: Annotated[str | None, Field(max_length=bounds.OBJECT_CHARS, description="What to find.")] = None,
        num_rollouts: Annotated[int, Field(ge=1, le=16, description="Samples.")] = 4,
        reasoning: Annotated[bool | None, Field(description="Reason first.")] = None,
        spatial_refs: SpatialRefs = None,
        temperature: Annotated[
            float | None, Field(ge=0, le=bounds.MAX_TEMPERATURE, description="Temperature (default 1).")
        ] = None,
        max_objects: MaxObjects = None,
        ground_truth: Annotated[
            GroundTruth | None, Field(description="point/detect: right answer, for rewards.")
        ] = None,
    ) -> Rollouts:
        """Sample the finetune on one example, for train_step."""
        state = ctx.request_context.lifespan_context
        if ground_truth is not None and skill == "query":
            raise ToolError("ground_truth is for point and detect; score query rollouts yourself and pass rewards")
        with state.errors():
            prepared = await state.images.load(image) if image is not None else None
            request = skill_request(
                skill,
                question=question,
                object=object,
                image_url=prepared.data_url if prepared else None,
                reasoning=reasoning if skill == "query" else None,
                spatial_refs=spatial_refs,
                settings=Sampling(temperature=temperature, max_objects=max_objects),
            )
            truth = None
            if ground_truth is not None:
                truth = tuning.ground_truth(
                    points=[(p.x, p.y) for p in ground_truth.points] if ground_truth.points is not None else None,
                    boxes=[(b.x_min, b.y_min, b.x_max, b.y_max) for b in ground_truth.boxes or ()],
                )
            answer, raw = await state.client.tuning.rollouts(
                finetune_id, request, num_rollouts=num_rollouts, ground_truth=truth
            )
        rollouts = answer.get("rollouts") or []
        rewards = answer.get("rewards")
        set_id = await state.store.add_rollout_set(
            finetune_id=finetune_id, skill=skill, response=raw, rewards=rewards, num_rollouts=len(rollouts)
        )
        await state.store.purge_rollout_sets(state.settings.rollout_ttl_hours * 3600)
        return Rollouts(rollout_set_id=set_id, skill=skill, outputs=[_compact(r) for r in rollouts], rewards=rewards)

    @tools.tool("tuning", read_only=False, title="Apply one training step", annotations=ADD)
    @compact
    async def train_step(
        finetune_id: FinetuneId,
        groups: Annotated[
            list[RLGroup | SFTGroup],
            Field(min_length=1, max_length=64, description="RL groups and/or SFT examples."),
        ],
        ctx: Ctx,
        lr: Annotated[float, Field(gt=0, le=1, description="Learning rate.")] = DEFAULT_LR,
        allow_reuse: Annotated[bool, Field(description="Allow used rollout sets.")] = False,
    ) -> StepApplied:
        """One train step. Not idempotent: if its outcome is unknown, check list_checkpoints before retrying."""
        state = ctx.request_context.lifespan_context
        used = [g.rollout_set_id for g in groups if isinstance(g, RLGroup)]
        with state.errors():
            # Claimed before anything is sent, all at once: a set listed twice, or already in another call's
            # step, is refused here rather than trained on twice.
            stored = iter(await state.store.claim_rollout_sets(used, finetune_id=finetune_id, allow_reuse=allow_reuse))
        try:
            wire: list[str] = []
            with state.errors():
                for group in groups:
                    if isinstance(group, RLGroup):
                        wire.append(_rl_wire(next(stored), group))
                    else:
                        prepared = await state.images.load(group.image) if group.image is not None else None
                        wire.append(_sft_wire(group, prepared.data_url if prepared else None))
            with state.errors():
                try:
                    async with progress(ctx, "waiting for the train step"):
                        result = await state.client.tuning.train_step(finetune_id, wire, lr)
                except (ServerError, StreamError, APIConnectionError) as exc:
                    if isinstance(exc, APIConnectionError) and not exc.sent:
                        raise  # never reached the API: an ordinary connection error
                    raise ToolError(
                        f"train_step outcome unknown: the request reached the API but no clear answer came back "
                        f"({_reason(exc)}). The step may or may not have been applied. Check list_checkpoints "
                        f"for {finetune_id} (a new step appears when one is applied) before calling train_step "
                        "again; the rollout sets were left unused."
                    ) from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await state.store.release_rollout_sets(used)
            raise
        await state.store.mark_used(used, result.step)
        extra = result.model_extra or {}
        return StepApplied(
            step=result.step, applied=result.applied, metrics={k: v for k, v in extra.items() if v is not None}
        )

    @tools.tool("tuning", read_only=True, title="List saved checkpoints", annotations=READ)
    @compact
    async def list_checkpoints(
        finetune_id: FinetuneId, ctx: Ctx, limit: Limit = None, cursor: Cursor = None
    ) -> CheckpointList:
        """A finetune's checkpoints."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            page = await state.client.tuning.list_checkpoints(finetune_id, limit=limit, cursor=cursor)
        return CheckpointList(
            checkpoints=[_checkpoint(c) for c in page.checkpoints], next_cursor=page.next_cursor, has_more=page.has_more
        )

    @tools.tool("tuning", read_only=False, title="Save the current checkpoint", annotations=CREATE)
    @compact
    async def save_checkpoint(finetune_id: FinetuneId, ctx: Ctx) -> Saved:
        """Checkpoint the current step."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            saved = await state.client.tuning.save_checkpoint(finetune_id)
        if saved.checkpoint is None:
            return Saved(checkpoint=None, model=None)
        out = _checkpoint(saved.checkpoint)
        return Saved(checkpoint=out, model=out.model)

    @tools.tool("tuning", read_only=False, title="Delete a checkpoint", annotations=DELETE)
    @compact
    async def delete_checkpoint(
        finetune_id: FinetuneId,
        step: Annotated[int, Field(ge=0, le=bounds.STEP, description="Its step.")],
        ctx: Ctx,
        answer: Annotated[Answer, Resolve(_ask_delete_checkpoint)],
    ) -> Ok:
        """Delete a checkpoint; deleting the latest stops training."""
        require_yes(answer, f"checkpoint {step} of finetune {finetune_id} was not deleted")
        state = ctx.request_context.lifespan_context
        with state.errors():
            return Ok(ok=await state.client.tuning.delete_checkpoint(finetune_id, step))

    @tools.tool("tuning", read_only=False, title="Log training metrics", annotations=ADD)
    @compact
    async def log_metrics(
        finetune_id: FinetuneId,
        step: Annotated[int, Field(ge=0, le=bounds.STEP, description="The step.")],
        metrics: Annotated[list[Metric], Field(min_length=1, max_length=100, description="Names and values.")],
        ctx: Ctx,
    ) -> LoggedMetrics:
        """Log your own metrics at a step."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            logged = await state.client.tuning.log_metrics(finetune_id, step, {m.name: m.value for m in metrics})
        return LoggedMetrics(ok=logged.ok, step=logged.step, logged_count=logged.logged_count)


def _reason(exc: Exception) -> str:
    if isinstance(exc, APITimeoutError):
        return "no answer within MOONDREAM_MCP_TRAIN_TIMEOUT"
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__.replace("API", "").replace("Error", " error").strip()


def _rl_wire(stored: RolloutSet, group: RLGroup) -> str:
    rewards = group.rewards if group.rewards is not None else stored.rewards
    if rewards is None:
        raise ToolError(f"rollout set {stored.id} has no ground-truth rewards: pass rewards (one per rollout)")
    if len(rewards) != stored.num_rollouts:
        raise ToolError(
            f"rollout set {stored.id} has {stored.num_rollouts} rollouts but {len(rewards)} rewards were given"
        )
    return rl_group(member(stored.response, "request"), array_items(stored.response, "rollouts"), list(rewards))
