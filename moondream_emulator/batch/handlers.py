"""The Batch API's handlers under /v1/batch, and the result files it hands out.

Result files are served by the emulator itself under /files/batch/{id}/{index}.jsonl, outside /v1 and
without auth, at absolute URLs carrying a signature: they stand in for the pre-signed storage URLs of the
real API. A client must fetch them as given, and must not send its API key with them (the request log
shows whether it did). Real storage is another host than the API: so for a client on loopback the URLs
name the other loopback name (127.0.0.1 <-> localhost), same port.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import ApiError
from ..skills import validation
from ..tuning import checks
from .jobs import BatchJobs, Job
from .uploads import MAX_PART_NUMBER, MIN_PART_BYTES, Spooled, Uploads

PREFIX = "/v1/batch"
FILES_PREFIX = "/files/batch"
_LOOPBACK_TWIN = {"127.0.0.1": "localhost", "::1": "localhost", "localhost": "127.0.0.1"}


@dataclass(frozen=True)
class Received:
    """A request's body as the gate read it."""

    body: Any  # the parsed JSON, or None when the body was empty or not JSON
    spooled: Spooled | None  # an uploaded part, written to disk as it arrived
    too_large: bool


Handler = Callable[[Request, Received], Awaitable[Response]]


def _action(request: Request, expected: str) -> None:
    action = request.query_params.get("action")
    if action != expected:
        raise ApiError(400, f"action must be {expected} here, not {action!r}", param="action", code="invalid_action")


def _upload_id(request: Request) -> str:
    value = request.query_params.get("uploadId")
    if not value:
        raise ApiError(400, "uploadId is required", param="uploadId", code="missing_field")
    return value


def _part_number(request: Request) -> int:
    raw = request.query_params.get("partNumber", "")
    if not (raw.isdigit() and 1 <= int(raw) <= MAX_PART_NUMBER):
        raise ApiError(
            400, f"partNumber must be an integer from 1 to {MAX_PART_NUMBER}", param="partNumber", code="invalid_field"
        )
    return int(raw)


def _listed_parts(body: Any) -> list[tuple[int, str]]:
    parts = checks.json_object(body).get("parts")
    if not isinstance(parts, list) or not parts:
        raise ApiError(400, "parts must be a non-empty list of {partNumber, etag}", param="parts", code="invalid_field")
    listed = []
    for i, part in enumerate(parts):
        number = part.get("partNumber") if isinstance(part, dict) else None
        etag = part.get("etag") if isinstance(part, dict) else None
        if not (
            isinstance(number, int)
            and not isinstance(number, bool)
            and 1 <= number <= MAX_PART_NUMBER
            and isinstance(etag, str)
            and etag
        ):
            raise ApiError(
                400,
                f"parts[{i}] must be {{partNumber: 1-{MAX_PART_NUMBER}, etag: string}}",
                param=f"parts[{i}]",
                code="invalid_field",
            )
        listed.append((number, etag))
    return listed


class BatchApi:
    def __init__(
        self,
        uploads: Uploads,
        jobs: BatchJobs,
        checkpoint_policy: validation.CheckpointLookup,
        *,
        lines_per_file: Callable[[], int],
        files_url: Callable[[], str | None],
        min_part_bytes: Callable[[], int] = lambda: MIN_PART_BYTES,
    ) -> None:
        self.uploads = uploads
        self.jobs = jobs
        self._checkpoint_policy = checkpoint_policy
        self._lines_per_file = lines_per_file
        self._files_url = files_url  # the result files' base URL; None: the request's own
        self._min_part_bytes = min_part_bytes

    def routes(self, wrap: Callable[[Handler], Callable[[Request], Awaitable[Response]]]) -> list[Route]:
        """The routes, each handler wrapped by the server (body, errors) with `wrap`."""
        table: list[tuple[str, str, Handler]] = [
            (PREFIX, "POST", self.create_upload),
            (PREFIX, "GET", self.list_batches),
            (PREFIX + "/{file_id}", "PUT", self.upload_part),
            (PREFIX + "/{file_id}", "POST", self.complete),
            (PREFIX + "/{file_id}", "DELETE", self.abort),
            (PREFIX + "/{batch_id}", "GET", self.get_batch),
            (FILES_PREFIX + "/{batch_id}/{index:int}.jsonl", "GET", self.result_file),
        ]
        return [Route(path, wrap(handler), methods=[method]) for path, method, handler in table]

    # --- the multipart upload --------------------------------------------------------------------

    async def create_upload(self, request: Request, received: Received) -> Response:
        _action(request, "mpu-create")
        upload = self.uploads.create()
        return JSONResponse({"fileId": upload.file_id, "uploadId": upload.upload_id, "key": upload.key})

    async def upload_part(self, request: Request, received: Received) -> Response:
        _action(request, "mpu-uploadpart")
        file_id, upload_id = request.path_params["file_id"], _upload_id(request)
        self.uploads.find(file_id, upload_id)
        number = _part_number(request)
        if received.too_large:
            raise ApiError(413, "part too large: each part must be under 100 MB", code="part_too_large")
        if received.spooled is None:  # the client went away mid-body: nobody reads this answer
            raise ApiError(400, "the part did not arrive whole", code="incomplete_body")
        part = await anyio.to_thread.run_sync(self.uploads.put_part, file_id, upload_id, number, received.spooled)
        return JSONResponse({"etag": part.etag, "partNumber": part.number})

    async def complete(self, request: Request, received: Received) -> Response:
        _action(request, "mpu-complete")
        file_id, upload_id = request.path_params["file_id"], _upload_id(request)
        self.uploads.find(file_id, upload_id)
        if received.too_large:
            raise ApiError(413, "request too large", code="request_too_large")
        listed = _listed_parts(received.body)
        model = received.body.get("model")
        validation.model({"model": model}, self._checkpoint_policy)
        parts = await anyio.to_thread.run_sync(
            self.uploads.complete, file_id, upload_id, listed, self._min_part_bytes()
        )
        job = self.jobs.start(parts, model, self._lines_per_file())
        return JSONResponse({"id": job.id, "status": "chunking", "size": job.size})

    async def abort(self, request: Request, received: Received) -> Response:
        _action(request, "mpu-abort")
        file_id, upload_id = request.path_params["file_id"], _upload_id(request)
        await anyio.to_thread.run_sync(self.uploads.abort, file_id, upload_id)
        return JSONResponse({"ok": True})

    # --- jobs and their results ------------------------------------------------------------------

    def _url_maker(self, request: Request) -> Callable[[Job, int], str]:
        base = self._files_url()
        if base is None:
            url = request.base_url
            twin = _LOOPBACK_TWIN.get(url.hostname or "")
            base = str(url.replace(hostname=twin) if twin else url)
        base = base.rstrip("/")
        return lambda job, index: f"{base}{FILES_PREFIX}/{job.id}/{index}.jsonl?signature={job.token}"

    async def get_batch(self, request: Request, received: Received) -> Response:
        return JSONResponse(self.jobs.describe(request.path_params["batch_id"], self._url_maker(request)))

    async def list_batches(self, request: Request, received: Received) -> Response:
        limit, cursor = checks.page(request.query_params)
        return JSONResponse(self.jobs.page(limit, cursor, self._url_maker(request)))

    async def result_file(self, request: Request, received: Received) -> Response:
        path = self.jobs.result_file(
            request.path_params["batch_id"],
            request.path_params["index"],
            request.query_params.get("signature", ""),
        )
        return FileResponse(path, media_type="application/x-ndjson")
