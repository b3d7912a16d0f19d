"""Labelling photos into a dataset: every class asked as its own detect or point prompt on every image
(classes are never merged into one prompt), each answer written as an unreviewed example of the
dataset format (datasets.py) as soon as it arrives.

Two engines, one output. Locally, image by image through local_batch.run (resumable, rate-limited,
failures grouped), the dataset file itself being the run's log. Or through Moondream's Batch API
(batch_api.py): one line per image and class, the image behind each line kept in the store's batch
record, and the same examples written when the results arrive. Knows nothing of MCP.

The dataset is a JSONL output of one job (jsonl.py), DATASET_JOB, whatever the classes, skill or model
of the call: every call labelling into it adds the examples still missing, and a file that is not a
label_images dataset (a photo, notes, an imported or hand-made dataset, another tool's output) is
refused untouched. Its lines are ordinary dataset examples besides; the `job` key is ignored by readers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from . import batch_api, datasets
from .client import MoondreamClient
from .client.tuning import BASE_MODEL
from .failures import Explain, FailureGroups, InputError
from .files import FileGuard
from .images import ImageLoader
from .jsonl import LineWriter, job_id
from .local_batch import ResultLog, SkillJob, digest
from .store import Store, new_id
from .vision import Vision

MAX_CLASSES = 20
DECIMALS = 6  # as imports round: a label survives export and import unchanged
TOOL = "label_images"
DATASET_JOB = job_id(tool=TOOL)  # the job owning every dataset label_images writes

LabelSkill = Literal["detect", "point"]


@dataclass(frozen=True)
class LabelJob:
    """What to label: one skill, each class its own prompt, by the base model or a checkpoint."""

    skill: LabelSkill
    classes: tuple[str, ...]
    model: str | None = None

    def __post_init__(self) -> None:
        names = [c.strip() for c in self.classes]
        if not names or not all(names):
            raise InputError("give one or more non-empty `classes`, each what to look for (e.g. 'solar panel')")
        if len({n.lower() for n in names}) != len(names):
            raise InputError("`classes` lists the same class twice; give each once")
        if len(names) > MAX_CLASSES:
            raise InputError(f"at most {MAX_CLASSES} classes per call; label the others in another call")
        object.__setattr__(self, "classes", tuple(names))

    @property
    def labelled_by(self) -> str:
        return self.model or BASE_MODEL

    @property
    def id(self) -> str:
        return digest({"skill": self.skill, "classes": self.classes, "model": self.model})

    def example(self, image: str, cls: str, result: dict[str, Any]) -> dict[str, Any]:
        """A dataset line from one answer (a detect or point result: `objects` or `points`)."""
        record: dict[str, Any] = {"image": image, "skill": self.skill, "object": cls}
        if self.skill == "detect":
            record["boxes"] = [b for b in (_box(o) for o in result.get("objects") or []) if b is not None]
        else:
            record["points"] = [_point(p) for p in result.get("points") or [] if isinstance(p, dict)]
        record.update(reviewed=False, labelled_by=self.labelled_by)
        return record


def _unit(value: Any) -> float:
    return round(min(1.0, max(0.0, float(value))), DECIMALS)


def _box(value: Any) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    box = {k: _unit(value.get(k, 0)) for k in ("x_min", "y_min", "x_max", "y_max")}
    # A box rounded to nothing is no box: the dataset format refuses empty boxes.
    return box if box["x_min"] < box["x_max"] and box["y_min"] < box["y_max"] else None


def _point(value: dict[str, Any]) -> dict[str, float]:
    return {"x": _unit(value.get("x", 0)), "y": _unit(value.get("y", 0))}


async def label_image(vision: Vision, job: LabelJob, ref: str, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Each class's answer on one image, asked one prompt at a time (the image is loaded once)."""
    answers: dict[str, dict[str, Any]] = {}
    for cls in classes:
        answers[cls] = await SkillJob(skill=job.skill, object=cls, model=job.model).run(vision, ref)
    return answers


# ---- the dataset as the run's log -----------------------------------------------------------------


@dataclass
class ClassCount:
    examples: int = 0
    empty: int = 0  # examples where nothing was found
    found: int = 0  # boxes or points in all


class DatasetLog(ResultLog):
    """The dataset file as the log of a labelling run (local_batch.run's ResultLog): an image is done
    once each class has an example for it, whatever its model or review state; when an image's answers
    arrive, only the classes still missing are written, one whole line each.

    `lines` is the dataset claimed for DATASET_JOB in resume mode (LineWriter.claim): the file is new, or
    an earlier label_images dataset, reviewed or not.
    """

    def __init__(self, lines: LineWriter, job: LabelJob, refs: list[str]) -> None:
        super().__init__(lines)
        self.job = job
        self.refs = refs
        self.base = lines.output.path.parent
        self.present: dict[str, set[str]] = {}  # resolved image -> classes that have an example
        self.counts: dict[str, ClassCount] = {c: ClassCount() for c in job.classes}
        self.written = 0
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.lines.output.path

    def key(self, ref: str) -> str:
        return datasets.resolve_image(ref.strip(), self.base)

    def done(self) -> set[str]:
        """The images every class already has an example for (reads the file through its handle; call it
        in a worker thread)."""
        present: dict[str, set[str]] = {}
        for record in self.lines.records():
            if (
                record.get("skill") == self.job.skill
                and isinstance(record.get("image"), str)
                and isinstance(record.get("object"), str)
            ):
                present.setdefault(self.key(record["image"]), set()).add(record["object"].strip().lower())
        with self._lock:
            for image, classes in present.items():
                self.present.setdefault(image, set()).update(classes)
        return {ref for ref in self.refs if not self.missing(ref)}

    def missing(self, ref: str) -> list[str]:
        """The classes this image has no example for yet."""
        have = self.present.get(self.key(ref), set())
        return [c for c in self.job.classes if c.lower() not in have]

    def append(self, record: dict[str, Any]) -> None:
        """Write the examples of one image's answers ({"image", "ok", "result": {class: answer}})."""
        if record.get("ok") is not True:
            return  # failures are counted by the run and retried by the next one, never written
        ref = str(record["image"])
        image = datasets.image_field(ref, self.base)
        with self._lock:
            have = self.present.setdefault(self.key(ref), set())
            for cls, answer in record["result"].items():
                if cls.lower() in have:
                    continue
                example = self.job.example(image, cls, answer)
                self.lines.write(example)
                have.add(cls.lower())
                self.written += 1
                labels = example.get("boxes", example.get("points")) or []
                count = self.counts.setdefault(cls, ClassCount())
                count.examples += 1
                count.empty += not labels
                count.found += len(labels)

    def close(self) -> None:
        """Let the file go; one this call made and wrote nothing to goes with it (a new file stays only
        once it holds an example)."""
        if self.written:
            self.lines.close()
        else:
            self.lines.abandon()  # resume mode: an earlier dataset is only closed, never emptied


def open_dataset(files: FileGuard, output: str, job: LabelJob, refs: list[str]) -> DatasetLog:
    """The dataset `output` names as this run's log: a new .jsonl file, or an earlier label_images dataset
    to add to; anything else is refused (FileError or InputError), left as it was. Blocking: run it in a
    worker thread."""
    opened = files.open_output(output)
    if opened.path.suffix.lower() != ".jsonl":
        opened.discard()  # removed only if this open made it
        raise InputError(f"the output is a dataset: give a .jsonl path, not {opened.path.name}")
    return DatasetLog(LineWriter.claim(opened, DATASET_JOB, "resume", tool=TOOL), job, refs)


# ---- one writer per dataset -----------------------------------------------------------------------

_writing: set[Path] = set()
_writing_lock = threading.Lock()


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Only one call at a time writes a dataset: a fix rewriting the file while a labelling run appends
    to it would lose the run's lines. Refused, not queued: the agent decides what to do."""
    with _writing_lock:
        if path in _writing:
            raise InputError(f"{path} is being written by another call (labelling or fixing); wait for it to finish")
        _writing.add(path)
    try:
        yield
    finally:
        with _writing_lock:
            _writing.discard(path)


# ---- the Batch API engine -------------------------------------------------------------------------


class PendingBatches:
    """Labelling jobs sent to the Batch API whose examples are not written yet, found again by the job's
    key (its skill, classes, model, images and output), so the same call made again picks up the results.
    A JSONL file of the server's own (labelling/batches.jsonl in the data directory), appended to; the
    last line of a key decides."""

    JOB = job_id(tool=TOOL, file="pending batches")

    def __init__(self, files: FileGuard) -> None:
        self.files = files

    def _open(self) -> LineWriter:
        return LineWriter.claim(self.files.open_own("labelling", "batches.jsonl"), self.JOB, "resume", tool=TOOL)

    def find(self, key: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = None
        with self._open() as pending:
            for record in pending.records():
                if record.get("key") == key:
                    found = None if record.get("finished") else record
        return found

    def _add(self, record: dict[str, Any]) -> None:
        with self._open() as out:
            out.write(record)

    def add(self, key: str, batch_id: str, images: int) -> None:
        self._add({"key": key, "batch_id": batch_id, "images": images})

    def finish(self, key: str, batch_id: str) -> None:
        self._add({"key": key, "batch_id": batch_id, "finished": True})


def batch_key(job: LabelJob, refs: list[str], output: Path) -> str:
    return digest({"job": job.id, "refs": digest(refs), "output": str(output)})


@dataclass
class Submitted:
    batch_id: str
    status: str
    images: int  # prepared and uploaded
    skipped: FailureGroups  # images that could not be prepared


async def submit(
    client: MoondreamClient,
    images: ImageLoader,
    files: FileGuard,
    store: Store,
    job: LabelJob,
    refs: list[str],
    *,
    part_bytes: int,
    explain: Explain,
    progress: batch_api.Progress,
) -> Submitted:
    """Send every (image, class) as one Batch API line; the store records the image behind each line.
    The lines are staged in a file of the server's own, written and read back through one handle, and
    removed whatever happens."""
    opened = await anyio.to_thread.run_sync(files.open_own, "batch-uploads", f"{new_id('label')}.jsonl")
    staging = os.fdopen(os.dup(opened.fd), "w+b")
    variants = [{"object": cls} for cls in job.classes]
    try:
        prepared = await batch_api.write_lines(
            images, refs, staging, job.skill, {}, explain=explain, progress=progress, variants=variants
        )
        if not prepared.lines:
            reasons = "; ".join(f"{reason} ({count})" for reason, count, _ in prepared.skipped.grouped())
            raise InputError(f"none of the images could be prepared: {reasons}")
        batch, _ = await batch_api.upload(client, staging, job.model, part_bytes=part_bytes, progress=progress)
    finally:
        staging.close()
        opened.discard()
    await store.add_batch(batch.id, job.skill, [ref for ref in refs for _ in variants])
    return Submitted(batch.id, batch.status, prepared.lines, prepared.skipped)


@dataclass
class Collected:
    images: int = 0  # images with at least one answer
    failed: int = 0  # lines the Batch API could not answer
    failures: FailureGroups = field(default_factory=FailureGroups)


async def collect(
    client: MoondreamClient,
    files: FileGuard,
    store: Store,
    job: LabelJob,
    batch_id: str,
    log: DatasetLog,
    *,
    wait_seconds: float,
    progress: batch_api.Progress,
) -> Collected:
    """Wait for the batch (batch_api.BatchNotDone / BatchFailed when it is not done), keep its results in
    the data directory (labelling/<batch>.results.jsonl, batch_results' format), and write the examples
    they hold to the dataset, skipping classes already there. Leaves `log` open: the caller closes it."""
    batch = await batch_api.await_completion(client, batch_id, wait_seconds, progress=progress)
    per_line = await store.batch_images(batch_id)
    if per_line is None:
        raise InputError(f"batch {batch_id} was not submitted by this server; its images are unknown")
    name = f"{batch_id}.results.jsonl"
    results_job = batch_api.job_of(batch_id)

    def claim(mode: Literal["resume", "replace"]) -> LineWriter:
        return LineWriter.claim(files.open_own("labelling", name), results_job, mode, tool="batch_results")

    results = await anyio.to_thread.run_sync(claim, "replace")
    await batch_api.write_results(client, batch, per_line, results)
    kept = await anyio.to_thread.run_sync(claim, "resume")
    with kept:
        return await anyio.to_thread.run_sync(_write_examples, job, kept, log)


def _write_examples(job: LabelJob, results: LineWriter, log: DatasetLog) -> Collected:
    answers: dict[str, dict[str, dict[str, Any]]] = {}
    collected = Collected()
    for row in results.records():
        image, line_id = row.get("image"), str(row.get("id", ""))
        if image is None or not line_id.isdigit():
            continue
        cls = job.classes[int(line_id) % len(job.classes)]
        if row.get("ok"):
            answers.setdefault(image, {})[cls] = row.get("result") or {}
        else:
            collected.failed += 1
            collected.failures.add(str(row.get("error")), image)
    for image, by_class in answers.items():
        log.append({"image": image, "ok": True, "result": by_class})
        collected.images += 1
    return collected
