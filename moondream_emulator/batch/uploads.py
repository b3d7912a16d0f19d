"""Multipart uploads of batch files, kept on disk: parts in, etags out, then the parts for a job.

Everything lives in a Scratch directory that the emulator owns: a part is written there while it
arrives (spool_body), moved into its upload when accepted, and handed over to the batch job on
completion.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ..errors import ApiError
from ..ids import UlidGenerator

MAX_PART_NUMBER = 10_000
# The object storage behind the Batch API refuses, when the upload is completed, parts other than the last
# below 5 MiB, and parts that are not all of one size with the last no larger.
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_FILE_BYTES = 2 * 1024**3
_WRITE_BLOCK = 1024 * 1024  # bytes gathered before each write, so a big part costs few thread hops

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class Scratch:
    """The emulator's temporary directory for batch files: made on first use, removed by reset().

    Also removed when the emulator is garbage-collected or the interpreter exits, whichever comes first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._finalizer: weakref.finalize | None = None

    def path(self, *parts: str) -> Path:
        """A directory under the scratch directory, made if need be."""
        with self._lock:
            if self._path is None:
                self._path = Path(tempfile.mkdtemp(prefix="moondream-emulator-"))
                self._finalizer = weakref.finalize(self, shutil.rmtree, self._path, ignore_errors=True)
            directory = self._path.joinpath(*parts)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def reset(self) -> None:
        with self._lock:
            finalizer, self._path, self._finalizer = self._finalizer, None, None
        if finalizer is not None:
            finalizer()


@dataclass(frozen=True)
class Spooled:
    """A request body written to disk as it arrived."""

    path: Path
    size: int
    etag: str  # MD5 of the body, in hex, as S3 reports a part's ETag


async def spool_body(receive: Receive, path: Path, limit: int) -> tuple[Spooled | None, bool]:
    """Write the request body to `path`: (the body, False); (None, True) when it reaches `limit` bytes
    (the rest is left unread); (None, False) when the client went away before sending all of it."""
    digest = hashlib.md5(usedforsecurity=False)
    handle = await anyio.to_thread.run_sync(path.open, "wb")
    size = 0
    pending = bytearray()

    def write(block: bytes) -> None:
        handle.write(block)
        digest.update(block)

    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size >= limit:
                break
            pending += chunk
            more = message.get("more_body", False)
            if len(pending) >= _WRITE_BLOCK or not more:
                await anyio.to_thread.run_sync(write, bytes(pending))
                pending.clear()
            if not more:
                await anyio.to_thread.run_sync(handle.close)
                return Spooled(path, size, digest.hexdigest()), False
    finally:
        handle.close()
    await anyio.Path(path).unlink(missing_ok=True)
    return None, size >= limit


@dataclass(frozen=True)
class Part:
    number: int
    path: Path
    size: int
    etag: str


@dataclass
class Upload:
    file_id: str
    upload_id: str
    key: str
    directory: Path
    parts: dict[int, Part] = field(default_factory=dict)


def _no_such_upload(file_id: str) -> ApiError:
    return ApiError(404, f"no such upload: {file_id} (unknown, aborted or already completed)", code="upload_not_found")


class Uploads:
    """Open multipart uploads. Completing or aborting one closes it: later calls on it get 404."""

    def __init__(self, scratch: Scratch) -> None:
        self._scratch = scratch
        self._lock = threading.RLock()
        self._ids = UlidGenerator()
        self._open: dict[str, Upload] = {}

    def spool_path(self) -> Path:
        """Where an arriving part is written before it is accepted."""
        return self._scratch.path("incoming") / f"{secrets.token_hex(8)}.part"

    def create(self) -> Upload:
        file_id = self._ids.new()
        directory = self._scratch.path("uploads", file_id)
        upload = Upload(file_id, secrets.token_urlsafe(32), f"batch/{file_id}.jsonl", directory)
        with self._lock:
            self._open[file_id] = upload
        return upload

    def find(self, file_id: str, upload_id: str) -> Upload:
        with self._lock:
            upload = self._open.get(file_id)
        if upload is None or not secrets.compare_digest(upload.upload_id, upload_id):
            raise _no_such_upload(file_id)
        return upload

    def put_part(self, file_id: str, upload_id: str, number: int, body: Spooled) -> Part:
        """Keep the spooled body as part `number`, replacing any earlier upload of that number."""
        with self._lock:
            upload = self.find(file_id, upload_id)
            others = sum(p.size for n, p in upload.parts.items() if n != number)
            if others + body.size > MAX_FILE_BYTES:
                raise ApiError(413, "file too large: a batch file is limited to 2 GB", code="file_too_large")
            part = Part(number, upload.directory / f"{number:05}.part", body.size, body.etag)
            os.replace(body.path, part.path)
            upload.parts[number] = part
            return part

    def complete(
        self, file_id: str, upload_id: str, listed: list[tuple[int, str]], min_part_bytes: int = MIN_PART_BYTES
    ) -> list[Part]:
        """Close the upload and hand over the listed parts, in order; unlisted parts are discarded.

        `listed` is (partNumber, etag) as the client sent them: strictly ascending, each one uploaded. Every
        part but the last is at least `min_part_bytes` and all of one size; the last is no larger.
        """
        with self._lock:
            upload = self.find(file_id, upload_id)
            numbers = [number for number, _ in listed]
            if numbers != sorted(set(numbers)):
                raise ApiError(
                    400,
                    "parts must be listed in ascending partNumber order, each once",
                    param="parts",
                    code="invalid_part_order",
                )
            chosen = []
            for i, (number, etag) in enumerate(listed):
                part = upload.parts.get(number)
                if part is None or part.etag != etag.strip('"'):
                    raise ApiError(
                        400,
                        f"parts[{i}]: part {number} was not uploaded with etag {etag!r}: list the etag "
                        "each part's upload returned",
                        param=f"parts[{i}]",
                        code="invalid_part",
                    )
                chosen.append(part)
            _check_sizes(chosen, min_part_bytes)
            del self._open[file_id]
        for number, part in upload.parts.items():
            if number not in numbers:
                part.path.unlink(missing_ok=True)
        return chosen

    def abort(self, file_id: str, upload_id: str) -> None:
        with self._lock:
            upload = self.find(file_id, upload_id)
            del self._open[file_id]
        shutil.rmtree(upload.directory, ignore_errors=True)

    def clear(self) -> None:
        with self._lock:
            self._open.clear()


def _check_sizes(parts: list[Part], min_part_bytes: int) -> None:
    *leading, last = parts
    for i, part in enumerate(leading):
        if part.size < min_part_bytes:
            raise ApiError(
                400,
                f"parts[{i}]: part {part.number} is {part.size} bytes; every part but the last must be at least "
                f"{min_part_bytes} bytes",
                param=f"parts[{i}]",
                code="part_too_small",
            )
    size = leading[0].size if leading else last.size
    for i, part in enumerate(parts):
        if part.size > size or (part is not last and part.size != size):
            raise ApiError(
                400,
                f"parts[{i}]: part {part.number} is {part.size} bytes, the first {size}: every part but the last "
                "must be of one size, and the last no larger",
                param=f"parts[{i}]",
                code="part_size_mismatch",
            )
