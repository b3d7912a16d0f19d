"""One skill over many images: inputs expanded from a list, a directory or a glob; results appended to a
JSONL file as they complete, so a rerun resumes where the last one stopped. Knows nothing of MCP."""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .images import ImageError, ImageLoader
from .images.errors import describe as describe_ref

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff",
                            ".heic", ".heif", ".avif"})
MAX_IMAGES = 100_000


def expand(images: list[str] | str, loader: ImageLoader) -> list[str]:
    """The image references a batch covers: the list as given (duplicates dropped), or the image files
    of a directory (not recursive) or of a glob (`**` recurses), sorted, skipping hidden names."""
    if isinstance(images, list):
        refs = list(dict.fromkeys(r.strip() for r in images if r.strip()))
    else:
        pattern = os.path.expanduser(images.strip())
        if glob.has_magic(pattern):
            parts = Path(pattern).parts
            fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
            base = loader.check_dir(str(Path(*parts[:fixed])))
            matches = glob.glob(str(base / Path(*parts[fixed:])), recursive=True)
            candidates = [Path(m) for m in matches]
        else:
            base = loader.check_dir(pattern)
            candidates = list(base.iterdir())
        refs = sorted(
            str(p) for p in candidates
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(base).parts)
        )
        if not refs:
            raise ImageError(f"no image files found in {describe_ref(images)}")
    if not refs:
        raise ImageError("no images given")
    if len(refs) > MAX_IMAGES:
        raise ImageError(f"{len(refs)} images is more than one batch takes ({MAX_IMAGES}); split it, or use "
                         "submit_batch for very large jobs")
    return refs


class ResultLog:
    """An append-only JSONL file of one line per finished image."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def done(self, job: str) -> set[str]:
        """Images this job already finished successfully; a line torn by a crash is cut off first."""
        if not self.path.exists():
            return set()
        with self._lock, open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
                data = data[: data.rfind(b"\n") + 1]
        finished: set[str] = set()
        for line in data.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("job") == job and record.get("ok") is True:
                finished.add(record.get("image"))
        return finished

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock, open(self.path, "ab") as f:
            f.write(line)  # one write of one whole line: readers never see half a record
            f.flush()


@dataclass
class Outcome:
    total: int
    skipped: int
    succeeded: int = 0
    failed: int = 0
    elapsed: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    failed_images: dict[str, list[str]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


Work = Callable[[str], Awaitable[dict[str, Any]]]
Explain = Callable[[Exception], str]
Progress = Callable[[int, int, str], Awaitable[None]]

SAMPLES = 3
EXAMPLES_PER_REASON = 5


async def run(
    refs: list[str],
    work: Work,
    log: ResultLog,
    *,
    job: str,
    expected: tuple[type[Exception], ...],
    explain: Explain,
    concurrency: int,
    progress: Progress | None = None,
) -> Outcome:
    """Run `work` on each image not yet done, `concurrency` at a time, appending one line per image.

    Errors of the `expected` kinds become failed lines; anything else propagates. On cancellation the
    lines already written stay, whole, and a rerun skips them.
    """
    done = await anyio.to_thread.run_sync(log.done, job)
    todo = [r for r in refs if r not in done]
    outcome = Outcome(total=len(refs), skipped=len(refs) - len(todo))
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    started = time.monotonic()
    reported = 0

    async def one(ref: str) -> None:
        async with limiter:
            try:
                result = await work(ref)
            except expected as exc:
                reason = explain(exc).replace(describe_ref(ref), "<image>")
                record: dict[str, Any] = {"image": ref, "job": job, "ok": False, "error": explain(exc)}
                outcome.failed += 1
                outcome.failures[reason] += 1
                examples = outcome.failed_images.setdefault(reason, [])
                if len(examples) < EXAMPLES_PER_REASON:
                    examples.append(ref)
            else:
                record = {"image": ref, "job": job, "ok": True, "result": result}
                outcome.succeeded += 1
                if len(outcome.samples) < SAMPLES:
                    outcome.samples.append({"image": ref, "result": result})
            # Not cancellable: once a result is in hand, its line is written whole.
            await anyio.to_thread.run_sync(log.append, record)
        if progress is not None:
            # Counted only after the line is written, with no await in between: reports rise one by one.
            nonlocal reported
            reported += 1
            await progress(outcome.skipped + reported, outcome.total,
                           f"{reported}/{len(todo)} done, {outcome.failed} failed")

    try:
        async with anyio.create_task_group() as tasks:
            for ref in todo:
                tasks.start_soon(one, ref)
    finally:
        outcome.elapsed = time.monotonic() - started
    return outcome
