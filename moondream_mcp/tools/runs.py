"""Training run tools: start_training, training_status, stop_training and list_runs, with their results and a
run's status (also the body of its log resource). Thin: the logic is in training.py and charts.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from .. import charts, datasets, training
from ..client.tuning import BASE_MODEL, DEFAULT_LR, checkpoint_model
from ..failures import EXPECTED
from ..pictures import Picture
from ..state import AppState, Ctx
from ..store import Run, RunCheckpoint, RunEval, RunStep
from . import bounds
from .confirm import Answer, Confirmation, ask, can_ask, require_yes
from .dataset_checks import DatasetPath, read_dataset, refuse
from .pictures import SaveTo, with_picture
from .progress import progress
from .results import compact, structured
from .schemas import NonEmpty
from .toolsets import Toolbox

RUN_URI = "moondream://runs/{run_id}"

# ---- parameters -------------------------------------------------------------------------------

RunId = Annotated[NonEmpty, Field(max_length=bounds.NAME_CHARS, description="Run id.")]

# ---- results ----------------------------------------------------------------------------------


class StepOut(BaseModel):
    step: int = Field(description="Step within the run, 1..total_steps.")
    mode: str = Field(description="rl (rollouts rewarded) or sft (labels as targets).")
    api_step: int = Field(description="The finetune's step number as the API reported it.")
    reward_mean: float | None
    reward_std: float | None
    seconds: float | None = Field(description="Rollouts + train_step; null for a step recovered after a restart.")


class EvalOut(BaseModel):
    step: int
    model: str = Field(description="The checkpoint evaluated.")
    score: float | None = Field(
        description="Mean example score, 0-1: IoU (detect), hit rate (point), accuracy (query)."
    )
    metrics: dict[str, dict[str, int | float]] = Field(
        description="Per skill: detect mean_iou, f1, precision, recall; point hit_rate; query accuracy."
    )
    errors: int
    output: str | None = Field(description="The per-example JSONL of this evaluation.")


class CheckpointInfo(BaseModel):
    step: int
    api_step: int
    model: str = Field(description="Pass as `model` to detect / point / query / caption, or to evaluate.")
    best: bool = Field(description="Best eval score of the run so far.")
    last: bool = Field(description="The run's final step.")
    score: float | None


class RunStatus(BaseModel):
    run_id: str
    state: Literal["running", "completed", "failed", "stopped"]
    finetune_id: str
    dataset: str
    step: int = Field(description="Steps done.")
    total_steps: int
    config: dict[str, Any]
    steps: list[StepOut] = Field(description="The most recent steps (see `history`), oldest first.")
    evals: list[EvalOut]
    checkpoints: list[CheckpointInfo] = Field(description="Saved checkpoints the run keeps.")
    best_model: str | None = Field(description="The best checkpoint's model string, once one is evaluated.")
    last_model: str | None = Field(description="The final checkpoint's model string, once the run ends.")
    elapsed_s: float
    eta_s: float | None = Field(description="Estimated seconds left; null until a step is timed.")
    stop_requested: bool
    last_error: str | None
    log: str = Field(description="The run's full log as a resource (JSON).")
    message: str
    picture: str | None = Field(default=None, description="chart=true: where the chart was saved.")


class RunSummary(BaseModel):
    run_id: str
    state: str
    finetune_id: str
    dataset: str
    step: int
    total_steps: int
    best_score: float | None
    best_model: str | None
    created_at_ms: int = Field(description="Unix time in milliseconds.")
    last_error: str | None


class RunList(BaseModel):
    runs: list[RunSummary] = Field(description="Newest first.")


class PlannedCalls(BaseModel):
    rollouts: int = Field(description="/rollouts calls, at most (auto: if every step is RL).")
    rollouts_at_least: int
    train_steps: int
    evaluation: int = Field(description="Skill calls scoring checkpoints (and auto's baseline) on the eval split.")
    checkpoints: int = Field(description="Checkpoint saves and deletes, at most.")
    total: int = Field(description="API calls in all, at most.")


class RunStarted(BaseModel):
    run_id: str | None = Field(description="Null for a dry run.")
    finetune_id: str | None
    state: str = Field(description="running, or planned for a dry run.")
    mode: str
    total_steps: int
    train_examples: int
    eval_examples: int
    calls: PlannedCalls = Field(description="The API calls the run will make.")
    log: str | None
    message: str


# ---- helpers ----------------------------------------------------------------------------------


async def run_status(state: AppState, run: Run, history: int | None) -> RunStatus:
    """A run's status from the store (also the body of its log resource, with history=None: every step)."""
    steps = await state.store.run_steps(run.id)
    evals = await state.store.run_evals(run.id)
    return _status(run, steps, evals, await state.store.run_checkpoints(run.id), history)


def _status(
    run: Run, steps: list[RunStep], evals: list[RunEval], checkpoints: list[RunCheckpoint], history: int | None
) -> RunStatus:
    scores = {e.api_step: e.score for e in evals}
    elapsed, eta = training.timing(run, steps, [e.seconds for e in evals if e.seconds is not None])
    kept = [
        CheckpointInfo(
            step=c.step,
            api_step=c.api_step,
            model=checkpoint_model(run.finetune_id, c.api_step),
            best=c.best,
            last=c.last,
            score=scores.get(c.api_step),
        )
        for c in checkpoints
        if not c.deleted and (c.best or c.last or c.evaluated)
    ]
    best = next((c.model for c in kept if c.best), None)
    last = next((c.model for c in kept if c.last), None)
    shown = steps if history is None else steps[-history:] if history else []
    return RunStatus(
        run_id=run.id,
        state=run.state,
        finetune_id=run.finetune_id,
        dataset=run.dataset,
        step=run.steps_done,
        total_steps=run.total_steps,
        config=run.config,
        steps=[
            StepOut(
                step=s.step,
                mode=s.mode,
                api_step=s.api_step,
                reward_mean=_round(s.reward_mean),
                reward_std=_round(s.reward_std),
                seconds=s.seconds,
            )
            for s in shown
        ],
        evals=[
            EvalOut(
                step=e.step,
                model=checkpoint_model(run.finetune_id, e.api_step) if e.api_step else BASE_MODEL,
                score=_round(e.score),
                metrics=e.metrics,
                errors=e.errors,
                output=e.output,
            )
            for e in evals
        ],
        checkpoints=kept,
        best_model=best,
        last_model=last,
        elapsed_s=round(elapsed, 1),
        eta_s=None if eta is None else round(eta, 1),
        stop_requested=run.stop_requested,
        last_error=run.error,
        log=RUN_URI.format(run_id=run.id),
        message=_message(run, steps, evals, best, last),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _message(run: Run, steps: list[RunStep], evals: list[RunEval], best: str | None, last: str | None) -> str:
    parts = [f"{run.state}: step {run.steps_done}/{run.total_steps}"]
    rewards = [s.reward_mean for s in steps if s.reward_mean is not None]
    if rewards:
        parts.append(f"reward {rewards[-1]:.3f} (step 1: {rewards[0]:.3f})")
    scored = [e for e in evals if e.score is not None]
    if scored and run.best_score is not None:
        parts.append(f"best eval score {run.best_score:.3f} ({best})" if best else f"best eval {run.best_score:.3f}")
    if run.state == "completed":
        parts.append(f"use model={best or last} with detect / point / query, or compare with evaluate")
    elif run.state == "failed":
        parts.append(f"error: {run.error}")
    elif run.stop_requested and run.state == "running":
        parts.append("stopping after the current step")
    return "; ".join(parts) + "."


def _summary(run: Run) -> RunSummary:
    return RunSummary(
        run_id=run.id,
        state=run.state,
        finetune_id=run.finetune_id,
        dataset=run.dataset,
        step=run.steps_done,
        total_steps=run.total_steps,
        best_score=_round(run.best_score),
        best_model=checkpoint_model(run.finetune_id, run.best_api_step) if run.best_api_step is not None else None,
        created_at_ms=round(run.created_at * 1000),
        last_error=run.error,
    )


async def _find_run(state: AppState, run_id: str) -> Run:
    run = await state.store.run(run_id.strip())
    if run is None:
        raise ToolError(f"no training run {run_id}: list_runs shows the runs this server knows")
    return run


async def _ask_start(
    dataset: str,
    finetune_id: str | None,
    name: str | None,
    mode: training.Mode,
    steps: int,
    groups_per_step: int,
    rollouts_per_group: int,
    eval_every: int,
    ctx: Ctx,
) -> Confirmation | Elicit[Confirmation]:
    state = ctx.request_context.lifespan_context
    if not can_ask(ctx) or (finetune_id is None) == (name is None):
        return Confirmation()  # without a way to ask, or with arguments the tool refuses anyway
    try:
        loaded = await anyio.to_thread.run_sync(datasets.load, state.files, dataset)
    except EXPECTED:
        return Confirmation()
    evals = datasets.select(loaded.examples, "eval")
    config = training.RunConfig(
        mode=mode,
        steps=steps,
        groups_per_step=groups_per_step,
        rollouts_per_group=rollouts_per_group,
        eval_every=eval_every,
    )
    evaluations = len(training.eval_steps(steps, eval_every)) if evals else 0
    calls = training.plan(config, eval_examples=len(evals)).total
    target = f"finetune {finetune_id}" if finetune_id else f"a finetune named {name}"
    return ask(
        ctx,
        f"Start training {target} on {Path(dataset).name}: {steps} steps of {groups_per_step} examples x "
        f"{rollouts_per_group} rollouts, {evaluations} evaluation(s) of {len(evals)} examples. "
        f"About {calls} API calls, billed to the API key.",
    )


READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
# Destructive: a run deletes the checkpoints it saved itself that its save policy does not keep.
START = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
STOP = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def register(tools: Toolbox) -> None:
    @tools.tool("training", read_only=False, title="Start a training run", annotations=START)
    @compact
    async def start_training(
        dataset: DatasetPath,
        ctx: Ctx,
        answer: Annotated[Answer, Resolve(_ask_start)],
        finetune_id: Annotated[
            str | None, Field(max_length=bounds.NAME_CHARS, description="Finetune, or give name.")
        ] = None,
        name: Annotated[
            str | None,
            Field(pattern=r"^[A-Za-z0-9._-]+$", max_length=128, description="Name to create or reuse."),
        ] = None,
        rank: Annotated[Literal[8, 16, 24, 32], Field(description="LoRA rank if created.")] = 16,
        mode: Annotated[
            Literal["rl", "sft", "auto"],
            Field(description="auto: sft until eval reaches sft_below."),
        ] = "rl",
        sft_below: Annotated[float, Field(ge=0, le=1, description="auto: score to switch to rl.")] = 0.5,
        steps: Annotated[int, Field(ge=1, le=10_000, description="Train steps.")] = 20,
        groups_per_step: Annotated[int, Field(ge=1, le=32, description="Examples per step.")] = 8,
        rollouts_per_group: Annotated[int, Field(ge=1, le=16, description="Samples per example.")] = 4,
        lr: Annotated[float, Field(gt=0, le=1, description="Learning rate.")] = DEFAULT_LR,
        temperature: Annotated[float, Field(ge=0, le=2, description="Rollout temperature.")] = 1.0,
        eval_every: Annotated[int, Field(ge=0, le=10_000, description="Steps between evals; 0: never.")] = 5,
        save: Annotated[
            Literal["best_and_last", "last", "all"], Field(description="Checkpoints to keep.")
        ] = "best_and_last",
        seed: Annotated[int, Field(ge=0, le=2**32 - 1, description="Random seed.")] = 0,
        dry_run: Annotated[bool, Field(description="Only plan.")] = False,
    ) -> RunStarted:
        """Finetune on a dataset in the background."""
        state = ctx.request_context.lifespan_context
        require_yes(answer, "the run was not started")
        if (finetune_id is None) == (name is None):
            raise ToolError("give exactly one of finetune_id (an existing finetune) or name (+ rank) to create one")
        loaded, problems, _ = await read_dataset(state, dataset)
        if problems:
            raise refuse("cannot start", dataset, problems)
        assigned = datasets.assign_splits(loaded.examples)
        train = [e for e in assigned if e.split == "train"]
        evals = [e for e in assigned if e.split == "eval"]
        if not train:
            raise ToolError(
                f"the dataset {dataset} has no train examples: give some lines split=train, or none a split"
            )
        if mode == "auto" and not (evals and eval_every):
            raise ToolError("mode auto switches by the eval score: it needs eval examples and eval_every > 0")
        if mode != "rl" and (regex := next((e for e in train if e.match == "regex"), None)):
            raise ToolError(
                f"SFT trains on the answer as written, but line {regex.line} gives a regex: use mode rl, or literal "
                "answers"
            )
        config = training.RunConfig(
            mode=mode,
            sft_below=sft_below,
            steps=steps,
            groups_per_step=groups_per_step,
            rollouts_per_group=rollouts_per_group,
            lr=lr,
            temperature=temperature,
            eval_every=eval_every,
            save=save,
            seed=seed,
        )
        planned = training.plan(config, eval_examples=len(evals))
        calls = PlannedCalls.model_validate(planned, from_attributes=True)
        cost = f"about {planned.total} API calls ({planned.train_steps} train steps)"
        if dry_run:
            return RunStarted(
                run_id=None,
                finetune_id=finetune_id,
                state="planned",
                mode=mode,
                total_steps=steps,
                train_examples=len(train),
                eval_examples=len(evals),
                calls=calls,
                log=None,
                message=f"nothing started: the run would make {cost}.",
            )
        with state.errors():
            if name is not None:
                finetune = await state.client.tuning.create_finetune(name, rank)
            else:
                finetune = await state.client.tuning.get_finetune(finetune_id or "")
        with state.errors():
            run_id = await state.runner.start(
                finetune_id=finetune.finetune_id, dataset=str(loaded.path), config=config, train=train, evals=evals
            )
        note = "" if evals or not eval_every else " (no eval examples: no evaluation during the run)"
        return RunStarted(
            run_id=run_id,
            finetune_id=finetune.finetune_id,
            state="running",
            mode=mode,
            total_steps=steps,
            train_examples=len(train),
            eval_examples=len(evals),
            calls=calls,
            log=RUN_URI.format(run_id=run_id),
            message=f"run {run_id} started on finetune {finetune.finetune_id}{note}; it will make {cost}. Watch "
            "it with training_status (wait_seconds to wait for progress, chart=true for curves).",
        )

    @tools.tool("training", read_only=True, title="Training run status", annotations=READ)
    async def training_status(
        run_id: RunId,
        ctx: Ctx,
        chart: Annotated[bool, Field(description="Also return a chart.")] = False,
        wait_seconds: Annotated[float, Field(ge=0, le=300, description="Seconds to wait.")] = 0,
        history: Annotated[int, Field(ge=0, le=10_000, description="Steps to list.")] = 20,
        save_to: SaveTo = None,
    ) -> Annotated[CallToolResult, RunStatus]:
        """A run's progress and checkpoints."""
        state = ctx.request_context.lifespan_context
        deadline = time.monotonic() + wait_seconds
        seen: tuple[int, str, int] | None = None
        async with progress(ctx, f"waiting for run {run_id} to take a step") as tracker:
            while True:
                change = state.runner.next_change()
                run = await _find_run(state, run_id)
                evals = await state.store.run_evals(run.id)
                now = (run.steps_done, run.state, len(evals))
                if seen is not None and now != seen:
                    await tracker.report(run.steps_done, run.total_steps, f"step {run.steps_done}/{run.total_steps}")
                    break
                seen = now
                left = deadline - time.monotonic()
                if run.state != "running" or left <= 0:
                    break
                with anyio.move_on_after(left):
                    await change.wait()
        steps = await state.store.run_steps(run.id)
        status = _status(run, steps, evals, await state.store.run_checkpoints(run.id), history)
        if not chart:
            return structured(status)
        rewards = [(s.step, s.reward_mean, s.reward_std or 0.0) for s in steps if s.reward_mean is not None]
        scores = [(e.step, e.score) for e in evals if e.score is not None]
        best_step = next((c.step for c in status.checkpoints if c.best), None)
        title = f"run {run.id} · {run.state}, step {run.steps_done}/{run.total_steps}\nfinetune {run.finetune_id}"
        png = await anyio.to_thread.run_sync(
            lambda: charts.training_chart(title, rewards, scores, best_step, run.total_steps)
        )
        return await with_picture(state, status, Picture(png, "image/png", kind="chart"), save_to)

    @tools.tool("training", read_only=False, title="Stop a training run", annotations=STOP)
    @compact
    async def stop_training(run_id: RunId, ctx: Ctx) -> RunSummary:
        """Stop a run, saving its step."""
        state = ctx.request_context.lifespan_context
        run = await _find_run(state, run_id)
        if run.state == "running":
            await state.runner.stop(run.id)
            run = await _find_run(state, run_id)
        return _summary(run)

    @tools.tool("training", read_only=True, title="List training runs", annotations=READ)
    @compact
    async def list_runs(
        ctx: Ctx,
        state: Annotated[
            Literal["running", "completed", "failed", "stopped"] | None, Field(description="Only this state.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Most runs.")] = 20,
    ) -> RunList:
        """List training runs."""
        app = ctx.request_context.lifespan_context
        return RunList(runs=[_summary(r) for r in await app.store.runs(state=state, limit=limit)])
