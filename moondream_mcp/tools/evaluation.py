"""The evaluate tool: models scored side by side on a labelled dataset, with its results. Thin: the logic is in
evaluation.py."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import datasets, evaluation
from ..client.tuning import BASE_MODEL
from ..datasets import Dataset, Example
from ..files import FileError, os_failure
from ..jsonl import LineWriter
from ..state import AppState, Ctx
from ..store import new_id
from . import bounds
from .dataset_checks import DatasetPath, read_dataset, refuse
from .progress import progress
from .results import compact
from .toolsets import Toolbox

# ---- parameters -------------------------------------------------------------------------------

Split = Literal["eval", "train", "all"]

# ---- results ----------------------------------------------------------------------------------


class DetectMetrics(BaseModel):
    examples: int
    mean_iou: float = Field(description="Mean best-match IoU (extra and missed boxes count as 0).")
    f1: float = Field(description="F1 of boxes matched at IoU >= 0.5.")
    precision: float
    recall: float


class PointMetrics(BaseModel):
    examples: int
    hit_rate: float = Field(
        description="Points inside a label box or within 0.05 of a label point, matched one "
        "to one; extra and missed points count as misses."
    )


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


def _open_output(state: AppState, output: str | None, dataset: Dataset, job: str) -> LineWriter:
    """The per-example JSONL: `output` if it is new or this evaluation's own, else a new file in the data
    directory; never the dataset being read. Blocking: run it in a worker thread."""
    opened = (
        state.files.open_output(output)
        if output is not None
        else state.files.open_own("evaluations", f"{new_id('eval')}.jsonl")
    )
    if dataset.identity is not None and opened.identity == dataset.identity:
        opened.close()
        raise FileError(f"refused to write {opened.label}: it is the dataset being evaluated; give a new file name.")
    return LineWriter.claim(opened, job, "replace", tool="evaluate")


def _model_label(model: str | None) -> str | None:
    """None for the base model, the checkpoint string otherwise."""
    if model is None:
        return None
    model = model.strip()
    return None if model.lower() in ("base", BASE_MODEL) else model


def _score_row(tally: evaluation.Tally) -> ModelScore:
    metrics = tally.metrics()
    return ModelScore(
        model=tally.model,
        score=None if tally.score is None else round(tally.score, 4),
        examples=tally.examples,
        errors=tally.errors,
        first_error=tally.first_error,
        detect=DetectMetrics(**metrics["detect"]) if "detect" in metrics else None,
        point=PointMetrics(**metrics["point"]) if "point" in metrics else None,
        query=QueryMetrics(**metrics["query"]) if "query" in metrics else None,
    )


# Destructive: it rewrites its own earlier output of the same evaluation (never any other file).
EVALUATE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)


def register(tools: Toolbox) -> None:
    @tools.tool("training", read_only=False, title="Evaluate models on a dataset", annotations=EVALUATE)
    @compact
    async def evaluate(
        dataset: DatasetPath,
        ctx: Ctx,
        models: Annotated[
            list[Annotated[str, Field(max_length=bounds.NAME_CHARS)]] | None,
            Field(max_length=8, description="Checkpoints."),
        ] = None,
        include_base: Annotated[bool, Field(description="Also the base model.")] = True,
        split: Annotated[Split, Field(description="Which examples.")] = "eval",
        limit: Annotated[int | None, Field(ge=1, le=bounds.EXAMPLES, description="Most examples.")] = None,
        output: Annotated[
            str | None,
            Field(max_length=bounds.PATH_CHARS, description="Per-example JSONL file."),
        ] = None,
    ) -> EvalReport:
        """Score models on a dataset."""
        state = ctx.request_context.lifespan_context
        asked: list[str | None] = [None] if include_base else []
        for model in models or []:
            label = _model_label(model)
            if label not in asked:
                asked.append(label)
        if not asked:
            raise ToolError("nothing to evaluate: give models, or include_base=true")
        loaded, problems, _ = await read_dataset(state, dataset)
        if problems:
            raise refuse("cannot evaluate", dataset, problems)
        examples: list[Example] = datasets.select(loaded.examples, split)
        if limit is not None:
            examples = examples[:limit]
        if not examples:
            raise ToolError(f"the {split} split of {dataset} is empty; try split=all")
        job = evaluation.job(str(loaded.path), split, limit, asked)
        with state.errors():
            lines = await anyio.to_thread.run_sync(_open_output, state, output, loaded, job)
        path = lines.output.path
        started = time.monotonic()

        try:
            async with progress(ctx, "evaluating") as tracker:
                tallies = await evaluation.evaluate(
                    state.client, state.images, examples, asked, lines, progress=tracker.report, explain=state.explain
                )
        except OSError as exc:
            raise ToolError(str(os_failure("write", str(path), exc))) from None
        rows = [_score_row(t) for t in tallies]
        scored = [r for r in rows if r.score is not None]
        best = max(scored, key=lambda r: r.score or 0.0).model if scored else None
        table = ", ".join(f"{r.model}: {r.score:.3f}" if r.score is not None else f"{r.model}: failed" for r in rows)
        return EvalReport(
            dataset=str(loaded.path),
            split=split,
            examples=len(examples),
            models=rows,
            best_model=best,
            output=str(path),
            elapsed_s=round(time.monotonic() - started, 2),
            message=f"{len(examples)} examples; {table}.",
        )
