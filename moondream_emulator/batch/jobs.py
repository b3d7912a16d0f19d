"""Batch jobs: each processed line by line in its own thread, its results written to result files on disk.

A job goes chunking (its lines counted) -> processing (answered) -> completed, or failed with one of the
documented whole-batch codes (BATCH_ERRORS): empty_batch (no lines), validation_error (a blank line, or no
line is JSON at all), limit_exceeded (over 100,000 lines), processing_failed (the emulator broke). A failed
job is still a job: GET /v1/batch/{id} answers it with HTTP 200, its status and its error.

Tests steer jobs with `hold` (jobs wait in "processing" until released) and `fail_lines` (the next job's
first lines fail), and follow them with `wait`.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from ..errors import ApiError
from ..ids import UlidGenerator
from ..skills.validation import BASE_MODEL, CheckpointLookup
from . import lines as batch_lines
from .uploads import Part, Scratch

MAX_LINES = 100_000
# The documented whole-batch codes; "timeout" (a job that ran too long) is never reached here.
BATCH_ERRORS = ("validation_error", "limit_exceeded", "empty_batch", "processing_failed", "timeout")
RESULTS_KEPT = timedelta(days=7)
FINISHED = ("completed", "failed")


@dataclass
class Job:
    id: str
    model: str | None  # as the client named it; None: the base model
    size: int
    inputs: list[Path]
    lines_per_file: int
    fail_first: int  # lines failed on purpose (fail_lines)
    token: str  # the result URLs' signature
    created_at: datetime
    status: str = "chunking"
    total: int = 0
    completed: int = 0  # lines answered
    failed: int = 0  # lines refused
    input_tokens: int = 0
    output_tokens: int = 0
    outputs: list[Path] = field(default_factory=list)
    completed_at: datetime | None = None
    error: dict[str, str] | None = None  # why a failed job failed
    released: bool = False
    cancelled: bool = False


class _Cancelled(Exception):
    """The job was forgotten (clear) while it ran."""


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"batch not found: {batch_id}", code="batch_not_found")


class BatchJobs:
    def __init__(self, scratch: Scratch, checkpoint_policy: CheckpointLookup) -> None:
        self._scratch = scratch
        self._checkpoint_policy = checkpoint_policy
        # One condition for every change of every job: tests wait on it from their own thread.
        self._changed = threading.Condition()
        self._ids = UlidGenerator()
        self._jobs: dict[str, Job] = {}  # in creation (= id) order
        self._hold = False
        self._fail_next = 0

    # --- knobs -----------------------------------------------------------------------------------

    @property
    def hold(self) -> bool:
        return self._hold

    @hold.setter
    def hold(self, value: bool) -> None:
        with self._changed:
            self._hold = bool(value)
            self._changed.notify_all()

    def release(self) -> None:
        """Let every job held so far go on (jobs started later are held again while `hold` is set)."""
        with self._changed:
            for job in self._jobs.values():
                job.released = True
            self._changed.notify_all()

    def fail_lines(self, count: int) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._changed:
            self._fail_next = count

    def wait(self, batch_id: str, statuses: Collection[str], gave_up: threading.Event) -> str | None:
        """Block until the job's status is one of `statuses` (that status) or `gave_up` is set and
        wake() called (None)."""

        def reached() -> bool:
            job = self._jobs.get(batch_id)
            return job is None or job.status in statuses or gave_up.is_set()

        with self._changed:
            self._changed.wait_for(reached)
            if batch_id not in self._jobs:
                raise LookupError(f"no such batch: {batch_id}")
            status = self._jobs[batch_id].status
            return status if status in statuses else None

    def wake(self) -> None:
        """Have every wait() look again at what it waits for."""
        with self._changed:
            self._changed.notify_all()

    def clear(self) -> None:
        """Forget every job; running ones stop at their next line, held ones at once."""
        with self._changed:
            for job in self._jobs.values():
                job.cancelled = True
            self._jobs.clear()
            self._hold = False
            self._fail_next = 0
            self._changed.notify_all()

    # --- the API ---------------------------------------------------------------------------------

    def start(self, parts: list[Part], model: str | None, lines_per_file: int) -> Job:
        """A job over the parts' concatenation, processed from now on in a thread of its own."""
        now = datetime.now(UTC)
        with self._changed:
            job = Job(
                id=self._ids.new(),
                model=model,
                size=sum(p.size for p in parts),
                inputs=[p.path for p in parts],
                lines_per_file=lines_per_file,
                fail_first=self._fail_next,
                token=secrets.token_urlsafe(16),
                created_at=now,
            )
            self._fail_next = 0
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), name=f"batch-{job.id}", daemon=True).start()
        return job

    def describe(self, batch_id: str, url: Callable[[Job, int], str]) -> dict[str, Any]:
        """The job as GET /v1/batch/{id} shows it; `url` makes the address of result file i."""
        with self._changed:
            job = self._jobs.get(batch_id)
            if job is None:
                raise _not_found(batch_id)
            return self._view(job, url)

    def page(self, limit: int, cursor: str | None, url: Callable[[Job, int], str]) -> dict[str, Any]:
        """Newest first, `limit` after the job whose id is `cursor`."""
        with self._changed:
            newest_first = list(reversed(self._jobs.values()))
            start = 0
            if cursor is not None:
                ids = [job.id for job in newest_first]
                if cursor not in ids:
                    raise ApiError(
                        400,
                        "invalid cursor: pass next_cursor from the previous page",
                        param="cursor",
                        code="invalid_cursor",
                    )
                start = ids.index(cursor) + 1
            page = newest_first[start : start + limit]
            has_more = start + limit < len(newest_first)
            return {
                "batches": [self._view(job, url) for job in page],
                "next_cursor": page[-1].id if has_more else None,
                "has_more": has_more,
            }

    def result_file(self, batch_id: str, index: int, token: str) -> Path:
        with self._changed:
            job = self._jobs.get(batch_id)
            if job is None or job.status != "completed" or not 0 <= index < len(job.outputs):
                raise ApiError(404, "no such result file", code="not_found")
            if not secrets.compare_digest(token, job.token):
                raise ApiError(
                    403,
                    "the signature does not match: use the URL exactly as the API gave it",
                    code="signature_mismatch",
                )
            return job.outputs[index]

    @staticmethod
    def _view(job: Job, url: Callable[[Job, int], str]) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": job.id,
            "status": job.status,
            "model": job.model or BASE_MODEL,
            "progress": {"total": job.total, "completed": job.completed, "failed": job.failed},
            "usage": {"input_tokens": job.input_tokens, "output_tokens": job.output_tokens},
            "outputs": [{"index": i, "url": url(job, i)} for i in range(len(job.outputs))]
            if job.status == "completed"
            else [],
            "created_at": _iso(job.created_at),
            "completed_at": _iso(job.completed_at),
            "expires_at": _iso(job.completed_at + RESULTS_KEPT if job.completed_at else None),
        }
        if job.error is not None:
            view["error"] = job.error
        return view

    # --- processing ------------------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        try:
            if self._chunk(job):
                self._process(job)
        except _Cancelled:
            pass
        except Exception:
            if job.cancelled:
                return  # cleared while it ran: its files vanished under it
            # A bug, or a full disk: the job fails visibly rather than staying "processing" forever.
            self._finish(job, "failed", {"code": "processing_failed", "message": "the batch could not be processed"})
            raise
        finally:
            for path in job.inputs:
                path.unlink(missing_ok=True)

    def _update(self, job: Job, **changes: Any) -> None:
        with self._changed:
            if job.cancelled:
                raise _Cancelled
            for name, value in changes.items():
                setattr(job, name, value)
            self._changed.notify_all()

    def _finish(self, job: Job, status: str, error: dict[str, str] | None = None) -> None:
        self._update(job, status=status, error=error, completed_at=datetime.now(UTC))

    def _fail(self, job: Job, code: str, message: str) -> None:
        self._finish(job, "failed", {"code": code, "message": message})

    def _chunk(self, job: Job) -> bool:
        """Count the lines; False (and the job failed) when there is nothing to process."""
        total = 0
        first_blank: int | None = None
        any_json = False
        for index, line in batch_lines.lines(job.inputs):
            if batch_lines.blank(line):
                first_blank = index if first_blank is None else first_blank
                continue
            total += 1
            if total > MAX_LINES:
                self._fail(job, "limit_exceeded", f"the file has over {MAX_LINES} lines")
                return False
            any_json = any_json or batch_lines.parses(line)
        if total == 0:
            self._fail(job, "empty_batch", "the file has no lines")
            return False
        if first_blank is not None:
            self._fail(job, "validation_error", f"line {first_blank} is blank: JSONL allows no blank lines")
            return False
        if not any_json:
            self._fail(job, "validation_error", "the file is not JSONL: no line is valid JSON")
            return False
        self._update(job, status="processing", total=total)
        return True

    def _process(self, job: Job) -> None:
        with self._changed:
            self._changed.wait_for(lambda: job.cancelled or job.released or not self._hold)
        results = self._scratch.path("results", job.id)
        outputs: list[Path] = []
        out: TextIO | None = None
        try:
            for position, (index, line) in enumerate(batch_lines.lines(job.inputs)):
                record = batch_lines.answer_line(
                    index,
                    line,
                    model=job.model,
                    checkpoint_policy=self._checkpoint_policy,
                    fail=position < job.fail_first,
                )
                if position % job.lines_per_file == 0:
                    if out is not None:
                        out.close()
                    outputs.append(results / f"{len(outputs)}.jsonl")
                    out = outputs[-1].open("w", encoding="utf-8")
                assert out is not None  # opened at position 0
                out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
                usage = record.get("usage", {})
                self._update(
                    job,
                    completed=job.completed + (record["status"] == "ok"),
                    failed=job.failed + (record["status"] != "ok"),
                    input_tokens=job.input_tokens + usage.get("input_tokens", 0),
                    output_tokens=job.output_tokens + usage.get("output_tokens", 0),
                )
        finally:
            if out is not None:
                out.close()
        self._update(job, outputs=outputs)
        self._finish(job, "completed")
