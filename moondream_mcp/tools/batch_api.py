"""The Moondream Batch API as tools: submit a big job, watch it, fetch its results mapped back to the images."""

from __future__ import annotations

import os
from functools import partial
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import batch_api, local_batch
from ..client import Sampling
from ..client.batch import BatchJob
from ..failures import EXPECTED
from ..jsonl import LineWriter
from ..state import Ctx
from ..store import new_id
from . import bounds
from .confirm import Answer, Confirmation, ask, can_ask, require_yes
from .local_batch import IMAGES, Failure, failures
from .progress import progress
from .results import compact
from .schemas import NonEmpty
from .skills import Length, MaxTokens, Model, Temperature, TopP
from .toolsets import Toolbox

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
BatchId = Annotated[NonEmpty, Field(max_length=bounds.NAME_CHARS, description="From submit_batch.")]


class Submitted(BaseModel):
    batch_id: str
    status: str = Field(description="As the API reports it: chunking, processing, completed or failed.")
    lines: int = Field(description="Images uploaded (one line each).")
    bytes: int = Field(description="Size of the uploaded JSONL file.")
    parts: int = Field(description="Upload parts sent.")
    skipped: list[Failure] = Field(description="Images that could not be prepared, by reason; not uploaded.")
    message: str


class BatchStatus(BaseModel):
    batch_id: str
    status: str
    error: str | None = Field(description="Why a failed job failed, as the API said (code: message).")
    model: str | None
    total: int | None
    completed: int | None
    failed: int | None
    result_files: int
    created_at_ms: int | None = Field(description="Unix time in milliseconds, like every timestamp here.")
    completed_at_ms: int | None
    expires_at_ms: int | None = Field(description="When the results are deleted.")


class BatchList(BaseModel):
    batches: list[BatchStatus]
    next_cursor: str | None
    has_more: bool


class BatchResults(BaseModel):
    batch_id: str
    output: str = Field(description="JSONL, one line per image: {image, line_index, ok, result | error}.")
    lines: int
    succeeded: int
    failed: int
    failures: list[Failure]
    samples: list[dict[str, Any]]


def _status(job: BatchJob) -> BatchStatus:
    counts = job.progress
    return BatchStatus(
        batch_id=job.id,
        status=job.status,
        error=job.failure,
        model=job.model,
        total=counts.total if counts else None,
        completed=counts.completed if counts else None,
        failed=counts.failed if counts else None,
        result_files=len(job.outputs),
        created_at_ms=job.created_at_ms,
        completed_at_ms=job.completed_at_ms,
        expires_at_ms=job.expires_at_ms,
    )


async def _ask_submit(skill: str, images: list[str] | str, ctx: Ctx) -> Confirmation | Elicit[Confirmation]:
    state = ctx.request_context.lifespan_context
    if not can_ask(ctx):
        return Confirmation()
    try:
        count = len(await anyio.to_thread.run_sync(local_batch.expand, images, state.files))
    except EXPECTED:
        return Confirmation()  # the tool reports what is wrong with the images
    if count <= state.settings.confirm_batch_above:
        return Confirmation()
    return ask(
        ctx,
        f"Submit {count} images to Moondream's Batch API ({skill})? That is {count} API calls, "
        "billed to the API key at batch rates.",
    )


def register(tools: Toolbox) -> None:
    @tools.tool(
        "batch",
        read_only=False,
        title="Submit a batch job (Batch API)",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )
    @compact
    async def submit_batch(
        skill: Annotated[Literal["caption", "query", "detect", "point"], Field(description="Skill.")],
        images: Annotated[bounds.Images, Field(description=IMAGES)],
        ctx: Ctx,
        answer: Annotated[Answer, Resolve(_ask_submit)],
        object: Annotated[str | None, Field(max_length=bounds.OBJECT_CHARS, description="What to find.")] = None,
        question: Annotated[str | None, Field(max_length=bounds.TEXT_CHARS, description="Question.")] = None,
        length: Length = "normal",
        reasoning: Annotated[bool, Field(description="Reason first (billed).")] = False,
        model: Model = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
    ) -> Submitted:
        """Queue a Batch API job: half price, within hours."""
        state = ctx.request_context.lifespan_context
        require_yes(answer, "the batch was not submitted")
        sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        with state.errors():
            fields = batch_api.line_fields(
                skill, object=object, question=question, length=length, reasoning=reasoning, sampling=sampling
            )
            local_batch.require_prompt(skill, object=object, question=question)
            refs = await anyio.to_thread.run_sync(local_batch.expand, images, state.files)
            opened = await anyio.to_thread.run_sync(state.files.open_own, "batch-uploads", f"{new_id('up')}.jsonl")
        # Written, then read back for the upload, through the one handle; removed whatever happens.
        staging = os.fdopen(os.dup(opened.fd), "w+b")
        try:
            async with progress(ctx, "preparing the images") as tracker:
                prepared = await batch_api.write_lines(
                    state.images, refs, staging, skill, fields, explain=state.explain, progress=tracker.report
                )
            skipped = failures(prepared.skipped)
            if not prepared.lines:
                raise ToolError(
                    "none of the images could be prepared: " + "; ".join(f"{f.reason} ({f.count})" for f in skipped)
                )
            with state.errors():
                async with progress(ctx, "uploading") as tracker:
                    job, parts = await batch_api.upload(
                        state.client,
                        staging,
                        model,
                        part_bytes=state.settings.batch_part_bytes,
                        progress=tracker.report,
                    )
        finally:
            staging.close()
            opened.discard()
        lines = prepared.lines
        await state.store.add_batch(job.id, skill, refs)
        size = job.size if job.size is not None else 0
        return Submitted(
            batch_id=job.id,
            status=job.status,
            lines=lines,
            bytes=size,
            parts=parts,
            skipped=skipped,
            message=f"queued {lines} images as batch {job.id}; check with batch_status, then fetch with "
            "batch_results" + (f"; {sum(f.count for f in skipped)} images skipped" if skipped else ""),
        )

    @tools.tool("batch", read_only=True, title="Status of a batch job", annotations=READ)
    @compact
    async def batch_status(batch_id: BatchId, ctx: Ctx) -> BatchStatus:
        """A Batch API job's status."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            return _status(await state.client.batches.get(batch_id))

    @tools.tool("batch", read_only=True, title="List batch jobs", annotations=READ)
    @compact
    async def list_batches(
        ctx: Ctx,
        limit: Annotated[int | None, Field(ge=1, le=100, description="Page size.")] = None,
        cursor: Annotated[str | None, Field(max_length=bounds.NAME_CHARS, description="From next_cursor.")] = None,
    ) -> BatchList:
        """List Batch API jobs."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            page = await state.client.batches.list(limit=limit, cursor=cursor)
        return BatchList(
            batches=[_status(b) for b in page.batches], next_cursor=page.next_cursor, has_more=page.has_more
        )

    # Destructive: it rewrites its own earlier results of the same batch (never any other file).
    @tools.tool(
        "batch",
        read_only=False,
        title="Fetch a batch job's results",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
        ),
    )
    @compact
    async def batch_results(
        batch_id: BatchId,
        output: Annotated[str, Field(max_length=bounds.PATH_CHARS, description="New JSONL, or this batch's.")],
        ctx: Ctx,
        wait_seconds: Annotated[float, Field(ge=0, le=600, description="Seconds to wait.")] = 0,
    ) -> BatchResults:
        """Write a finished batch job's results to JSONL."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            opened = await anyio.to_thread.run_sync(state.files.open_output, output)
            lines = await anyio.to_thread.run_sync(
                partial(LineWriter.claim, opened, batch_api.job_of(batch_id), "replace", tool="batch_results")
            )
            async with progress(ctx, f"waiting for batch {batch_id}") as tracker:
                try:
                    job = await batch_api.await_completion(
                        state.client, batch_id, wait_seconds, progress=tracker.report
                    )
                    refs = await state.store.batch_images(batch_id)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(lines.abandon)
                    raise
                await tracker.report(0, None, "downloading the results")
                results = await batch_api.write_results(state.client, job, refs, lines)
        path = opened.path
        return BatchResults(
            batch_id=job.id,
            output=str(path),
            lines=results.lines,
            succeeded=results.succeeded,
            failed=results.failed,
            failures=failures(results.failures),
            samples=results.samples,
        )
