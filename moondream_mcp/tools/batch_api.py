"""The Moondream Batch API as tools: submit a big job, watch it, fetch its results mapped back to the images."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import batching
from ..client import MoondreamError, Sampling
from ..client.batch import BatchJob, Part
from ..store import new_id
from .batch import Failure
from .errors import EXPECTED, describe, tool_errors
from .results import compact
from .skills import Length, MaxObjects, MaxTokens, Model, Temperature, TopP

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from ..server import AppState

PREPARE_CONCURRENCY = 4  # images decoded at once while the upload file is written
POLL_WAITS = (0.25, 0.5, 1.0, 2.0)  # then every 2 s
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
BatchId = Annotated[str, Field(min_length=1, description="The batch id submit_batch returned.")]


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
    model: str | None
    total: int | None
    completed: int | None
    failed: int | None
    result_files: int
    created_at: Any = None
    completed_at: Any = None
    expires_at: Any = None


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
    progress = job.progress
    return BatchStatus(
        batch_id=job.id, status=job.status, model=job.model,
        total=progress.total if progress else None, completed=progress.completed if progress else None,
        failed=progress.failed if progress else None, result_files=len(job.outputs),
        created_at=job.created_at, completed_at=job.completed_at, expires_at=job.expires_at,
    )


def _line(index: int, skill: str, jpeg: bytes, fields: dict[str, Any]) -> bytes:
    # The Batch API takes raw base64, without the data: prefix.
    record = {"id": str(index), "skill": skill, "image": base64.b64encode(jpeg).decode(), **fields}
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def register(server: MCPServer[AppState]) -> None:
    @server.tool(title="Submit a batch job (Batch API)", annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True))
    @compact
    async def submit_batch(
        skill: Annotated[Literal["caption", "query", "detect", "point"], Field(description="The skill to run.")],
        images: Annotated[list[str] | str, Field(description=(
            "The images: a list of references, or one string naming a directory or a glob, inside the allowed "
            "directories."))],
        ctx: Context,
        object: Annotated[str | None, Field(description="detect / point: what to look for.")] = None,
        question: Annotated[str | None, Field(description="query: the question asked of every image.")] = None,
        length: Length = "normal",
        max_objects: MaxObjects = None,
        model: Model = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
    ) -> Submitted:
        """Submit a large job to Moondream's Batch API (half price, finishes within hours): the images are
        prepared and written to a JSONL file on disk, uploaded in parts, and queued. Check it with
        batch_status; fetch results with batch_results once completed (kept 7 days). For a few hundred
        images or fewer, the batch tool answers sooner."""
        state: AppState = ctx.request_context.lifespan_context
        if skill in ("detect", "point") and not object:
            raise ToolError(f"the {skill} skill needs `object`")
        if skill == "query" and not question:
            raise ToolError("the query skill needs `question`")
        settings = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                            max_objects=max_objects if skill == "detect" else None).wire()
        fields: dict[str, Any] = {
            "caption": {"length": length}, "query": {"question": question},
        }.get(skill, {"object": object})
        if settings:
            fields["settings"] = settings

        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            refs = batching.expand(images, state.images)
        staging = state.settings.data_dir / "batch-uploads" / f"{new_id('up')}.jsonl"
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            lines, skipped = await _write_lines(state, ctx, refs, staging, skill, fields)
            if not lines:
                raise ToolError("none of the images could be prepared: " + "; ".join(
                    f"{f.reason} ({f.count})" for f in skipped))
            with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
                job, parts = await _upload(state, ctx, staging, model)
        finally:
            staging.unlink(missing_ok=True)
        await state.store.add_batch(job.id, skill, refs)
        size = job.size if job.size is not None else 0
        return Submitted(
            batch_id=job.id, status=job.status, lines=lines, bytes=size, parts=parts, skipped=skipped,
            message=f"queued {lines} images as batch {job.id}; check with batch_status, then fetch with "
                    "batch_results" + (f"; {sum(f.count for f in skipped)} images skipped" if skipped else ""),
        )

    @server.tool(title="Status of a batch job", annotations=READ)
    @compact
    async def batch_status(batch_id: BatchId, ctx: Context) -> BatchStatus:
        """Where a Batch API job stands: status and how many lines are done."""
        state: AppState = ctx.request_context.lifespan_context
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            return _status(await state.client.batches.get(batch_id))

    @server.tool(title="List batch jobs", annotations=READ)
    @compact
    async def list_batches(
        ctx: Context,
        limit: Annotated[int | None, Field(ge=1, le=100, description="Page size, 1-100.")] = None,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page.")] = None,
    ) -> BatchList:
        """Batch API jobs of this account, a page at a time."""
        state: AppState = ctx.request_context.lifespan_context
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            page = await state.client.batches.list(limit=limit, cursor=cursor)
        return BatchList(batches=[_status(b) for b in page.batches], next_cursor=page.next_cursor,
                         has_more=page.has_more)

    @server.tool(title="Fetch a batch job's results", annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True))
    @compact
    async def batch_results(
        batch_id: BatchId,
        output: Annotated[str, Field(description="Where to write the JSONL results (inside the allowed "
                                     "directories); replaced if it exists.")],
        ctx: Context,
        wait_seconds: Annotated[float, Field(ge=0, le=600, description="Wait up to this long for the job to "
                                             "complete (with progress updates); 0: don't wait.")] = 0,
    ) -> BatchResults:
        """Download a completed batch job's result files and write one line per image, each mapped back to
        the image reference it came from. Coordinates are 0-1, origin top-left of each image."""
        state: AppState = ctx.request_context.lifespan_context
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            path = state.images.check_path(output, for_writing=True)
            job = await _await_completion(state, ctx, batch_id, wait_seconds)
            refs = await state.store.batch_images(batch_id)
            return await _write_results(state, job, refs, path)


async def _write_lines(state: AppState, ctx: Context, refs: list[str], staging: Path, skill: str,
                       fields: dict[str, Any]) -> tuple[int, list[Failure]]:
    """Prepare each image and append its line to `staging`; nothing but the file holds the images."""
    limiter = anyio.CapacityLimiter(PREPARE_CONCURRENCY)
    written = 0
    failures: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    handle = await anyio.open_file(staging, "wb")

    async def one(index: int, ref: str) -> None:
        nonlocal written
        async with limiter:
            try:
                prepared = await state.images.load(ref)
            except EXPECTED as exc:
                reason = describe(exc, endpoint=state.settings.endpoint, secret=state.secret)
                failures[reason] += 1
                examples.setdefault(reason, []).append(ref)
                return
            await handle.write(_line(index, skill, prepared.jpeg, fields))
            written += 1
        await ctx.report_progress(written, len(refs), f"prepared {written}/{len(refs)} images")

    try:
        async with anyio.create_task_group() as tasks:
            for index, ref in enumerate(refs):
                tasks.start_soon(one, index, ref)
    finally:
        await handle.aclose()
    return written, [Failure(reason=r, count=c, images=examples[r][:5]) for r, c in failures.most_common()]


async def _upload(state: AppState, ctx: Context, staging: Path, model: str | None) -> tuple[BatchJob, int]:
    """Upload `staging` part by part, reading one part at a time; abort the upload on failure."""
    batches = state.client.batches
    size = (await anyio.Path(staging).stat()).st_size
    part_size = state.settings.batch_part_bytes
    total_parts = max(1, -(-size // part_size))
    upload = await batches.create_upload()
    parts: list[Part] = []
    try:
        async with await anyio.open_file(staging, "rb") as f:
            while chunk := await f.read(part_size):
                parts.append(await batches.upload_part(upload, len(parts) + 1, chunk))
                await ctx.report_progress(len(parts), total_parts, f"uploaded part {len(parts)}/{total_parts}")
        job = await batches.complete(upload, parts, model)
    except BaseException:
        with anyio.CancelScope(shield=True):
            try:
                await batches.abort(upload)
            except MoondreamError:
                pass  # the upload expires on its own; the original error matters more
        raise
    return job.model_copy(update={"size": job.size if job.size is not None else size}), len(parts)


async def _await_completion(state: AppState, ctx: Context, batch_id: str, wait_seconds: float) -> BatchJob:
    job = await state.client.batches.get(batch_id)
    polls = 0
    with anyio.move_on_after(wait_seconds):
        while job.status not in ("completed", "failed"):
            await anyio.sleep(POLL_WAITS[min(polls, len(POLL_WAITS) - 1)])
            polls += 1
            job = await state.client.batches.get(batch_id)
            if job.progress and job.progress.total:
                await ctx.report_progress(job.progress.completed or 0, job.progress.total, f"batch {job.status}")
    if job.status == "failed":
        raise ToolError(f"batch {batch_id} failed: {job.error or 'the API gave no reason'}")
    if job.status != "completed":
        done = f" ({job.progress.completed}/{job.progress.total} lines)" if job.progress else ""
        raise ToolError(f"batch {batch_id} is still {job.status}{done}; call again later, or pass wait_seconds.")
    return job


async def _write_results(state: AppState, job: BatchJob, refs: list[str] | None, path: Path) -> BatchResults:
    """Stream every result file into `path` (via a temporary file, so a failure leaves no half output)."""
    temporary = path.with_name(f".{path.name}.{new_id('part')}")
    ok = failed = lines = 0
    failures: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    samples: list[dict[str, Any]] = []
    try:
        async with await anyio.open_file(temporary, "w", encoding="utf-8") as out:
            for file in sorted(job.outputs, key=lambda o: o.index):
                async with state.client.batches.download(file.url) as response:
                    async for text in response.aiter_lines():
                        if not text.strip():
                            continue
                        record = json.loads(text)
                        line_id = str(record.get("id", ""))
                        image = refs[int(line_id)] if refs and line_id.isdigit() and int(line_id) < len(refs) else None
                        row: dict[str, Any] = {"image": image, "id": line_id, "line_index": record.get("line_index")}
                        if record.get("status") == "ok":
                            row.update(ok=True, result=record.get("result"))
                            ok += 1
                            if len(samples) < 3:
                                samples.append({"image": image, "result": record.get("result")})
                        else:
                            error = record.get("error") or {}
                            message = error.get("message") if isinstance(error, dict) else str(error)
                            row.update(ok=False, error=message)
                            failed += 1
                            failures[str(message)] += 1
                            examples.setdefault(str(message), []).append(image or line_id)
                        lines += 1
                        await out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except ValueError:
        raise ToolError(f"a result file of batch {job.id} is not valid JSONL") from None
    finally:
        temporary.unlink(missing_ok=True)
    return BatchResults(
        batch_id=job.id, output=str(path), lines=lines, succeeded=ok, failed=failed,
        failures=[Failure(reason=r, count=c, images=examples[r][:5]) for r, c in failures.most_common()],
        samples=samples,
    )
