"""JSON Lines, written one whole line at a time: the one way every result, dataset and upload file is written."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self


def line(record: Any) -> bytes:
    """One record as a compact JSON line, UTF-8, newline-terminated. Bytes are a line already, kept
    exactly as they are (a file rewritten with a few lines changed keeps the others byte for byte)."""
    if isinstance(record, bytes):
        return record if record.endswith(b"\n") else record + b"\n"
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class LineWriter:
    """A JSONL file opened once and written through that one handle, a whole line per write.

    `mode` "append" keeps what is there (a rerun resumes); "new" starts the file empty. Each record goes
    out in one unbuffered write, so a reader, or a crash, never sees half a line after a whole one.
    Safe to share between worker threads.
    """

    def __init__(self, path: Path, mode: Literal["append", "new"] = "append") -> None:
        self.path = path
        self._file = open(path, "ab" if mode == "append" else "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def write(self, record: Any) -> None:
        data = line(record)
        with self._lock:
            self._file.write(data)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_atomically(path: Path, records: Iterable[Any]) -> int:
    """Write records one per line via a temporary file renamed over `path`; returns how many."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with LineWriter(temporary, "new") as out:
            for record in records:
                out.write(record)
                count += 1
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return count
