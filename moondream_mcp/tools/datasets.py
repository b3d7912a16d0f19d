"""Dataset tools: import_dataset (COCO / YOLO to JSONL) and inspect_dataset, with their results. Thin: the logic is
in datasets.py."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import datasets
from ..datasets import Dataset, Problem
from ..files import os_failure
from ..state import Ctx
from . import bounds
from .dataset_checks import DatasetPath, read_dataset
from .results import compact
from .schemas import NonEmpty
from .toolsets import Toolbox

MAX_PROBLEMS = 50  # listed in a report; the count says how many there were

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
    split_given: bool = Field(
        description="Whether the file gives splits; if not, images are split 80/20 by a "
        "seeded hash, the same for every run and evaluation."
    )
    urls_not_checked: int = Field(description="Images given as URLs: not downloaded by this check.")
    problems: list[ProblemOut] = Field(description=f"Up to {MAX_PROBLEMS} problems; fix them before training.")
    problem_count: int
    samples: list[str] = Field(description="The first few lines as written.")
    ready: bool = Field(description="True when there are no problems: start_training and evaluate accept it.")
    message: str


class ImportReport(BaseModel):
    output: str = Field(description="The JSONL file written.")
    examples: int
    images: int
    objects: dict[str, int] = Field(description="Examples per object name.")
    skipped: int = Field(description="Annotations or images left out.")
    skipped_reasons: list[str] = Field(description="Why, for the first few.")
    message: str


# ---- helpers ----------------------------------------------------------------------------------


def _problems(problems: list[Problem], limit: int = MAX_PROBLEMS) -> list[ProblemOut]:
    return [ProblemOut(line=p.line, problem=p.message) for p in problems[:limit]]


READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
# Destructive: it rewrites its own earlier output of the same import (never any other file).
WRITE_FILE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


def register(tools: Toolbox) -> None:
    @tools.tool("training", read_only=False, title="Import a COCO or YOLO dataset", annotations=WRITE_FILE)
    @compact
    async def import_dataset(
        source: Annotated[
            NonEmpty,
            Field(max_length=bounds.PATH_CHARS, description="coco: a JSON file; yolo: a folder."),
        ],
        format: Annotated[Literal["coco", "yolo"], Field(description="Format.")],
        output: Annotated[NonEmpty, Field(max_length=bounds.PATH_CHARS, description="New JSONL, or this import's.")],
        ctx: Ctx,
        image_dir: Annotated[
            str | None,
            Field(max_length=bounds.PATH_CHARS, description="coco: images folder."),
        ] = None,
        classes: Annotated[
            list[Annotated[str, Field(max_length=bounds.NAME_CHARS)]] | None,
            Field(max_length=10_000, description="yolo: class names."),
        ] = None,
        split: Annotated[Literal["train", "eval"] | None, Field(description="coco: split of all.")] = None,
        negatives: Annotated[bool, Field(description="Also examples of absent classes.")] = False,
    ) -> ImportReport:
        """COCO JSON or a YOLO folder to a JSONL dataset."""
        state = ctx.request_context.lifespan_context
        try:
            with state.errors():
                imported, target = await anyio.to_thread.run_sync(
                    partial(
                        datasets.import_dataset,
                        state.files,
                        source,
                        format,
                        output,
                        image_dir=image_dir,
                        classes=classes,
                        split=split,
                        negatives=negatives,
                    )
                )
        except OSError as exc:
            raise ToolError(str(os_failure("import", "the dataset", exc))) from None
        if not imported.records:
            reasons = "; ".join(imported.skipped[:3])
            raise ToolError(
                f"nothing to import from {source}: no image had a usable box" + (f" ({reasons})" if reasons else "")
            )
        objects: dict[str, int] = {}
        for record in imported.records:
            objects[record["object"]] = objects.get(record["object"], 0) + 1
        return ImportReport(
            output=str(target),
            examples=len(imported.records),
            images=imported.images,
            objects=objects,
            skipped=imported.skipped_count,
            skipped_reasons=imported.skipped,
            message=f"wrote {len(imported.records)} detect examples from {imported.images} images to {target}"
            + (f"; {imported.skipped_count} left out" if imported.skipped_count else "")
            + ". Next: inspect_dataset.",
        )

    @tools.tool("training", read_only=True, title="Inspect a dataset", annotations=READ)
    @compact
    async def inspect_dataset(path: DatasetPath, ctx: Ctx) -> DatasetReport:
        """Check a JSONL dataset. Line: {image, skill, split?} + query: question, answer; point: object, points
        [{x, y}]; detect: object, boxes [{x_min, y_min, x_max, y_max}] ([] = none)."""
        state = ctx.request_context.lifespan_context
        dataset, problems, urls = await read_dataset(state, path)
        assigned = datasets.assign_splits(dataset.examples)
        counted = Dataset(dataset.path, assigned, problems, dataset.samples).counts()
        ready = not problems and bool(dataset.examples)
        message = (
            f"{len(dataset.examples)} examples, ready to train and evaluate"
            if ready
            else f"{len(problems)} problem(s) to fix before training"
            if problems
            else "no examples"
        )
        return DatasetReport(
            path=str(dataset.path),
            examples=len(dataset.examples),
            images=len({e.ref for e in dataset.examples}),
            counts=DatasetCounts(**counted),
            split_given=any(e.split for e in dataset.examples),
            urls_not_checked=urls,
            problems=_problems(problems),
            problem_count=len(problems),
            samples=dataset.samples,
            ready=ready,
            message=message + ".",
        )
