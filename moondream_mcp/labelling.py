"""Labelling photos into a dataset: every class asked as its own detect or point prompt on every image
(classes are never merged into one prompt), each answer written as an unreviewed example of the
dataset format (datasets.py) as soon as it arrives.

Two engines, one output. Locally, image by image through local_batch.run (resumable, rate-limited,
failures grouped), the dataset file itself being the run's log. Or through Moondream's Batch API
(batch_api.py): one line per image and class, the image behind each line kept in the store's batch
record, and the same examples written when the results arrive. Knows nothing of MCP.
"""

from __future__ import annotations

import json
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
from .images import ImageLoader
from .jsonl import LineWriter
from .local_batch import ResultLog, SkillJob, digest
from .store import Store, new_id
from .vision import Vision

MAX_CLASSES = 20
DECIMALS = 6  # as imports round: a label survives export and import unchanged

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

    An existing file is added to only if it is a dataset: every line a JSON object naming an image (or a
    comment, or blank). Anything else is refused untouched.
    """

    def __init__(self, path: Path, job: LabelJob, refs: list[str]) -> None:
        super().__init__(path)
        self.job = job
        self.refs = refs
        self.base = path.parent
        self.present: dict[str, set[str]] = {}  # resolved image -> classes that have an example
        self.counts: dict[str, ClassCount] = {c: ClassCount() for c in job.classes}
        self.written = 0
        self._newline_first = False

    def key(self, ref: str) -> str:
        return datasets.resolve_image(ref.strip(), self.base)

    def done(self, job: str) -> set[str]:
        """The images every class already has an example for (reads the file; call it in a worker thread)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        for number, raw in enumerate(data.splitlines(), start=1):
            text = raw.strip()
            if not text or text.startswith(b"#"):
                continue
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("image"), str):
                raise InputError(
                    f"{self.path} exists and is not a dataset (line {number} is not a JSON example); give the path "
                    "of a new file, or of a dataset to add to"
                )
            if record.get("skill") == self.job.skill and isinstance(record.get("object"), str):
                self.present.setdefault(self.key(record["image"]), set()).add(record["object"].strip().lower())
        self._newline_first = bool(data) and not data.endswith(b"\n")
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
            if self._writer is None:
                self._writer = LineWriter(self.path, "append")
                if self._newline_first:  # the file's last line had no newline: never glue ours onto it
                    self._writer.write(b"")
                    self._newline_first = False
            have = self.present.setdefault(self.key(ref), set())
            for cls, answer in record["result"].items():
                if cls.lower() in have:
                    continue
                example = self.job.example(image, cls, answer)
                self._writer.write(example)
                have.add(cls.lower())
                self.written += 1
                labels = example.get("boxes", example.get("points")) or []
                count = self.counts.setdefault(cls, ClassCount())
                count.examples += 1
                count.empty += not labels
                count.found += len(labels)


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
    A JSONL file in the data directory, appended to; the last line of a key decides."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def find(self, key: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        for raw in text.splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("key") == key:
                found = None if record.get("finished") else record
        return found

    def _add(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with LineWriter(self.path, "append") as out:
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
    store: Store,
    job: LabelJob,
    refs: list[str],
    staging_dir: Path,
    *,
    part_bytes: int,
    explain: Explain,
    progress: batch_api.Progress,
) -> Submitted:
    """Send every (image, class) as one Batch API line; the store records the image behind each line."""
    await anyio.Path(staging_dir).mkdir(parents=True, exist_ok=True)
    staging = staging_dir / f"{new_id('label')}.jsonl"
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
        await anyio.Path(staging).unlink(missing_ok=True)
    await store.add_batch(batch.id, job.skill, [ref for ref in refs for _ in variants])
    return Submitted(batch.id, batch.status, prepared.lines, prepared.skipped)


@dataclass
class Collected:
    images: int = 0  # images with at least one answer
    failed: int = 0  # lines the Batch API could not answer
    failures: FailureGroups = field(default_factory=FailureGroups)


async def collect(
    client: MoondreamClient,
    store: Store,
    job: LabelJob,
    batch_id: str,
    log: DatasetLog,
    results: Path,
    *,
    wait_seconds: float,
    progress: batch_api.Progress,
) -> Collected:
    """Wait for the batch (batch_api.BatchNotDone / BatchFailed when it is not done), keep its results in
    `results`, and write the examples they hold to the dataset, skipping classes already there."""
    batch = await batch_api.await_completion(client, batch_id, wait_seconds, progress=progress)
    per_line = await store.batch_images(batch_id)
    if per_line is None:
        raise InputError(f"batch {batch_id} was not submitted by this server; its images are unknown")
    await batch_api.write_results(client, batch, per_line, results)
    return await anyio.to_thread.run_sync(_write_examples, job, results, log)


def _write_examples(job: LabelJob, results: Path, log: DatasetLog) -> Collected:
    answers: dict[str, dict[str, dict[str, Any]]] = {}
    collected = Collected()
    with results.open(encoding="utf-8") as rows:
        for raw in rows:
            row = json.loads(raw)
            image, line_id = row.get("image"), str(row.get("id", ""))
            if image is None or not line_id.isdigit():
                continue
            cls = job.classes[int(line_id) % len(job.classes)]
            if row.get("ok"):
                answers.setdefault(image, {})[cls] = row.get("result") or {}
            else:
                collected.failed += 1
                collected.failures.add(str(row.get("error")), image)
    try:
        for image, by_class in answers.items():
            log.append({"image": image, "ok": True, "result": by_class})
            collected.images += 1
    finally:
        log.close()
    return collected
