"""The batch tool: one skill over many images called from here (a local batch), resumable, summarized."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import local_batch
from ..client import Sampling
from ..failures import FailureGroups
from ..files import os_failure
from ..jsonl import LineWriter
from ..state import Ctx
from . import bounds
from .progress import progress
from .results import compact
from .skills import Length, MaxObjects, Model
from .toolsets import Toolbox

IMAGES = "Paths/URLs, folder or glob."


class Failure(BaseModel):
    reason: str = Field(description="What went wrong (the image named as <image>).")
    count: int
    images: list[str] = Field(description="Up to 5 of the images that failed this way.")


def failures(groups: FailureGroups) -> list[Failure]:
    return [Failure(reason=reason, count=count, images=examples) for reason, count, examples in groups.grouped()]


class Sample(BaseModel):
    image: str
    result: dict[str, Any]


class BatchSummary(BaseModel):
    skill: str
    total: int = Field(description="Images in the batch.")
    succeeded: int = Field(description="Finished successfully in this run.")
    failed: int = Field(description="Failed in this run (a rerun tries them again).")
    skipped: int = Field(description="Already done by an earlier run with the same output and parameters.")
    output: str = Field(description="The JSONL file: one line per image, {image, ok, result | error}.")
    elapsed_s: float
    images_per_second: float = Field(description="Achieved rate in this run.")
    failures: list[Failure] = Field(description="Failures grouped by reason, most common first.")
    samples: list[Sample] = Field(description="A few results, to check they look right.")
    message: str


def register(tools: Toolbox) -> None:
    @tools.tool(
        "batch",
        read_only=False,
        title="Run a skill over many images",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
        ),
    )
    @compact
    async def batch(
        skill: Annotated[Literal["caption", "query", "detect", "point", "segment"], Field(description="Skill.")],
        images: Annotated[bounds.Images, Field(description=IMAGES)],
        ctx: Ctx,
        object: Annotated[str | None, Field(max_length=bounds.OBJECT_CHARS, description="What to find.")] = None,
        question: Annotated[str | None, Field(max_length=bounds.TEXT_CHARS, description="Question.")] = None,
        length: Length = "normal",
        reasoning: Annotated[bool, Field(description="Reason first.")] = False,
        max_objects: MaxObjects = None,
        model: Model = None,
        output: Annotated[
            str | None,
            Field(max_length=bounds.PATH_CHARS, description="Results JSONL file."),
        ] = None,
    ) -> BatchSummary:
        """Run a skill over many images into JSONL; the same output resumes."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            job = local_batch.SkillJob(
                skill=skill,
                object=object,
                question=question,
                length=length,
                reasoning=reasoning,
                model=model,
                sampling=Sampling(max_objects=max_objects if skill == "detect" else None),
            )
            refs = await anyio.to_thread.run_sync(local_batch.expand, images, state.files)
            if output is not None:
                opened = await anyio.to_thread.run_sync(state.files.open_output, output)
            else:
                name = f"{skill}-{job.id}-{local_batch.digest({'skill': 'refs', 'r': refs})[:8]}.jsonl"
                opened = await anyio.to_thread.run_sync(state.files.open_own, "batches", name)
            lines = await anyio.to_thread.run_sync(partial(LineWriter.claim, opened, job.id, "resume", tool="batch"))
        path = opened.path

        async def work(ref: str) -> dict[str, Any]:
            return await job.run(state.vision, ref)

        try:
            async with progress(ctx, "running the batch") as tracker:
                outcome = await local_batch.run(
                    refs,
                    work,
                    local_batch.ResultLog(lines),
                    explain=state.explain,
                    concurrency=state.client.api.in_flight,
                    progress=tracker.report,
                )
        except OSError as exc:
            raise ToolError(str(os_failure("write", f"the results file {path}", exc))) from None
        processed = outcome.succeeded + outcome.failed
        parts = [f"{outcome.succeeded} of {processed} images done" if processed else "nothing left to do"]
        if outcome.skipped:
            parts.append(f"{outcome.skipped} skipped: already done in {path}")
        if outcome.failed:
            parts.append(f"{outcome.failed} failed (rerun with the same output to retry them)")
        return BatchSummary(
            skill=skill,
            total=outcome.total,
            succeeded=outcome.succeeded,
            failed=outcome.failed,
            skipped=outcome.skipped,
            output=str(path),
            elapsed_s=round(outcome.elapsed, 3),
            images_per_second=round(processed / outcome.elapsed, 3) if outcome.elapsed > 0 else 0.0,
            failures=failures(outcome.failures),
            samples=[Sample(**s) for s in outcome.samples],
            message="; ".join(parts) + ".",
        )
