"""Datasets, training runs and evaluation as MCP tools: the finetuning loop in a few calls. Thin: the
logic is in datasets.py, evaluation.py, training.py and charts.py."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, ToolAnnotations
from pydantic import BaseModel, Field

from .. import charts, datasets, evaluation, training
from ..client.tuning import BASE_MODEL, checkpoint_model
from ..datasets import Dataset, DatasetError, Example, Problem
from ..images import ImageError
from ..store import Run, new_id
from .errors import describe, tool_errors
from .results import compact, structured

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from ..server import AppState

MAX_PROBLEMS = 50  # listed in a report; the count says how many there were
REFUSAL_PROBLEMS = 10  # listed in a refusal to start
RUN_URI = "moondream://runs/{run_id}"

# ---- parameters -------------------------------------------------------------------------------

DatasetPath = Annotated[str, Field(min_length=1, description=(
    "The dataset: an absolute path to a JSONL file inside the allowed directories, one example a line "
    "(see inspect_dataset for the format)."))]
RunId = Annotated[str, Field(min_length=1, description="The run's id, from start_training or list_runs.")]
Split = Literal["eval", "train", "all"]

# ---- results ----------------------------------------------------------------------------------


class ProblemOut(BaseModel):
    line: int | None = Field(description="1-based line of the dataset file; null: the file as a whole.")
    problem: str


class DatasetCounts(BaseModel):
    skill: dict[str, int] = Field(description="Examples per skill.")
    object: dict[str, int] = Field(description="Examples per object (point/detect) or question (query), top 50.")
    split: dict[str, int] = Field(description="Examples per split, after the automatic split of unsplit images.")


class DatasetReport(BaseModel):
    path: str
    examples: int = Field(description="Lines that parsed as examples.")
    images: int = Field(description="Distinct images.")
    counts: DatasetCounts
    split_given: bool = Field(description="Whether the file gives splits; if not, images are split 80/20 by a "
                              "seeded hash, the same for every run and evaluation.")
    urls_not_checked: int = Field(description="Images given as URLs: not downloaded by this check.")
    problems: list[ProblemOut] = Field(description=f"Up to {MAX_PROBLEMS} problems; fix them before training.")
    problem_count: int
    samples: list[str] = Field(description="The first few lines as written.")
    ready: bool = Field(description="True when there are no problems: start_training and evaluate accept it.")
    message: str


class ImportOut(BaseModel):
    output: str = Field(description="The JSONL file written.")
    examples: int
    images: int
    objects: dict[str, int] = Field(description="Examples per object name.")
    skipped: int = Field(description="Annotations or images left out.")
    skipped_reasons: list[str] = Field(description="Why, for the first few.")
    message: str


class StepOut(BaseModel):
    step: int = Field(description="Step within the run, 1..total_steps.")
    api_step: int = Field(description="The finetune's step number as the API reported it.")
    reward_mean: float | None
    reward_std: float | None
    seconds: float | None = Field(description="Rollouts + train_step; null for a step recovered after a restart.")


class EvalOut(BaseModel):
    step: int
    model: str = Field(description="The checkpoint evaluated.")
    score: float | None = Field(description="Mean example score, 0-1: IoU (detect), hit rate (point), "
                                "accuracy (query).")
    metrics: dict[str, dict[str, int | float]] = Field(description="Per skill: detect mean_iou, f1, precision, recall; "
                                                 "point hit_rate; query accuracy.")
    errors: int
    output: str | None = Field(description="The per-example JSONL of this evaluation.")


class CheckpointOut(BaseModel):
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
    checkpoints: list[CheckpointOut] = Field(description="Saved checkpoints the run keeps.")
    best_model: str | None = Field(description="The best checkpoint's model string, once one is evaluated.")
    last_model: str | None = Field(description="The final checkpoint's model string, once the run ends.")
    elapsed_s: float
    eta_s: float | None = Field(description="Estimated seconds left; null until a step is timed.")
    stop_requested: bool
    last_error: str | None
    log: str = Field(description="The run's full log as a resource (JSON).")
    message: str


class RunSummary(BaseModel):
    run_id: str
    state: str
    finetune_id: str
    dataset: str
    step: int
    total_steps: int
    best_score: float | None
    best_model: str | None
    created_at: float = Field(description="Unix time.")
    last_error: str | None


class RunList(BaseModel):
    runs: list[RunSummary] = Field(description="Newest first.")


class RunStarted(BaseModel):
    run_id: str
    finetune_id: str
    state: str
    total_steps: int
    train_examples: int
    eval_examples: int
    log: str
    message: str


class DetectMetrics(BaseModel):
    examples: int
    mean_iou: float = Field(description="Mean best-match IoU (extra and missed boxes count as 0).")
    f1: float = Field(description="F1 of boxes matched at IoU >= 0.5.")
    precision: float
    recall: float


class PointMetrics(BaseModel):
    examples: int
    hit_rate: float = Field(description="Points inside a label box or within 0.05 of a label point, matched one "
                            "to one; extra and missed points count as misses.")


class QueryMetrics(BaseModel):
    examples: int
    accuracy: float = Field(description="Share of answers right by each label's match rule.")


class ModelScore(BaseModel):
    model: str
    score: float | None = Field(description="Mean example score, 0-1; null if no example could be scored.")
    examples: int = Field(description="Examples scored.")
    errors: int = Field(description="Examples that failed (see the JSONL for each error).")
    detect: DetectMetrics | None = None
    point: PointMetrics | None = None
    query: QueryMetrics | None = None
    first_error: str | None = None


class EvalReport(BaseModel):
    dataset: str
    split: str
    examples: int
    models: list[ModelScore] = Field(description="One row per model, in the order asked (base model first).")
    best_model: str | None
    output: str = Field(description="JSONL, one line per (example, model): prediction, score, details or error.")
    elapsed_s: float
    message: str


# ---- helpers ----------------------------------------------------------------------------------


def _state(ctx: Context) -> AppState:
    return ctx.request_context.lifespan_context


def _problems(problems: list[Problem], limit: int = MAX_PROBLEMS) -> list[ProblemOut]:
    return [ProblemOut(line=p.line, problem=p.message) for p in problems[:limit]]


async def _read_dataset(state: AppState, path: str) -> tuple[Dataset, list[Problem], int]:
    """The dataset, every problem (lines, then images), and how many image URLs went unchecked."""
    with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
        checked = state.images.check_path(path)
    try:
        dataset = await anyio.to_thread.run_sync(datasets.load, checked)
    except DatasetError as exc:
        raise ToolError(str(exc)) from None

    def check(ref: str) -> str | None:
        if datasets.is_url(ref):
            return None
        try:
            real = state.images.check_path(ref)
        except ImageError as exc:
            return str(exc)
        return datasets.readable_image(real)

    image_problems = await anyio.to_thread.run_sync(datasets.image_problems, dataset.examples, check)
    urls = len({e.ref for e in dataset.examples if datasets.is_url(e.ref)})
    return dataset, dataset.problems + image_problems, urls


def _refuse(what: str, path: str, problems: list[Problem]) -> ToolError:
    listed = "; ".join(str(p) for p in problems[:REFUSAL_PROBLEMS])
    more = f" (and {len(problems) - REFUSAL_PROBLEMS} more)" if len(problems) > REFUSAL_PROBLEMS else ""
    return ToolError(f"{what}: the dataset {path} has {len(problems)} problem(s): {listed}{more}. Fix them "
                     "(inspect_dataset lists them all) and try again.")


def _output_path(state: AppState, output: str | None, folder: str, stem: str) -> Path:
    with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
        if output is not None:
            return state.images.check_path(output, for_writing=True)
    path = state.settings.data_dir / folder / f"{stem}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _model_label(model: str | None) -> str | None:
    """None for the base model, the checkpoint string otherwise."""
    if model is None:
        return None
    model = model.strip()
    return None if model.lower() in ("base", BASE_MODEL) else model


def _score_row(tally: evaluation.Tally) -> ModelScore:
    metrics = tally.metrics()
    return ModelScore(
        model=tally.model, score=None if tally.score is None else round(tally.score, 4), examples=tally.examples,
        errors=tally.errors, first_error=tally.first_error,
        detect=DetectMetrics(**metrics["detect"]) if "detect" in metrics else None,
        point=PointMetrics(**metrics["point"]) if "point" in metrics else None,
        query=QueryMetrics(**metrics["query"]) if "query" in metrics else None,
    )


async def run_status(state: AppState, run: Run, history: int | None) -> RunStatus:
    """A run's status from the store (also the body of its log resource, with history=None: every step)."""
    steps = await state.store.run_steps(run.id)
    evals = await state.store.run_evals(run.id)
    checkpoints = await state.store.run_checkpoints(run.id)
    scores = {e.api_step: e.score for e in evals}
    elapsed, eta = training.timing(run, steps, [e.seconds for e in evals if e.seconds is not None])
    kept = [CheckpointOut(step=c.step, api_step=c.api_step, model=checkpoint_model(run.finetune_id, c.api_step),
                          best=c.best, last=c.last, score=scores.get(c.api_step))
            for c in checkpoints if not c.deleted and (c.best or c.last or c.evaluated)]
    best = next((c.model for c in kept if c.best), None)
    last = next((c.model for c in kept if c.last), None)
    shown = steps if history is None else steps[-history:] if history else []
    return RunStatus(
        run_id=run.id, state=run.state, finetune_id=run.finetune_id, dataset=run.dataset,  # type: ignore[arg-type]
        step=run.steps_done, total_steps=run.total_steps, config=run.config,
        steps=[StepOut(step=s.step, api_step=s.api_step, reward_mean=_round(s.reward_mean),
                       reward_std=_round(s.reward_std), seconds=s.seconds) for s in shown],
        evals=[EvalOut(step=e.step, model=checkpoint_model(run.finetune_id, e.api_step), score=_round(e.score),
                       metrics=e.metrics, errors=e.errors, output=e.output) for e in evals],
        checkpoints=kept, best_model=best, last_model=last, elapsed_s=round(elapsed, 1),
        eta_s=None if eta is None else round(eta, 1), stop_requested=run.stop_requested, last_error=run.error,
        log=RUN_URI.format(run_id=run.id), message=_message(run, steps, evals, best, last),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _message(run: Run, steps: list, evals: list, best: str | None, last: str | None) -> str:
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
        run_id=run.id, state=run.state, finetune_id=run.finetune_id, dataset=run.dataset, step=run.steps_done,
        total_steps=run.total_steps, best_score=_round(run.best_score),
        best_model=checkpoint_model(run.finetune_id, run.best_api_step) if run.best_api_step is not None else None,
        created_at=round(run.created_at, 3), last_error=run.error)


async def _find_run(state: AppState, run_id: str) -> Run:
    run = await state.store.run(run_id.strip())
    if run is None:
        raise ToolError(f"no training run {run_id}: list_runs shows the runs this server knows")
    return run


READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE_FILE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                             open_world_hint=False)
# Destructive: a run deletes the checkpoints it saved itself that its save policy does not keep.
START = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
STOP = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
# Destructive: an existing file named as `output` is replaced.
EVALUATE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)


def register(server: MCPServer[AppState]) -> None:
    @server.tool(title="Import a COCO or YOLO dataset", annotations=WRITE_FILE)
    @compact
    async def import_dataset(
        source: Annotated[str, Field(min_length=1, description=(
            "coco: the annotations JSON file; yolo: the dataset folder (images/ and labels/, or both side by "
            "side, with data.yaml or classes.txt). Inside the allowed directories."))],
        format: Annotated[Literal["coco", "yolo"], Field(description="The source's format.")],
        output: Annotated[str, Field(min_length=1, description=(
            "Where to write the JSONL dataset (absolute path inside the allowed directories; replaced if it "
            "exists). Image paths in it are relative to its folder when below it."))],
        ctx: Context,
        image_dir: Annotated[str | None, Field(description=(
            "coco: the folder holding the images named by file_name; default: the JSON file's folder."))] = None,
        classes: Annotated[list[str] | None, Field(description=(
            "yolo: class names by index, when the folder has no data.yaml / classes.txt."))] = None,
        split: Annotated[Literal["train", "eval"] | None, Field(description=(
            "coco: give every example this split (e.g. eval for a val2017 file); yolo takes it from "
            "train/ val/ test/ subfolders."))] = None,
    ) -> ImportOut:
        """Turn a COCO detection JSON or a YOLO folder into this server's JSONL dataset: one detect example per
        image and category, boxes normalized 0-1 (origin top-left). Check the result with inspect_dataset."""
        state = _state(ctx)
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            target = state.images.check_path(output, for_writing=True)
            if format == "coco":
                json_path = state.images.check_path(source)
                images_at = state.images.check_dir(image_dir) if image_dir else json_path.parent
            else:
                root = state.images.check_dir(source)

        def run_import() -> datasets.Imported:
            if format == "coco":
                try:
                    data = json.loads(json_path.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise DatasetError(f"{json_path} is not a JSON file: {exc}") from None
                imported = datasets.from_coco(data, image_dir=images_at, output_dir=target.parent, split=split)
            else:
                imported = datasets.from_yolo(root, output_dir=target.parent, classes=classes)
            if imported.records:
                datasets.write_jsonl(target, imported.records)
            return imported

        try:
            imported = await anyio.to_thread.run_sync(run_import)
        except DatasetError as exc:
            raise ToolError(str(exc)) from None
        except OSError as exc:
            raise ToolError(f"cannot import: {exc.strerror or exc}") from None
        if not imported.records:
            reasons = "; ".join(imported.skipped[:3])
            raise ToolError(f"nothing to import from {source}: no image had a usable box"
                            + (f" ({reasons})" if reasons else ""))
        objects: dict[str, int] = {}
        for record in imported.records:
            objects[record["object"]] = objects.get(record["object"], 0) + 1
        return ImportOut(
            output=str(target), examples=len(imported.records), images=imported.images, objects=objects,
            skipped=imported.skipped_count, skipped_reasons=imported.skipped,
            message=f"wrote {len(imported.records)} detect examples from {imported.images} images to {target}"
                    + (f"; {imported.skipped_count} left out" if imported.skipped_count else "")
                    + ". Next: inspect_dataset.")

    @server.tool(title="Inspect a dataset", annotations=READ)
    @compact
    async def inspect_dataset(path: DatasetPath, ctx: Context) -> DatasetReport:
        """Check a JSONL dataset before training or evaluating: counts by skill, object and split, problems
        (lines that do not parse, missing or unreadable images, boxes out of range or inverted, empty labels)
        and a few sample lines.

        Format, one JSON object a line: `image` (path relative to the file, absolute, or URL), `skill`
        (query / point / detect), then for query `question` + `answer` (optional `choices` list and `match`:
        exact / normalized (default) / regex / contains); for point `object` + `points` [{x, y}] or `boxes`;
        for detect `object` + `boxes` [{x_min, y_min, x_max, y_max}] ([] = absent). Coordinates 0-1, origin
        top-left. Optional `split`: train / eval; without it, images are split 80/20 by a fixed seeded hash."""
        state = _state(ctx)
        dataset, problems, urls = await _read_dataset(state, path)
        assigned = datasets.assign_splits(dataset.examples)
        counted = Dataset(dataset.path, assigned, problems, dataset.samples).counts()
        ready = not problems and bool(dataset.examples)
        message = (f"{len(dataset.examples)} examples, ready to train and evaluate" if ready else
                   f"{len(problems)} problem(s) to fix before training" if problems else "no examples")
        return DatasetReport(
            path=str(dataset.path), examples=len(dataset.examples), images=len({e.ref for e in dataset.examples}),
            counts=DatasetCounts(**counted), split_given=any(e.split for e in dataset.examples),
            urls_not_checked=urls, problems=_problems(problems), problem_count=len(problems),
            samples=dataset.samples, ready=ready, message=message + ".")

    @server.tool(title="Start a training run", annotations=START)
    @compact
    async def start_training(
        dataset: DatasetPath,
        ctx: Context,
        finetune_id: Annotated[str | None, Field(description="Train this finetune (from list_finetunes); or give "
                                                 "name + rank instead.")] = None,
        name: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9._-]+$", max_length=128, description=(
            "Create (or reuse) the finetune with this name: letters, digits, '-', '_', '.'."))] = None,
        rank: Annotated[Literal[8, 16, 24, 32], Field(description="LoRA rank when creating by name.")] = 16,
        steps: Annotated[int, Field(ge=1, le=10_000, description="Train steps to take.")] = 20,
        groups_per_step: Annotated[int, Field(ge=1, le=32, description="Examples per step (one group each).")] = 8,
        rollouts_per_group: Annotated[int, Field(ge=1, le=16, description="Samples per example; 4-8 works "
                                                 "best.")] = 4,
        lr: Annotated[float | None, Field(gt=0, le=1, description="Learning rate; omit for the API's "
                                          "default.")] = None,
        temperature: Annotated[float, Field(ge=0, le=2, description="Rollout sampling temperature.")] = 1.0,
        eval_every: Annotated[int, Field(ge=0, description="Evaluate on the eval split every this many steps "
                                         "(and after the last); 0: never.")] = 5,
        save: Annotated[Literal["best_and_last", "last", "all"], Field(description=(
            "Which checkpoints to keep: the best by eval score and the last (default), only the last, or every "
            "evaluated one."))] = "best_and_last",
        seed: Annotated[int, Field(description="Seed for choosing each step's examples.")] = 0,
    ) -> RunStarted:
        """Start RL finetuning in the background and return its run_id at once. Each step samples
        groups_per_step train examples, generates rollouts_per_group rollouts for each (concurrently, within
        the rate limit), rewards them (point/detect: the API's ground-truth rewards; query: the label's match
        rule) and applies one train step. Checkpoints are evaluated every eval_every steps; the best and the
        last are kept (other checkpoints the run saved are deleted, per `save`). Watch with training_status;
        the run survives server restarts. Refused if the dataset has problems (see inspect_dataset)."""
        state = _state(ctx)
        if (finetune_id is None) == (name is None):
            raise ToolError("give exactly one of finetune_id (an existing finetune) or name (+ rank) to create one")
        loaded, problems, _ = await _read_dataset(state, dataset)
        if problems:
            raise _refuse("cannot start", dataset, problems)
        assigned = datasets.assign_splits(loaded.examples)
        train = [e for e in assigned if e.split == "train"]
        evals = [e for e in assigned if e.split == "eval"]
        if not train:
            raise ToolError(f"the dataset {dataset} has no train examples: give some lines split=train, or none a "
                            "split")
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            if name is not None:
                finetune = await state.client.tuning.create_finetune(name, rank)
            else:
                finetune = await state.client.tuning.get_finetune(finetune_id or "")
        busy = [r for r in await state.store.runs(state="running", finetune_id=finetune.finetune_id)]
        if busy:
            raise ToolError(f"finetune {finetune.finetune_id} is already training in run {busy[0].id}; stop it "
                            "(stop_training) or wait for it to finish")
        config = training.RunConfig(steps=steps, groups_per_step=groups_per_step,
                                    rollouts_per_group=rollouts_per_group, lr=lr, temperature=temperature,
                                    eval_every=eval_every, save=save, seed=seed)
        run_id = await state.runner.start(finetune_id=finetune.finetune_id, dataset=str(loaded.path),
                                          config=config, train=train, evals=evals)
        note = "" if evals or not eval_every else " (no eval examples: no evaluation during the run)"
        return RunStarted(
            run_id=run_id, finetune_id=finetune.finetune_id, state="running", total_steps=steps,
            train_examples=len(train), eval_examples=len(evals), log=RUN_URI.format(run_id=run_id),
            message=f"run {run_id} started on finetune {finetune.finetune_id}{note}. Watch it with "
                    "training_status (wait_seconds to wait for progress, chart=true for curves).")

    @server.tool(title="Training run status", annotations=READ)
    async def training_status(
        run_id: RunId,
        ctx: Context,
        chart: Annotated[bool, Field(description="Also return a PNG chart of reward per step and eval "
                                     "score.")] = False,
        wait_seconds: Annotated[float, Field(ge=0, le=300, description=(
            "Wait up to this long for the run to record a step, an evaluation or a new state before answering "
            "(progress notifications meanwhile); 0 answers at once."))] = 0,
        history: Annotated[int, Field(ge=0, le=10_000, description="How many recent steps to list.")] = 20,
    ) -> Annotated[CallToolResult, RunStatus]:
        """A run's state (running / completed / failed / stopped), step / total, reward mean and spread per
        step, eval scores, kept checkpoints with their `model` strings (best and last), elapsed and
        estimated time left, and the last error. Rather than calling it in a loop, pass wait_seconds: it
        answers as soon as the run records its next step. chart=true adds a PNG of the curves."""
        state = _state(ctx)
        deadline = time.monotonic() + wait_seconds
        seen: tuple[int, str, int] | None = None
        while True:
            change = state.runner.next_change()
            run = await _find_run(state, run_id)
            now = (run.steps_done, run.state, len(await state.store.run_evals(run.id)))
            if seen is not None and now != seen:
                await ctx.report_progress(run.steps_done, run.total_steps, f"step {run.steps_done}/{run.total_steps}")
                break
            seen = now
            left = deadline - time.monotonic()
            if run.state != "running" or left <= 0:
                break
            with anyio.move_on_after(left):
                await change.wait()
        status = await run_status(state, run, history)
        if not chart:
            return structured(status)
        steps = await state.store.run_steps(run.id)
        rewards = [(s.step, s.reward_mean, s.reward_std or 0.0) for s in steps if s.reward_mean is not None]
        evals = [(e.step, e.score) for e in await state.store.run_evals(run.id) if e.score is not None]
        best_step = next((c.step for c in status.checkpoints if c.best), None)
        title = f"run {run.id} · {run.state}, step {run.steps_done}/{run.total_steps}\nfinetune {run.finetune_id}"
        try:
            png = await anyio.to_thread.run_sync(
                lambda: charts.training_chart(title, rewards, evals, best_step, run.total_steps))
        except ImportError:
            raise ToolError("charts need matplotlib, which is not installed here: pip install matplotlib; "
                            "or call training_status without chart") from None
        return structured(status, ImageContent(type="image", data=base64.b64encode(png).decode(),
                                               mime_type="image/png"))

    @server.tool(title="Stop a training run", annotations=STOP)
    @compact
    async def stop_training(run_id: RunId, ctx: Context) -> RunSummary:
        """Stop a run after its current step; its last step is saved as a checkpoint and the state becomes
        stopped. A run that already ended is left as it is."""
        state = _state(ctx)
        run = await _find_run(state, run_id)
        if run.state == "running":
            await state.runner.stop(run.id)
            run = await _find_run(state, run_id)
        return _summary(run)

    @server.tool(title="List training runs", annotations=READ)
    @compact
    async def list_runs(
        ctx: Context,
        state: Annotated[Literal["running", "completed", "failed", "stopped"] | None,
                         Field(description="Only runs in this state.")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Most runs to list.")] = 20,
    ) -> RunList:
        """Training runs this server knows, newest first, with their progress and best checkpoint."""
        app = _state(ctx)
        return RunList(runs=[_summary(r) for r in await app.store.runs(state=state, limit=limit)])

    @server.tool(title="Evaluate models on a dataset", annotations=EVALUATE)
    @compact
    async def evaluate(
        dataset: DatasetPath,
        ctx: Context,
        models: Annotated[list[str] | None, Field(max_length=8, description=(
            "Finetuned checkpoints to compare, as `moondream3-preview/{finetune_id}@{step}` (from "
            "training_status or list_checkpoints)."))] = None,
        include_base: Annotated[bool, Field(description="Also evaluate the base model (first row).")] = True,
        split: Annotated[Split, Field(description="Which examples: the eval split (default), train, or all.")]
        = "eval",
        limit: Annotated[int | None, Field(ge=1, description="At most this many examples (the first of the "
                                           "split).")] = None,
        output: Annotated[str | None, Field(description=(
            "Where to write the per-example JSONL (inside the allowed directories); default: a new file in "
            "the server's data directory."))] = None,
    ) -> EvalReport:
        """Score models side by side on a labelled dataset, at temperature 0: detect by mean best-match IoU
        and F1 at IoU 0.5; point by hit rate (inside a label box, or within 0.05 of a label point); query by
        accuracy under each label's match rule. Returns one row per model and a per-example JSONL path.
        Requests run concurrently within the rate limit; progress is reported as answers come in."""
        state = _state(ctx)
        asked: list[str | None] = [None] if include_base else []
        for model in models or []:
            label = _model_label(model)
            if label not in asked:
                asked.append(label)
        if not asked:
            raise ToolError("nothing to evaluate: give models, or include_base=true")
        loaded, problems, _ = await _read_dataset(state, dataset)
        if problems:
            raise _refuse("cannot evaluate", dataset, problems)
        examples: list[Example] = datasets.select(loaded.examples, split)
        if limit is not None:
            examples = examples[:limit]
        if not examples:
            raise ToolError(f"the {split} split of {dataset} is empty; try split=all")
        path = _output_path(state, output, "evaluations", new_id("eval"))
        started = time.monotonic()

        async def progress(done: int, total: int, message: str) -> None:
            await ctx.report_progress(done, total, message)

        try:
            tallies = await evaluation.evaluate(
                state.client, state.images, examples, asked, path, progress=progress,
                explain=lambda exc: describe(exc, endpoint=state.settings.endpoint, secret=state.secret))
        except OSError as exc:
            raise ToolError(f"cannot write {path}: {exc.strerror}") from None
        rows = [_score_row(t) for t in tallies]
        scored = [r for r in rows if r.score is not None]
        best = max(scored, key=lambda r: r.score or 0.0).model if scored else None
        table = ", ".join(f"{r.model}: {r.score:.3f}" if r.score is not None else f"{r.model}: failed" for r in rows)
        return EvalReport(dataset=str(loaded.path), split=split, examples=len(examples), models=rows,
                          best_model=best, output=str(path), elapsed_s=round(time.monotonic() - started, 2),
                          message=f"{len(examples)} examples; {table}.")
