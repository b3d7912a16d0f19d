"""The Batch API — multipart upload of a JSONL file, then polling and result files: typed results and calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx2
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from .base import APIClient, parse, segment

# The multipart upload is object-storage multipart underneath: every part but the last must be at least
# 5 MiB, and all of one size. The API refuses parts of 100 MB or more; whether decimal or binary megabytes
# is unsure, so parts stay under both.
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PART_BYTES = 95 * 1024 * 1024


class _Result(BaseModel):
    # Built with the first answer parsed, not at start-up.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)


class Upload(_Result):
    file_id: str = Field(alias="fileId")
    upload_id: str = Field(alias="uploadId")
    key: str | None = None


class Part(_Result):
    part_number: int = Field(alias="partNumber")
    etag: str


class Progress(_Result):
    total: int | None = None
    completed: int | None = None
    failed: int | None = None


class OutputFile(_Result):
    index: int
    url: str


def _epoch_ms(value: Any) -> int | None:
    """A timestamp as Unix milliseconds (the one convention of every result), from ISO 8601 or a Unix time;
    None when absent or unreadable: a timestamp the API words differently must not fail the whole answer."""
    if value is None or value == "":
        return None
    try:
        moment = _INSTANT.validate_python(value)
    except ValidationError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


_INSTANT = TypeAdapter(datetime)
EpochMs = Annotated[int | None, BeforeValidator(_epoch_ms)]


class BatchJob(_Result):
    id: str
    status: str
    model: str | None = None
    size: int | None = None
    progress: Progress | None = None
    usage: dict[str, Any] | None = None
    outputs: list[OutputFile] = Field(default_factory=list)
    created_at_ms: EpochMs = Field(default=None, alias="created_at")
    completed_at_ms: EpochMs = Field(default=None, alias="completed_at")
    expires_at_ms: EpochMs = Field(default=None, alias="expires_at")
    error: Any = None  # why a failed job failed: {code, message} as documented; read leniently

    @property
    def failure(self) -> str | None:
        """The error of a failed job as one line, "code: message"; None when there is none."""
        error = self.error
        if error in (None, "", {}):
            return None
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            text = ": ".join(str(part) for part in (code, message) if part)
            return text or str(error)
        return str(error)


class BatchPage(_Result):
    batches: list[BatchJob] = Field(default_factory=list)
    next_cursor: str | None = None
    has_more: bool = False


class Batches:
    """Everything under /batch."""

    def __init__(self, api: APIClient) -> None:
        self._api = api

    async def create_upload(self) -> Upload:
        return parse(Upload, await self._api.request("POST", "batch", params={"action": "mpu-create"}, retry="unsent"))

    async def upload_part(self, upload: Upload, number: int, data: bytes) -> Part:
        # Re-sending a part replaces it, so parts are retried like any idempotent call.
        body = await self._api.request(
            "PUT",
            f"batch/{segment(upload.file_id)}",
            content=data,
            params={"action": "mpu-uploadpart", "uploadId": upload.upload_id, "partNumber": number},
            headers={"Content-Type": "application/octet-stream"},
        )
        return parse(Part, {"partNumber": number, **body})

    async def complete(self, upload: Upload, parts: list[Part], model: str | None = None) -> BatchJob:
        body: dict[str, Any] = {"parts": [{"partNumber": p.part_number, "etag": p.etag} for p in parts]}
        if model is not None:
            body["model"] = model
        return parse(
            BatchJob,
            await self._api.request(
                "POST",
                f"batch/{segment(upload.file_id)}",
                params={"action": "mpu-complete", "uploadId": upload.upload_id},
                json=body,
                retry="unsent",
            ),
        )

    async def abort(self, upload: Upload) -> None:
        await self._api.request(
            "DELETE", f"batch/{segment(upload.file_id)}", params={"action": "mpu-abort", "uploadId": upload.upload_id}
        )

    async def get(self, batch_id: str) -> BatchJob:
        return parse(BatchJob, await self._api.request("GET", f"batch/{segment(batch_id)}"))

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> BatchPage:
        params = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        return parse(BatchPage, await self._api.request("GET", "batch", params=params))

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[httpx2.Response]:
        """Stream one result file. The key goes only to the API's own host, never to a storage host."""
        async with self._api.stream_url(url) as response:
            yield response
