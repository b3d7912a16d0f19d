"""Moondream's Batch API, end to end: images prepared into a JSONL staging file, uploaded in parts (the
upload aborted on failure), the job polled, and its result files mapped back to the images they came
from. Not the local batch (local_batch.py), which calls the skills one image at a time. Knows nothing
of MCP.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import anyio

from . import jsonl
from .client import MoondreamClient, MoondreamError, Sampling
from .client.batch import MAX_PART_BYTES, MIN_PART_BYTES, BatchJob, Part
from .client.errors import printable
from .failures import EXPECTED, Explain, FailureGroups, InputError
from .images import ImageLoader
from .jsonl import LineWriter

PREPARE_CONCURRENCY = 4  # images decoded at once while the upload file is written
POLL_WAITS = (0.25, 0.5, 1.0, 2.0)  # then every 2 s
SAMPLES = 3

Progress = Callable[[float, float | None, str | None], Awaitable[None]]


async def _quiet(_done: float, _total: float | None, _message: str | None) -> None:
    return None


class BatchFailed(InputError):
    """The job ended as failed; the message carries the API's reason."""


class BatchNotDone(InputError):
    """The job is still running; the message says how far it got."""


def line_fields(
    skill: str,
    *,
    object: str | None,
    question: str | None,
    length: str,
    reasoning: bool = False,
    sampling: Sampling | None = None,
) -> dict[str, Any]:
    """What every line of a job carries besides its id, skill and image. InputError for what the Batch API
    does not take: settings on detect and point lines, reasoning on anything but query."""
    fields: dict[str, Any] = (
        {"length": length} if skill == "caption" else {"question": question} if skill == "query" else {"object": object}
    )
    if skill == "query":
        # Always sent: the Batch API reasons by default, and reasoning is billed.
        fields["reasoning"] = reasoning
    elif reasoning:
        raise InputError("reasoning is for query jobs only")
    settings = sampling.wire() if sampling is not None else None
    if settings and skill not in ("caption", "query"):
        raise InputError(
            f"the Batch API takes sampling settings ({', '.join(settings)}) on caption and query lines only; "
            f"drop them for {skill}, or use the batch tool"
        )
    if settings:
        fields["settings"] = settings
    return fields


def line(index: int, skill: str, image: bytes, fields: dict[str, Any]) -> bytes:
    """One upload line. The Batch API takes raw base64 (`image`), without the data: prefix; base64 holds
    nothing JSON escapes, so it goes in as it is rather than through the encoder."""
    head = jsonl.line({"id": str(index), "skill": skill})[:-2]  # without the closing brace and newline
    rest = jsonl.line(fields)[1:-2]
    return head + b',"image":"' + image + b'"' + (b"," + rest if rest else b"") + b"}\n"


@dataclass
class Prepared:
    lines: int  # images written (each with one line per variant)
    skipped: FailureGroups


async def write_lines(
    images: ImageLoader,
    refs: list[str],
    staging: BinaryIO,
    skill: str,
    fields: dict[str, Any],
    *,
    explain: Explain,
    progress: Progress = _quiet,
    variants: Sequence[dict[str, Any]] = ({},),
) -> Prepared:
    """Prepare each image and append its lines to `staging` (opened through the file guard); nothing but
    the file holds the images.

    Each image gets one line per variant (fields merged over `fields`), ids numbered image by image:
    the line of image i and variant v has id i * len(variants) + v. Every image is decoded and encoded
    once. PREPARE_CONCURRENCY workers take the images from one iterator, so memory does not grow with
    their number.
    """
    written = 0
    skipped = FailureGroups()
    handle = anyio.wrap_file(staging)
    pending = iter(enumerate(refs))

    async def worker() -> None:
        nonlocal written
        for index, ref in pending:  # shared: each image is taken by exactly one worker
            try:
                prepared = await images.load(ref)
            except EXPECTED as exc:
                skipped.add(explain(exc), ref)
                continue
            image = base64.b64encode(prepared.jpeg)
            for v, variant in enumerate(variants):
                await handle.write(line(index * len(variants) + v, skill, image, {**fields, **variant}))
            written += 1
            await progress(written, len(refs), f"prepared {written}/{len(refs)} images")

    async with anyio.create_task_group() as tasks:
        for _ in range(min(PREPARE_CONCURRENCY, len(refs))):
            tasks.start_soon(worker)
    await handle.flush()
    return Prepared(lines=written, skipped=skipped)


async def upload(
    client: MoondreamClient, staging: BinaryIO, model: str | None, *, part_bytes: int, progress: Progress = _quiet
) -> tuple[BatchJob, int]:
    """Upload `staging` from its start, part by part, reading one part at a time; abort the upload on failure.

    Every part but the last is exactly `part_bytes` (kept within MIN_PART_BYTES-MAX_PART_BYTES), as the
    storage underneath demands.
    """
    batches = client.batches
    part_bytes = min(max(part_bytes, MIN_PART_BYTES), MAX_PART_BYTES)
    size = os.fstat(staging.fileno()).st_size
    staging.seek(0)
    total_parts = max(1, -(-size // part_bytes))
    started = await batches.create_upload()
    parts: list[Part] = []
    try:
        f = anyio.wrap_file(staging)
        while chunk := await _read_part(f, part_bytes):
            parts.append(await batches.upload_part(started, len(parts) + 1, chunk))
            await progress(len(parts), total_parts, f"uploaded part {len(parts)}/{total_parts}")
        job = await batches.complete(started, parts, model)
    except BaseException:
        with anyio.CancelScope(shield=True):
            try:
                await batches.abort(started)
            except MoondreamError:
                pass  # the upload expires on its own; the original error matters more
        raise
    return job.model_copy(update={"size": job.size if job.size is not None else size}), len(parts)


async def _read_part(f: anyio.AsyncFile[bytes], size: int) -> bytes:
    """`size` bytes, fewer only at the end of the file: a short read must not make a short part."""
    chunk = await f.read(size)
    while chunk and len(chunk) < size and (more := await f.read(size - len(chunk))):
        chunk += more
    return chunk


async def await_completion(
    client: MoondreamClient, batch_id: str, wait_seconds: float, *, progress: Progress = _quiet
) -> BatchJob:
    """The job once completed, polling up to `wait_seconds`; BatchFailed or BatchNotDone otherwise."""
    job = await client.batches.get(batch_id)
    polls = 0
    with anyio.move_on_after(wait_seconds):
        while job.status not in ("completed", "failed"):
            await anyio.sleep(POLL_WAITS[min(polls, len(POLL_WAITS) - 1)])
            polls += 1
            job = await client.batches.get(batch_id)
            if job.progress and job.progress.total:
                await progress(job.progress.completed or 0, job.progress.total, f"batch {job.status}")
    if job.status == "failed":
        raise BatchFailed(
            f"batch {batch_id} failed ({job.failure or 'the API gave no reason'}), so it has no results to "
            "fetch; fix what the reason names and submit the images again."
        )
    if job.status != "completed":
        done = f" ({job.progress.completed}/{job.progress.total} lines)" if job.progress else ""
        raise BatchNotDone(f"batch {batch_id} is still {job.status}{done}; call again later, or pass wait_seconds.")
    return job


@dataclass
class Results:
    lines: int = 0
    succeeded: int = 0
    failed: int = 0
    failures: FailureGroups = field(default_factory=FailureGroups)
    samples: list[dict[str, Any]] = field(default_factory=list)


async def write_results(client: MoondreamClient, job: BatchJob, refs: list[str] | None, lines: LineWriter) -> Results:
    """Stream every result file into `lines`, each line mapped back to the image reference its id names.
    On any failure the output is abandoned (jsonl.LineWriter.abandon), so no half output stays."""
    results = Results()
    try:
        for file in sorted(job.outputs, key=lambda o: o.index):
            async with client.batches.download(file.url) as response:
                async for text in response.aiter_lines():
                    if not text.strip():
                        continue
                    row = _mapped(json.loads(text), refs, results)
                    await anyio.to_thread.run_sync(lines.write, row)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lines.abandon)
        if isinstance(exc, ValueError):
            raise InputError(f"a result file of batch {job.id} is not valid JSONL") from None
        raise
    await anyio.to_thread.run_sync(lines.close)
    return results


def job_of(batch_id: str) -> str:
    """The id marking a batch's results file: the same batch, the same job."""
    return jsonl.job_id(tool="batch_results", batch=batch_id)


def _mapped(record: dict[str, Any], refs: list[str] | None, results: Results) -> dict[str, Any]:
    line_id = str(record.get("id", ""))
    image = refs[int(line_id)] if refs and line_id.isdigit() and int(line_id) < len(refs) else None
    row: dict[str, Any] = {"image": image, "id": line_id, "line_index": record.get("line_index")}
    if record.get("status") == "ok":
        row.update(ok=True, result=record.get("result"))
        results.succeeded += 1
        if len(results.samples) < SAMPLES:
            results.samples.append({"image": image, "result": record.get("result")})
    else:
        error = record.get("error") or {}
        message = printable(error.get("message") if isinstance(error, dict) else error)
        row.update(ok=False, error=message)
        results.failed += 1
        results.failures.add(str(message), image or line_id)
    results.lines += 1
    return row
