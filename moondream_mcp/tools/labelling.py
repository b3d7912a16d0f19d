"""Labelling tools: label_images (photos -> an unreviewed dataset, locally or through the Batch API),
review_labels (contact sheets), fix_labels and export_dataset. Thin: the logic is in labelling.py,
reviewing.py, sheets.py and exports.py."""

from __future__ import annotations

import hashlib
import time
from functools import partial
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, ToolAnnotations
from pydantic import BaseModel, Field

from .. import batch_api, exports, labelling, local_batch, outputs, reviewing
from ..files import os_failure
from ..labelling import DatasetLog, LabelJob
from ..state import AppState, Ctx
from . import bounds
from .dataset_checks import DatasetPath
from .local_batch import IMAGES, Failure, failures
from .pictures import image_content
from .results import compact, structured
from .schemas import NonEmpty
from .skills import Model
from .toolsets import Toolbox

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


class ReviewCell(BaseModel):
    cell: int = Field(description="The number on the sheet.")
    line: int = Field(description="The example's line in the dataset: what fix_labels takes.")
    image: str
    object: str
    labels: list[list[float]] = Field(
        description="Boxes [x_min, y_min, x_max, y_max] or points [x, y], 0-1, numbered from 1 as drawn."
    )
    reviewed: bool
    error: str | None = Field(default=None, description="Why the image could not be shown.")


class SheetFile(BaseModel):
    path: str = Field(description="The sheet as a JPEG file.")
    cells: list[int]


class ReviewPage(BaseModel):
    dataset: str
    page: int
    pages: int
    matching: int = Field(description="Examples passing the filters, on every page.")
    unreviewed: int = Field(description="Detect and point examples not yet reviewed, in the whole file.")
    sheets: list[SheetFile]
    cells: list[ReviewCell]
    message: str


class Fixed(BaseModel):
    dataset: str
    changed: dict[str, int] = Field(description="Lines changed by each action.")
    lines: int = Field(description="Lines changed in all.")
    unreviewed: int = Field(description="Examples left to review.")
    message: str


class ExportReport(BaseModel):
    output: str
    format: str
    images: int
    boxes: int
    classes: list[str] = Field(description="Class names, in class-index order.")
    splits: dict[str, int] = Field(description="Images per split (eval is named val in the files).")
    files: int
    rotated: int = Field(description="Linked images with an EXIF turn: tools that ignore EXIF misplace their boxes.")
    skipped: int
    skipped_reasons: list[str]
    message: str


# ---- parameters -------------------------------------------------------------------------------

Boxes = Annotated[
    list[Annotated[list[bounds.Coordinate], Field(min_length=4, max_length=4)]], Field(max_length=bounds.MAX_OBJECTS)
]
Points = Annotated[
    list[Annotated[list[bounds.Coordinate], Field(min_length=2, max_length=2)]], Field(max_length=bounds.MAX_OBJECTS)
]


class FixIn(BaseModel):
    # One change, applied to each of `lines`.
    lines: list[Annotated[int, Field(le=bounds.LINE)]] = Field(
        min_length=1, max_length=bounds.EXAMPLES, description="From review_labels."
    )
    action: Literal["accept", "drop", "replace", "none", "remove"] = Field(description="none: object absent.")
    drop: list[Annotated[int, Field(le=bounds.MAX_OBJECTS)]] | None = Field(
        default=None, max_length=bounds.MAX_OBJECTS, description="Label numbers as drawn."
    )
    boxes: Boxes | None = None
    points: Points | None = None


WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
LOOK = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
EXPORT = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
FIX = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)


def _tallies(log: DatasetLog) -> list[ClassTally]:
    return [ClassTally(name=c, examples=n.examples, empty=n.empty, found=n.found) for c, n in log.counts.items()]


def register(tools: Toolbox) -> None:
    @tools.tool("training", read_only=False, title="Label photos into a dataset", annotations=WRITE)
    @compact
    async def label_images(
        images: Annotated[bounds.Images, Field(description=IMAGES)],
        classes: Annotated[
            list[Annotated[str, Field(max_length=bounds.OBJECT_CHARS)]],
            Field(min_length=1, max_length=labelling.MAX_CLASSES, description="What to label."),
        ],
        output: Annotated[
            NonEmpty,
            Field(max_length=bounds.PATH_CHARS, description="New JSONL, or an earlier one."),
        ],
        ctx: Ctx,
        skill: Annotated[Literal["detect", "point"], Field(description="Boxes or points.")] = "detect",
        model: Model = None,
        engine: Annotated[
            Literal["local", "batch_api"],
            Field(description="batch_api: half price; call again to write results."),
        ] = "local",
        wait_seconds: Annotated[float, Field(ge=0, le=600, description="batch_api: wait this long.")] = 0,
    ) -> Labelled:
        """Label images into a dataset; a rerun skips what is done."""
        state = ctx.request_context.lifespan_context
        started = time.monotonic()
        with state.errors():
            job = LabelJob(skill=skill, classes=tuple(classes), model=model)
            refs = await anyio.to_thread.run_sync(local_batch.expand, images, state.files)
            log = await anyio.to_thread.run_sync(labelling.open_dataset, state.files, output, job, refs)
        try:
            with state.errors(), labelling.exclusive(log.path):
                return await _label(ctx, state, log, job, refs, engine, wait_seconds, started)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(log.close)

    @tools.tool("training", read_only=True, title="Review labels as contact sheets", annotations=LOOK)
    async def review_labels(
        dataset: DatasetPath,
        ctx: Ctx,
        page: Annotated[int, Field(ge=1, le=bounds.EXAMPLES, description="Page.")] = 1,
        per_page: Annotated[int, Field(ge=1, le=48, description="Examples per page.")] = 24,
        unreviewed: Annotated[bool, Field(description="Only unreviewed.")] = False,
        object: Annotated[str | None, Field(max_length=bounds.OBJECT_CHARS, description="Only this class.")] = None,
        found: Annotated[
            Literal["nothing", "many"] | None,
            Field(description="No labels, or `many` or more."),
        ] = None,
        many: Annotated[int, Field(ge=1, le=100, description="Count for `many`.")] = 5,
    ) -> Annotated[CallToolResult, ReviewPage]:
        """Examples as contact sheets; `cells` gives their lines for fix_labels."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            lines = await anyio.to_thread.run_sync(reviewing.read, state.files, dataset)
        path = lines.path
        chosen = reviewing.page(
            lines.entries, unreviewed=unreviewed, object=object, found=found, many=many, number=page, size=per_page
        )
        if page > chosen.pages:
            raise ToolError(f"page {page} is past the last page ({chosen.pages}) of {chosen.matching} examples")
        shown = await reviewing.show(
            chosen, first=(page - 1) * per_page + 1, images=state.images, explain=state.explain
        )
        cells = [
            ReviewCell(
                cell=number,
                line=entry.line,
                image=entry.example.image,
                object=entry.example.object or "",
                labels=[[round(v, 3) for v in label] for label in entry.labels],
                reviewed=entry.reviewed,
                error=error,
            )
            for number, entry, error in shown.cells
        ]
        tag = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        files: list[SheetFile] = []
        pictures: list[ImageContent] = []
        for index, (jpeg, on_it) in enumerate(shown.sheets, start=1):
            name = f"{path.stem}-{tag}-p{page}-{index}.jpg"
            with state.errors():
                saved = await anyio.to_thread.run_sync(outputs.save_own, state.files, "sheets", name, jpeg)
            files.append(SheetFile(path=str(saved.path), cells=on_it))
            pictures.append(image_content(jpeg))
        more = f"; next: page={page + 1}" if page < chosen.pages else ""
        status = ReviewPage(
            dataset=str(path),
            page=page,
            pages=chosen.pages,
            matching=chosen.matching,
            unreviewed=chosen.unreviewed,
            sheets=files,
            cells=cells,
            message=f"page {page} of {chosen.pages}: {len(cells)} of {chosen.matching} examples{more}. "
            "Fix or accept them with fix_labels, by line."
            if cells
            else "no example matches these filters.",
        )
        return structured(status, *pictures)

    @tools.tool("training", read_only=False, title="Fix labels", annotations=FIX)
    @compact
    async def fix_labels(
        dataset: DatasetPath,
        fixes: Annotated[list[FixIn], Field(min_length=1, max_length=1000, description="Applied in order.")],
        ctx: Ctx,
    ) -> Fixed:
        """Accept or fix examples by line, marking them reviewed."""
        state = ctx.request_context.lifespan_context
        plan = [
            reviewing.Fix(
                lines=tuple(f.lines),
                action=f.action,
                drop=tuple(f.drop or ()),
                boxes=f.boxes,
                points=f.points,
            )
            for f in fixes
        ]
        # Opened for reading (fixes never create a dataset), rewritten beside itself (outputs.rewrite).
        with (
            state.errors(),
            await anyio.to_thread.run_sync(partial(state.files.open, dataset, allow_empty=True)) as opened,
            labelling.exclusive(opened.path),
        ):
            applied = await anyio.to_thread.run_sync(reviewing.apply, state.files, opened, plan)
        path = opened.path
        done = ", ".join(f"{count} {action}" for action, count in applied.changed.items())
        return Fixed(
            dataset=str(path),
            changed=applied.changed,
            lines=applied.lines,
            unreviewed=applied.unreviewed,
            message=f"{applied.lines} lines changed ({done}); {applied.unreviewed} examples left to review.",
        )

    @tools.tool("training", read_only=False, title="Export a dataset (COCO, YOLO, VOC)", annotations=EXPORT)
    @compact
    async def export_dataset(
        dataset: DatasetPath,
        format: Annotated[Literal["coco", "yolo", "voc"], Field(description="Format.")],
        output: Annotated[
            NonEmpty,
            Field(max_length=bounds.PATH_CHARS, description="New or empty folder, or an earlier export."),
        ],
        ctx: Ctx,
        images: Annotated[Literal["copy", "link"], Field(description="Copy or symlink images.")] = "copy",
        reviewed_only: Annotated[bool, Field(description="Only reviewed examples.")] = False,
    ) -> ExportReport:
        """Export boxes as COCO, YOLO or VOC."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            try:
                done = await anyio.to_thread.run_sync(
                    partial(
                        exports.export,
                        state.files,
                        dataset,
                        output,
                        format=format,
                        mode=images,
                        reviewed_only=reviewed_only,
                    )
                )
            except OSError as exc:
                raise ToolError(str(os_failure("export to", str(output), exc))) from None
        how = {
            "coco": "import_dataset format=coco with each split's _annotations.coco.json",
            "yolo": "import_dataset format=yolo with the folder",
            "voc": "any VOC reader",
        }[format]
        return ExportReport(
            output=str(done.output),
            format=format,
            images=done.images,
            boxes=done.boxes,
            classes=done.classes,
            splits=done.splits,
            files=done.files,
            rotated=done.rotated,
            skipped=done.skipped_count,
            skipped_reasons=done.skipped,
            message=f"exported {done.images} images and {done.boxes} boxes of {len(done.classes)} classes to "
            f"{done.output}; read it back with {how}.",
        )


async def _label(
    ctx: Ctx,
    state: AppState,
    log: DatasetLog,
    job: LabelJob,
    refs: list[str],
    engine: str,
    wait_seconds: float,
    started: float,
) -> Labelled:
    """label_images once its dataset is claimed and no other call writes it."""
    done = await anyio.to_thread.run_sync(log.done)
    todo = [r for r in refs if r not in done]

    def report(status: Any, labelled: int, failed: int, groups: list[Failure], message: str, **extra: Any) -> Labelled:
        return Labelled(
            output=str(log.path),
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

        try:
            outcome = await local_batch.run(refs, work, log, explain=state.explain, progress=ctx.report_progress)
        except OSError as exc:
            raise ToolError(str(os_failure("write", f"the dataset {log.path}", exc))) from None
        note = f"; {outcome.failed} failed (rerun to retry them)" if outcome.failed else ""
        return report(
            "done",
            outcome.succeeded,
            outcome.failed,
            failures(outcome.failures),
            f"{log.written} examples written from {outcome.succeeded} images{note}. Next: review_labels.",
        )

    pending = labelling.PendingBatches(state.files)
    key = labelling.batch_key(job, refs, log.path)
    found = await anyio.to_thread.run_sync(pending.find, key)
    if found is None:
        if not todo:
            return report("done", 0, 0, [], "every image is labelled already.")
        submitted = await labelling.submit(
            state.client,
            state.images,
            state.files,
            state.store,
            job,
            todo,
            part_bytes=state.settings.batch_part_bytes,
            explain=state.explain,
            progress=ctx.report_progress,
        )
        await anyio.to_thread.run_sync(pending.add, key, submitted.batch_id, submitted.images)
        batch_id = submitted.batch_id
    else:
        batch_id = str(found["batch_id"])
    try:
        collected = await labelling.collect(
            state.client,
            state.files,
            state.store,
            job,
            batch_id,
            log,
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
