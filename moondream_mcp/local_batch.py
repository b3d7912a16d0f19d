"""Local batches: one skill over many images, called image by image from here (not Moondream's Batch API).

Inputs are expanded from a list, a directory or a glob; results are appended to a JSONL file as they
complete, so a rerun resumes where the last one stopped. Knows nothing of MCP.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc

from .client import Sampling
from .config import IN_FLIGHT
from .failures import EXPECTED, Explain, FailureGroups, InputError
from .files import FileGuard
from .files import describe as describe_ref
from .images import is_image_name
from .jsonl import LineWriter
from .vision import Vision

MAX_IMAGES = 100_000
SAMPLES = 3

Skill = Literal["caption", "query", "detect", "point", "segment"]


def require_prompt(skill: str, *, object: str | None, question: str | None) -> None:
    """The skill's own prompt must be there: an object to look for, or a question to ask."""
    if skill in ("detect", "point", "segment") and not object:
        raise InputError(f"the {skill} skill needs `object`")
    if skill == "query" and not question:
        raise InputError("the query skill needs `question`")


def digest(value: Any) -> str:
    """A short stable name for parameters: equal parameters, equal digest."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SkillJob:
    """One skill with the parameters every image gets."""

    skill: Skill
    object: str | None = None
    question: str | None = None
    length: Literal["short", "normal", "long"] = "normal"
    reasoning: bool = False
    model: str | None = None
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self) -> None:
        require_prompt(self.skill, object=self.object, question=self.question)

    @property
    def id(self) -> str:
        # Lines carry this, so a rerun skips only images done with the same skill and parameters.
        return digest(
            {
                "skill": self.skill,
                "object": self.object,
                "question": self.question,
                "length": self.length,
                "reasoning": self.reasoning,
                "model": self.model,
                **self.sampling.model_dump(),
            }
        )

    async def run(self, vision: Vision, ref: str) -> dict[str, Any]:
        """The skill's result on one image, as a JSON object."""
        output: Any
        if self.skill == "caption":
            output, _ = await vision.caption(ref, length=self.length, model=self.model, sampling=self.sampling)
        elif self.skill == "query":
            output, _ = await vision.query(
                self.question or "", ref, reasoning=self.reasoning, model=self.model, sampling=self.sampling
            )
        elif self.skill == "detect":
            output, _ = await vision.detect(ref, self.object or "", model=self.model, sampling=self.sampling)
        elif self.skill == "point":
            output, _ = await vision.point(ref, self.object or "", model=self.model, sampling=self.sampling)
        else:
            output, _ = await vision.segment(ref, self.object or "", model=self.model, sampling=self.sampling)
        result: dict[str, Any] = output.model_dump(mode="json")
        return result


def expand(images: list[str] | str, files: FileGuard) -> list[str]:
    """The image references a batch covers: the list as given (duplicates dropped), or the image files
    of a directory (not recursive) or of a glob (`**` recurses), sorted, skipping hidden names.
    Blocking and bounded in time and entries (the file guard's listing): run it in a worker thread."""
    if isinstance(images, list):
        refs = list(dict.fromkeys(r.strip() for r in images if r.strip()))
    else:
        found = files.glob(images.strip(), accept=is_image_name, limit=MAX_IMAGES)
        if not found:
            raise InputError(f"no image files found in {describe_ref(images)}")
        if len(found) > MAX_IMAGES:
            raise InputError(
                f"{describe_ref(images)} holds more than {MAX_IMAGES} images, more than one batch takes; split it, "
                "or use submit_batch for very large jobs"
            )
        refs = [str(p) for p in found]
    if not refs:
        raise InputError("no images given")
    if len(refs) > MAX_IMAGES:
        raise InputError(
            f"{len(refs)} images is more than one batch takes ({MAX_IMAGES}); split it, or use "
            "submit_batch for very large jobs"
        )
    return refs


class ResultLog:
    """One line per finished image, appended to a file that is this job's own (jsonl.LineWriter)."""

    def __init__(self, lines: LineWriter) -> None:
        self.lines = lines

    def done(self) -> set[str]:
        """Images this job already finished successfully."""
        finished: set[str] = set()
        for record in self.lines.records():
            if record.get("job") == self.lines.job and record.get("ok") is True:
                finished.add(str(record.get("image")))
        return finished

    def append(self, record: dict[str, Any]) -> None:
        self.lines.write(record)

    def close(self) -> None:
        self.lines.close()


@dataclass
class Outcome:
    total: int
    skipped: int
    succeeded: int = 0
    failed: int = 0
    elapsed: float = 0.0
    failures: FailureGroups = field(default_factory=FailureGroups)
    samples: list[dict[str, Any]] = field(default_factory=list)


Work = Callable[[str], Awaitable[dict[str, Any]]]
Progress = Callable[[int, int, str], Awaitable[None]]
Concurrency = int | Callable[[], int]


async def run(
    refs: list[str],
    work: Work,
    log: ResultLog,
    *,
    explain: Explain,
    concurrency: Concurrency = IN_FLIGHT,
    progress: Progress | None = None,
) -> Outcome:
    """Run `work` on each image not yet done, `concurrency` at a time, appending one line per image.

    Expected failures (failures.EXPECTED) become failed lines; anything else propagates. On cancellation
    the lines already written stay, whole, and a rerun skips them. Memory is O(concurrency): workers
    pull the images from one iterator. `concurrency` may be a function, asked again after every image
    (the API client's pacing): workers are added when it rises, and leave when it falls.
    """
    done = await anyio.to_thread.run_sync(log.done)
    todo = [r for r in refs if r not in done]
    outcome = Outcome(total=len(refs), skipped=len(refs) - len(todo))
    started = time.monotonic()
    reported = 0
    pending: Iterator[str] = iter(todo)

    async def one(ref: str) -> None:
        try:
            result = await work(ref)
        except EXPECTED as exc:
            message = explain(exc)
            record: dict[str, Any] = {"image": ref, "ok": False, "error": message}
            outcome.failed += 1
            outcome.failures.add(message.replace(describe_ref(ref), "<image>"), ref)
        else:
            record = {"image": ref, "ok": True, "result": result}
            outcome.succeeded += 1
            if len(outcome.samples) < SAMPLES:
                outcome.samples.append({"image": ref, "result": result})
        # Not cancellable: once a result is in hand, its line is written whole.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(log.append, record)
        if progress is not None:
            # Counted only after the line is written, with no await in between: reports rise one by one.
            nonlocal reported
            reported += 1
            await progress(
                outcome.skipped + reported, outcome.total, f"{reported}/{len(todo)} done, {outcome.failed} failed"
            )

    def wanted() -> int:
        return max(1, concurrency() if callable(concurrency) else concurrency)

    workers = 0

    def hire(tasks: anyio.abc.TaskGroup) -> None:
        nonlocal workers
        while workers < min(wanted(), len(todo) - outcome.succeeded - outcome.failed):
            workers += 1
            tasks.start_soon(worker, tasks)

    async def worker(tasks: anyio.abc.TaskGroup) -> None:
        nonlocal workers
        try:
            for ref in pending:  # shared: each image is taken by exactly one worker
                await one(ref)
                if workers > wanted():
                    return  # the others carry on
                hire(tasks)
        finally:
            workers -= 1

    try:
        async with anyio.create_task_group() as tasks:
            hire(tasks)
    finally:
        outcome.elapsed = time.monotonic() - started
        await anyio.to_thread.run_sync(log.close)
    return outcome
