"""Labelling tools: label_images (photos -> an unreviewed dataset, locally or through the Batch API),
review_labels (contact sheets), fix_labels and export_dataset. Thin: the logic is in labelling.py,
reviewing.py, sheets.py and exports.py."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import batch_api, labelling, local_batch
from ..labelling import DatasetLog, LabelJob
from ..state import AppState, Ctx
from .local_batch import Failure, failures
from .results import compact
from .skills import Model

# ---- results ----------------------------------------------------------------------------------


class ClassTally(BaseModel):
    name: str
    examples: int = Field(description="Examples written for this class in this call.")
    empty: int = Field(description="Of those, how many found nothing.")
    found: int = Field(description="Boxes or points found in all.")


class Labelled(BaseModel):
    output: str = Field(description="The dataset (JSONL); review it with review_labels.")
    engine: str
    status: Literal["done", "submitted", "processing"] = Field(
        description="batch_api: submitted or processing until the results are written; then done."
    )
    images: int
    labelled: int = Field(description="Images labelled in this call.")
    skipped: int = Field(description="Images every class already had an example for (left as they are).")
    failed: int = Field(description="Images (or image-class lines) that failed; a rerun retries them.")
    examples: int = Field(description="Lines written in this call.")
    classes: list[ClassTally]
    failures: list[Failure]
    batch_id: str | None = None
    elapsed_s: float
    message: str


# ---- parameters -------------------------------------------------------------------------------

Images = Annotated[
    list[str] | str,
    Field(description="A list of image references, or one string naming a directory or a glob (~/shoot/**/*.jpg)."),
]

WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)


def _tallies(log: DatasetLog) -> list[ClassTally]:
    return [ClassTally(name=c, examples=n.examples, empty=n.empty, found=n.found) for c, n in log.counts.items()]


def register(server: MCPServer[AppState]) -> None:
    @server.tool(title="Label photos into a dataset", annotations=WRITE)
    @compact
    async def label_images(
        images: Images,
        classes: Annotated[
            list[str],
            Field(min_length=1, max_length=labelling.MAX_CLASSES, description="What to label, each its own prompt."),
        ],
        output: Annotated[
            str, Field(min_length=1, description="The dataset JSONL to write (new, or one to add to and resume).")
        ],
        ctx: Ctx,
        skill: Literal["detect", "point"] = "detect",
        model: Model = None,
        engine: Annotated[
            Literal["local", "batch_api"],
            Field(description="batch_api: half price for thousands of images; call again to write the results."),
        ] = "local",
        wait_seconds: Annotated[
            float, Field(ge=0, le=600, description="batch_api: wait this long for the results.")
        ] = 0,
    ) -> Labelled:
        """Label photos with Moondream: every class is asked on every image and each answer becomes a
        dataset example (boxes or points, 0-1 in the image as displayed) marked reviewed=false, written as it
        arrives. A rerun with the same output skips what is labelled. Next: review_labels, fix_labels."""
        state = ctx.request_context.lifespan_context
        started = time.monotonic()
        with state.errors():
            job = LabelJob(skill=skill, classes=tuple(classes), model=model)
            refs = local_batch.expand(images, state.files)
            path = state.files.check(output, for_writing=True)
            if path.suffix.lower() != ".jsonl":
                raise ToolError(f"the output is a dataset: give a .jsonl path, not {path.name}")
            log = DatasetLog(path, job, refs)
            done = await anyio.to_thread.run_sync(log.done, job.id)
        todo = [r for r in refs if r not in done]

        def report(
            status: Any, labelled: int, failed: int, groups: list[Failure], message: str, **extra: Any
        ) -> Labelled:
            return Labelled(
                output=str(path),
                engine=engine,
                status=status,
                images=len(refs),
                labelled=labelled,
                skipped=len(done),
                failed=failed,
                examples=log.written,
                classes=_tallies(log),
                failures=groups,
                elapsed_s=round(time.monotonic() - started, 3),
                message=message,
                **extra,
            )

        if engine == "local":

            async def work(ref: str) -> dict[str, Any]:
                return await labelling.label_image(state.vision, job, ref, log.missing(ref))

            with state.errors(), labelling.exclusive(path):
                try:
                    outcome = await local_batch.run(
                        refs, work, log, job=job.id, explain=state.explain, progress=ctx.report_progress
                    )
                except OSError as exc:
                    raise ToolError(f"cannot write the dataset {path}: {exc.strerror}") from None
            note = f"; {outcome.failed} failed (rerun to retry them)" if outcome.failed else ""
            return report(
                "done",
                outcome.succeeded,
                outcome.failed,
                failures(outcome.failures),
                f"{log.written} examples written from {outcome.succeeded} images{note}. Next: review_labels.",
            )

        pending = labelling.PendingBatches(state.settings.data_dir / "labelling" / "batches.jsonl")
        key = labelling.batch_key(job, refs, path)
        with state.errors():
            found = await anyio.to_thread.run_sync(pending.find, key)
            if found is None:
                if not todo:
                    return report("done", 0, 0, [], "every image is labelled already.")
                submitted = await labelling.submit(
                    state.client,
                    state.images,
                    state.store,
                    job,
                    todo,
                    state.settings.data_dir / "batch-uploads",
                    part_bytes=state.settings.batch_part_bytes,
                    explain=state.explain,
                    progress=ctx.report_progress,
                )
                await anyio.to_thread.run_sync(pending.add, key, submitted.batch_id, submitted.images)
                batch_id = submitted.batch_id
            else:
                batch_id = str(found["batch_id"])
            try:
                with labelling.exclusive(path):
                    collected = await labelling.collect(
                        state.client,
                        state.store,
                        job,
                        batch_id,
                        log,
                        state.settings.data_dir / "labelling" / f"{batch_id}.results.jsonl",
                        wait_seconds=wait_seconds,
                        progress=ctx.report_progress,
                    )
            except batch_api.BatchNotDone as exc:
                status = "submitted" if found is None else "processing"
                return report(
                    status,
                    0,
                    0,
                    [],
                    f"{exc} Call label_images again with the same arguments to write the dataset.",
                    batch_id=batch_id,
                )
            except batch_api.BatchFailed:
                await anyio.to_thread.run_sync(pending.finish, key, batch_id)  # the next call submits afresh
                raise
        await anyio.to_thread.run_sync(pending.finish, key, batch_id)
        note = f"; {collected.failed} lines failed (call again to retry them)" if collected.failed else ""
        return report(
            "done",
            collected.images,
            collected.failed,
            failures(collected.failures),
            f"{log.written} examples written from {collected.images} images{note}. Next: review_labels.",
            batch_id=batch_id,
        )
