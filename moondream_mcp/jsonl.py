"""JSON Lines outputs: written one whole line at a time through one handle, and never over someone else's file.

The rule every tool that writes JSONL follows: each line starts with `{"job":"<id>"`, the job that wrote
it, where the id is a digest of what defines the job (the tool and its parameters). A file may be
written only if it is new (or empty), or if its first line carries the same job: then a resumable job
appends to it and any other rewrites it. Anything else (a photo, a text file, the dataset being read,
another job's results) is refused untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Literal, Self

from .files import FileError, OutputFile, os_failure

Mode = Literal["resume", "replace"]


def line(record: Any) -> bytes:
    """One record as a compact JSON line, UTF-8, newline-terminated. Bytes are a line already, kept
    exactly as they are (a file rewritten with a few lines changed keeps the others byte for byte)."""
    if isinstance(record, bytes):
        return record if record.endswith(b"\n") else record + b"\n"
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def job_id(**definition: Any) -> str:
    """A short stable id for a job: equal definitions, equal ids."""
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _marker(job: str) -> bytes:
    return line({"job": job})[:-2]  # `{"job":"<id>"`, without the closing brace and newline


class LineWriter:
    """A JSONL output owned by one job, written through the one handle the file guard opened.

    Each record goes out as one whole line (its job first) in one write, so a reader, or a crash, never
    sees half a line after a whole one. Safe to share between worker threads. Take one with `claim`.
    """

    def __init__(self, output: OutputFile, job: str, mode: Mode) -> None:
        self.output = output
        self.job = job
        self._lock = threading.Lock()
        self._untouched = True  # nothing written by this writer yet
        self._mode = mode

    @classmethod
    def claim(cls, output: OutputFile, job: str, mode: Mode, *, tool: str) -> LineWriter:
        """`output` as `job`'s own, or FileError (the file closed, left as it was) if it is anyone else's.

        "resume" cuts a line torn by a crash and appends; "replace" starts the file afresh at the first
        write (so a call that fails before writing leaves the earlier output as it was).
        """
        marker = _marker(job)
        try:
            size = os.fstat(output.fd).st_size
            head = output.head(len(marker) + 1)
        except OSError as exc:
            output.close()
            raise os_failure("read", output.label, exc) from None
        if size and not (head.startswith(marker) and head[len(marker) : len(marker) + 1] in (b",", b"}")):
            output.close()
            raise FileError(
                f"refused to write {output.label}: the file is there and is not an earlier {tool} output of this "
                "same job, so it was left untouched; give a new file name."
            )
        writer = cls(output, job, mode)
        if mode == "resume" and size:
            writer._cut_torn_tail(size)
        return writer

    def existing(self) -> Iterator[bytes]:
        """The whole lines already in the file (resume mode, before writing), read through the handle."""
        offset, rest = 0, b""
        while chunk := os.pread(self.output.fd, 1 << 20, offset):
            offset += len(chunk)
            *whole, rest = (rest + chunk).split(b"\n")
            yield from whole

    def records(self) -> Iterator[dict[str, Any]]:
        """The existing lines that are JSON objects; any other line is skipped, as readers skip it."""
        for raw in self.existing():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def write(self, record: dict[str, Any]) -> None:
        data = line({"job": self.job, **record})
        with self._lock:
            if self._untouched:
                self._untouched = False
                if self._mode == "replace":
                    os.ftruncate(self.output.fd, 0)
                os.lseek(self.output.fd, 0, os.SEEK_END)
            view = memoryview(data)
            while view:
                view = view[os.write(self.output.fd, view) :]

    def abandon(self) -> None:
        """After a failure: a file this call created goes; one it had started to rewrite is emptied."""
        with self._lock:
            if self.output.created:
                self.output.discard()
                return
            if not self._untouched and self._mode == "replace" and self.output.fd >= 0:
                os.ftruncate(self.output.fd, 0)
            self.output.close()

    def close(self) -> None:
        with self._lock:
            self.output.close()

    def _cut_torn_tail(self, size: int) -> None:
        tail = os.pread(self.output.fd, min(size, 1 << 20), max(0, size - (1 << 20)))
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and size > len(tail):
            return  # one line longer than the window: leave it; readers skip what does not parse
        os.ftruncate(self.output.fd, size - len(tail) + cut + 1)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
