"""The Batch API of the emulator over HTTP: multipart uploads, jobs and their progress, result files."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from moondream_emulator import Emulator, EmulatorConfig, running_emulator
from moondream_emulator.batch import jobs as batch_jobs
from moondream_emulator.batch import lines as batch_lines
from moondream_emulator.batch import uploads as batch_uploads
from tests.support.pictures import Rect, assert_box, canvas

pytestmark = pytest.mark.anyio

KEY = "md-batch-test-key"
AUTH = {"X-Moondream-Auth": KEY}


def small_parts() -> EmulatorConfig:
    """Parts of a few bytes: the storage's 5 MiB minimum is lowered here, and tested on its own below."""
    return EmulatorConfig(keys=frozenset({KEY}), batch_min_part_bytes=1)


SQUARES: list[Rect] = [(0.1, 0.1, 0.4, 0.5), (0.5, 0.2, 0.9, 0.6), (0.3, 0.55, 0.6, 0.95)]


def png(rect: Rect) -> bytes:
    """White, with a red square at `rect`."""
    buffer = io.BytesIO()
    canvas((200, 150), [("red", rect)]).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def line(i: int, skill: str = "detect", image: bytes | str | None = None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": str(i), "skill": skill, **fields}
    if image is not None:
        record["image"] = image if isinstance(image, str) else b64(image)
    return record


def detect_lines(count: int) -> list[dict[str, Any]]:
    return [line(i, image=png(SQUARES[i % len(SQUARES)]), object="red square") for i in range(count)]


def jsonl(records: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


class Batches:
    """The Batch API through one HTTP client, as a client of it would call it."""

    def __init__(self, emulator: Emulator, http: httpx2.AsyncClient) -> None:
        self.emulator = emulator
        self.http = http

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        with anyio.fail_after(10):
            return await self.http.request(method, path, **kwargs)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    async def create(self) -> dict[str, Any]:
        return await self.ok("POST", "/batch", params={"action": "mpu-create"})

    async def put(self, upload: dict[str, Any], number: Any, data: bytes) -> httpx2.Response:
        params = {"action": "mpu-uploadpart", "uploadId": upload["uploadId"], "partNumber": number}
        return await self.call(
            "PUT",
            f"/batch/{upload['fileId']}",
            params=params,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    async def complete(self, upload: dict[str, Any], parts: list[Any], **extra: Any) -> httpx2.Response:
        params = {"action": "mpu-complete", "uploadId": upload["uploadId"]}
        body = {"parts": parts, **extra}
        return await self.call("POST", f"/batch/{upload['fileId']}", params=params, json=body)

    async def submit(self, data: bytes, parts: int = 1, **extra: Any) -> dict[str, Any]:
        """Upload `data` in `parts` parts and complete the upload: the job as complete answered."""
        upload = await self.create()
        size = -(-len(data) // parts) or 1
        sent = []
        for number, start in enumerate(range(0, max(len(data), 1), size), 1):
            response = await self.put(upload, number, data[start : start + size])
            assert response.status_code == 200, response.text
            sent.append(response.json())
        response = await self.complete(upload, sent, **extra)
        assert response.status_code == 200, response.text
        return response.json()

    async def wait(self, batch_id: str, *statuses: str) -> str:
        with anyio.fail_after(10):
            return await self.emulator.wait_for_batch(batch_id, *statuses)

    async def finished(self, batch_id: str) -> dict[str, Any]:
        await self.wait(batch_id)
        return await self.ok("GET", f"/batch/{batch_id}")

    async def results(self, job: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """The records of each result file, fetched as a storage URL is: with no key."""
        files = []
        for output in job["outputs"]:
            with anyio.fail_after(10):
                response = await self.http.get(output["url"], headers={"X-Moondream-Auth": ""})
            assert response.status_code == 200, response.text
            files.append([json.loads(text) for text in response.text.splitlines()])
        return files


def refused(response: httpx2.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    return error


@pytest.fixture
async def api() -> AsyncIterator[Batches]:
    emulator = Emulator(small_parts())
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://emulator/v1", headers=AUTH) as http:
        yield Batches(emulator, http)
    emulator.close()


# --- the whole flow -------------------------------------------------------------------------------


async def test_a_file_uploaded_in_parts_over_http_is_detected_line_by_line() -> None:
    records = detect_lines(3)
    data = jsonl(records)
    with running_emulator(Emulator(small_parts())) as running:
        async with httpx2.AsyncClient(base_url=running.url, headers=AUTH) as http:
            api = Batches(running.emulator, http)
            submitted = await api.submit(data, parts=3)  # parts split mid-line
            assert set(submitted) == {"id", "status", "size"}
            assert (submitted["status"], submitted["size"]) == ("chunking", len(data))
            job = await api.finished(submitted["id"])
            (results,) = await api.results(job)
            storage = running.url.removesuffix("/v1").replace("127.0.0.1", "localhost")
    assert job["status"] == "completed" and job["model"] == "moondream3-preview"
    assert job["progress"] == {"total": 3, "completed": 3, "failed": 0}
    ((index, url),) = [(o["index"], o["url"]) for o in job["outputs"]]
    assert index == 0 and url.startswith(f"{storage}/files/batch/{job['id']}/0.jsonl?signature=")
    assert job["created_at"] <= job["completed_at"] < job["expires_at"]
    assert [(r["line_index"], r["id"], r["status"]) for r in results] == [
        (0, "0", "ok"),
        (1, "1", "ok"),
        (2, "2", "ok"),
    ]
    for record, rect in zip(results, SQUARES, strict=True):
        (found,) = record["result"]["objects"]
        assert_box(found, rect)
        assert set(record["usage"]) == {"input_tokens", "output_tokens"}
    assert job["usage"] == {
        "input_tokens": sum(r["usage"]["input_tokens"] for r in results),
        "output_tokens": sum(r["usage"]["output_tokens"] for r in results),
    }


@pytest.mark.parametrize(
    ("skill", "fields"),
    [
        ("detect", {"object": "red", "settings": {"max_objects": 1}}),
        ("point", {"object": "red"}),
        ("caption", {"length": "long"}),
        ("query", {"question": "How many red shapes?", "reasoning": True}),
    ],
)
async def test_each_line_is_answered_as_its_skill_endpoint_answers(
    api: Batches, skill: str, fields: dict[str, Any]
) -> None:
    image = png(SQUARES[0])
    job = await api.finished((await api.submit(jsonl([line(7, skill, image, **fields)])))["id"])
    ((record,),) = await api.results(job)
    endpoint = await api.ok("POST", f"/{skill}", json={"image_url": "data:image/png;base64," + b64(image), **fields})
    del endpoint["request_id"]
    assert record["result"] == endpoint
    assert (record["line_index"], record["id"], record["status"]) == (0, "7", "ok")


async def test_results_come_in_files_of_batch_lines_per_file_lines(api: Batches) -> None:
    api.emulator.config.batch_lines_per_file = 2
    job = await api.finished((await api.submit(jsonl(detect_lines(5)), parts=2))["id"])
    assert [o["index"] for o in job["outputs"]] == [0, 1, 2]
    files = await api.results(job)
    assert [[r["line_index"] for r in records] for records in files] == [[0, 1], [2, 3], [4]]


async def test_bad_lines_get_their_own_errors_and_the_rest_are_answered(
    api: Batches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_lines, "MAX_LINE_BYTES", 4096)
    image = png(SQUARES[0])
    data = jsonl(
        [
            line(0, image=image, object="red"),
            line(1, image="not base64!", object="red"),
            line(2, image=image),
            line(3, "segment", image, object="red"),
            b'{"id": "4", "skill": "detect",',
            line(5, image="data:image/png;base64," + b64(image), object="red"),
            b"[1, 2]",
            {"id": "7", "image": b64(image), "object": "red"},
            line(8, "query", question="What is this?"),
            line(9, image=b64(b"not an image"), object="red"),
            line(10, "caption", image, settings={"max_tokens": 0}),
            line(11, "caption", b"x" * 4096),
            line(12, "point", image, object="red", settings={"max_objects": 0}),  # ignored on point lines
        ]
    )
    job = await api.finished((await api.submit(data))["id"])
    ((*errors, last),) = await api.results(job)
    assert [(e["line_index"], e["id"], e["status"], e["error"]["code"]) for e in errors[1:]] == [
        (1, "1", "error", "image_decode_failed"),
        (2, "2", "error", "invalid_request"),
        (3, "3", "error", "unknown_skill"),
        (4, None, "error", "invalid_request"),
        (5, "5", "error", "invalid_request"),
        (6, None, "error", "invalid_request"),
        (7, "7", "error", "invalid_request"),
        (8, "8", "error", "invalid_request"),  # every batch line needs an image, a query's too
        (9, "9", "error", "image_decode_failed"),
        (10, "10", "error", "invalid_request"),
        (11, None, "error", "invalid_request"),
    ]
    assert {e["error"]["code"] for e in errors[1:]} <= set(batch_lines.LINE_ERRORS)
    assert all(set(e) == {"line_index", "id", "status", "error"} and e["error"]["message"] for e in errors[1:])
    assert (errors[0]["status"], last["status"], last["line_index"]) == ("ok", "ok", 12)
    assert job["progress"] == {"total": 13, "completed": 2, "failed": 11}


async def test_a_query_line_reasons_unless_told_not_to(api: Batches) -> None:
    image = png(SQUARES[0])
    asked = [
        line(0, "query", image, question="How many red shapes?"),
        line(1, "query", image, question="How many red shapes?", reasoning=False),
    ]
    job = await api.finished((await api.submit(jsonl(asked)))["id"])
    ((reasoned, plain),) = await api.results(job)
    assert reasoned["result"]["reasoning"]["text"] and "reasoning" not in plain["result"]
    assert reasoned["result"]["answer"] == plain["result"]["answer"] == "1"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_batch"),
        (b"\n \n", "empty_batch"),
        (b"name,box\ncat,1 2 3 4\n", "validation_error"),
        (jsonl(detect_lines(1)) + b"\n" + jsonl(detect_lines(1)), "validation_error"),
        (jsonl(detect_lines(2)) + b"  \n", "validation_error"),
    ],
)
async def test_a_file_that_is_not_jsonl_fails_the_whole_job(api: Batches, data: bytes, code: str) -> None:
    job = await api.finished((await api.submit(data))["id"])
    assert (job["status"], job["outputs"], job["error"]["code"]) == ("failed", [], code)
    assert job["error"]["code"] in batch_jobs.BATCH_ERRORS and job["error"]["message"]
    assert job["completed_at"] is not None


async def test_a_final_newline_is_no_blank_line(api: Batches) -> None:
    data = jsonl(detect_lines(2))
    assert data.endswith(b"}\n")
    job = await api.finished((await api.submit(data))["id"])
    assert (job["status"], job["progress"]["total"]) == ("completed", 2)


async def test_a_file_over_the_line_limit_fails_the_job(api: Batches, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_jobs, "MAX_LINES", 3)
    job = await api.finished((await api.submit(jsonl(detect_lines(4))))["id"])
    assert (job["status"], job["error"]["code"], job["outputs"]) == ("failed", "limit_exceeded", [])
    assert (await api.finished((await api.submit(jsonl(detect_lines(3))))["id"]))["status"] == "completed"


# --- uploads --------------------------------------------------------------------------------------


async def test_an_aborted_upload_takes_no_more_parts_and_cannot_be_completed(api: Batches) -> None:
    upload = await api.create()
    part = (await api.put(upload, 1, b"{}\n")).json()
    params = {"action": "mpu-abort", "uploadId": upload["uploadId"]}
    assert await api.ok("DELETE", f"/batch/{upload['fileId']}", params=params) == {"ok": True}
    refused(await api.put(upload, 2, b"{}\n"), 404)
    refused(await api.complete(upload, [part]), 404)
    refused(await api.call("DELETE", f"/batch/{upload['fileId']}", params=params), 404)


async def test_unknown_uploads_and_batches_are_404(api: Batches) -> None:
    upload = await api.create()
    stranger = {"fileId": "01JUNKNOWNFILE000000000000", "uploadId": upload["uploadId"]}
    wrong_id = {"fileId": upload["fileId"], "uploadId": "not-the-upload-id"}
    refused(await api.put(stranger, 1, b"{}\n"), 404)
    refused(await api.put(wrong_id, 1, b"{}\n"), 404)
    refused(await api.complete(wrong_id, [{"partNumber": 1, "etag": "x"}]), 404)
    refused(await api.call("GET", "/batch/01JUNKNOWNBATCH00000000000"), 404)
    refused(await api.call("GET", "http://emulator/files/batch/01JUNKNOWNBATCH00000000000/0.jsonl"), 404)


@pytest.mark.parametrize("number", [0, 10001, -1, "one", ""])
async def test_part_numbers_must_be_from_1_to_10000(api: Batches, number: Any) -> None:
    refused(await api.put(await api.create(), number, b"{}\n"), 400, "partNumber")


async def test_a_part_at_the_size_limit_is_refused_with_413(api: Batches) -> None:
    api.emulator.batch_part_limit = 1024
    upload = await api.create()
    refused(await api.put(upload, 1, b"x" * 1024), 413)
    assert (await api.put(upload, 1, b"x" * 1023)).status_code == 200
    assert api.emulator.requests[-2].body_text is None


async def test_parts_adding_up_to_over_2_gb_are_refused_with_413(api: Batches, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_uploads, "MAX_FILE_BYTES", 100)
    upload = await api.create()
    assert (await api.put(upload, 1, b"x" * 60)).status_code == 200
    refused(await api.put(upload, 2, b"x" * 60), 413)
    assert (await api.put(upload, 1, b"x" * 40)).status_code == 200  # replacing part 1 frees its room
    assert (await api.put(upload, 2, b"x" * 60)).status_code == 200


async def test_uploading_a_part_number_again_replaces_the_part(api: Batches) -> None:
    upload = await api.create()
    first = (await api.put(upload, 1, jsonl(detect_lines(2)))).json()
    second = (await api.put(upload, 1, jsonl(detect_lines(1)))).json()
    assert first["etag"] != second["etag"] and first["partNumber"] == second["partNumber"] == 1
    refused(await api.complete(upload, [first]), 400, "parts[0]")
    job = await api.finished((await api.complete(upload, [second])).json()["id"])
    assert job["progress"]["total"] == 1


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        ([], "parts"),
        ([{"partNumber": 2, "etag": "{2}"}, {"partNumber": 1, "etag": "{1}"}], "parts"),
        ([{"partNumber": 1, "etag": "{1}"}, {"partNumber": 1, "etag": "{1}"}], "parts"),
        ([{"partNumber": 1, "etag": "0" * 32}], "parts[0]"),
        ([{"partNumber": 1, "etag": "{1}"}, {"partNumber": 3, "etag": "{2}"}], "parts[1]"),
        ([{"partNumber": "1", "etag": "{1}"}], "parts[0]"),
    ],
)
async def test_completing_needs_the_uploaded_parts_in_order_with_their_etags(
    api: Batches, parts: list[dict[str, Any]], param: str
) -> None:
    upload = await api.create()
    etags = {f"{{{n}}}": (await api.put(upload, n, jsonl(detect_lines(1)))).json()["etag"] for n in (1, 2)}
    refused(await api.complete(upload, [{**p, "etag": etags.get(p["etag"], p["etag"])} for p in parts]), 400, param)
    # A refused completion leaves the upload open; a subset of the parts is enough.
    listed = [{"partNumber": 2, "etag": etags["{2}"]}]
    job = await api.finished((await api.complete(upload, listed)).json()["id"])
    assert job["progress"]["total"] == 1


async def test_parts_but_the_last_must_be_5_mib_and_of_one_size_as_the_storage_demands(api: Batches) -> None:
    api.emulator.config.batch_min_part_bytes = batch_uploads.MIN_PART_BYTES
    assert batch_uploads.MIN_PART_BYTES == 5 * 1024 * 1024
    data = jsonl(detect_lines(1))
    upload = await api.create()
    small = [(await api.put(upload, n, data)).json() for n in (1, 2)]
    refused(await api.complete(upload, small), 400, "parts[0]")
    api.emulator.config.batch_min_part_bytes = 10
    uneven = [
        (await api.put(upload, 1, data[:-1] + b" " * 10 + b"\n")).json(),
        (await api.put(upload, 2, data)).json(),
        (await api.put(upload, 3, data)).json(),
    ]
    refused(await api.complete(upload, uneven), 400, "parts[1]")
    larger_last = [uneven[1], (await api.put(upload, 3, data + data)).json()]
    refused(await api.complete(upload, larger_last), 400, "parts[1]")
    # One part is the last: any size goes.
    job = await api.finished((await api.complete(upload, [uneven[0]])).json()["id"])
    assert job["progress"]["total"] == 1


# --- models ---------------------------------------------------------------------------------------


async def saved_checkpoint(api: Batches) -> str:
    """A finetune trained one step and saved: its model string."""
    finetune_id = (await api.ok("POST", "/tuning/finetunes", json={"name": "b", "rank": 8}))["finetune_id"]
    image_url = "data:image/png;base64," + b64(png(SQUARES[0]))
    request = {"skill": "detect", "object": "red", "image_url": image_url}
    batch = await api.ok(
        "POST", "/tuning/rollouts", json={"finetune_id": finetune_id, "num_rollouts": 2, "request": request}
    )
    group = {"mode": "rl", "request": batch["request"], "rollouts": batch["rollouts"], "rewards": [1, 0]}
    await api.ok("POST", "/tuning/train_step", json={"finetune_id": finetune_id, "groups": [group]})
    await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save")
    return f"moondream3-preview/{finetune_id}@1"


async def test_the_model_is_the_base_model_or_a_saved_checkpoint(api: Batches) -> None:
    upload = await api.create()
    parts = [(await api.put(upload, 1, jsonl(detect_lines(1)))).json()]
    refused(await api.complete(upload, parts, model="moondream2"), 400, "model")
    refused(await api.complete(upload, parts, model="moondream3-preview/01JUNKNOWNFINETUNE00000000@1"), 404, "model")
    model = await saved_checkpoint(api)
    job = await api.finished((await api.complete(upload, parts, model=model)).json()["id"])
    assert (job["model"], job["progress"]["completed"]) == (model, 1)
    named = await api.finished((await api.submit(jsonl(detect_lines(1)), model="moondream3-preview"))["id"])
    assert named["model"] == "moondream3-preview"


# --- test knobs -----------------------------------------------------------------------------------


async def test_held_batches_stay_processing_until_released(api: Batches) -> None:
    api.emulator.hold_batches = True
    batch_id = (await api.submit(jsonl(detect_lines(2))))["id"]
    assert await api.wait(batch_id, "processing") == "processing"
    held = await api.ok("GET", f"/batch/{batch_id}")
    assert (held["status"], held["progress"], held["outputs"], held["completed_at"]) == (
        "processing",
        {"total": 2, "completed": 0, "failed": 0},
        [],
        None,
    )
    api.emulator.release_batches()
    assert (await api.finished(batch_id))["progress"] == {"total": 2, "completed": 2, "failed": 0}


async def test_failed_lines_hit_only_the_first_lines_of_the_next_batch(api: Batches) -> None:
    api.emulator.fail_batch_lines(2)
    job = await api.finished((await api.submit(jsonl(detect_lines(3))))["id"])
    ((*failed, answered),) = await api.results(job)
    assert [(r["id"], r["error"]["code"]) for r in failed] == [("0", "processing_error"), ("1", "processing_error")]
    assert answered["status"] == "ok"
    later = await api.finished((await api.submit(jsonl(detect_lines(3))))["id"])
    assert later["progress"] == {"total": 3, "completed": 3, "failed": 0}


async def test_clear_forgets_batches_and_stops_held_ones(api: Batches) -> None:
    api.emulator.hold_batches = True
    batch_id = (await api.submit(jsonl(detect_lines(1))))["id"]
    api.emulator.clear()
    assert api.emulator.hold_batches is False
    refused(await api.call("GET", f"/batch/{batch_id}"), 404)
    assert (await api.ok("GET", "/batch")) == {"batches": [], "next_cursor": None, "has_more": False}


async def test_waiting_for_an_unknown_batch_raises_and_a_cancelled_wait_lets_go(api: Batches) -> None:
    with pytest.raises(LookupError):
        await api.wait("01JUNKNOWNBATCH00000000000")
    api.emulator.hold_batches = True
    batch_id = (await api.submit(jsonl(detect_lines(1))))["id"]
    with anyio.move_on_after(0.05) as waiting:
        await api.emulator.wait_for_batch(batch_id)
    assert waiting.cancelled_caught
    api.emulator.release_batches()
    assert await api.wait(batch_id) == "completed"


# --- listing --------------------------------------------------------------------------------------


async def test_batches_are_listed_newest_first_a_page_at_a_time(api: Batches) -> None:
    ids = [(await api.submit(jsonl(detect_lines(1))))["id"] for _ in range(3)]
    for batch_id in ids:
        await api.wait(batch_id)
    first = await api.ok("GET", "/batch", params={"limit": 2})
    assert [b["id"] for b in first["batches"]] == ids[:0:-1]
    assert (first["has_more"], first["next_cursor"]) == (True, ids[1])
    assert first["batches"][0] == await api.ok("GET", f"/batch/{ids[2]}")
    rest = await api.ok("GET", "/batch", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [b["id"] for b in rest["batches"]] == [ids[0]]
    assert (rest["has_more"], rest["next_cursor"]) == (False, None)
    for params in ({"limit": 0}, {"limit": 101}, {"cursor": "nope"}):
        refused(await api.call("GET", "/batch", params=params), 400, next(iter(params)))


# --- result files ---------------------------------------------------------------------------------


async def test_result_files_are_on_another_host_need_no_key_and_the_log_shows_if_one_came() -> None:
    with running_emulator(Emulator(EmulatorConfig(keys=frozenset({KEY})))) as running:
        port = running.url.rsplit(":", 1)[1].split("/")[0]
        async with httpx2.AsyncClient(base_url=running.url, headers=AUTH) as http:
            api = Batches(running.emulator, http)
            job = await api.finished((await api.submit(jsonl(detect_lines(1))))["id"])
            url = job["outputs"][0]["url"]
            async with httpx2.AsyncClient() as storage:
                with anyio.fail_after(10):
                    plain = await storage.get(url)
                    keyed = await storage.get(url, headers=AUTH)
                    unsigned = await storage.get(url.split("?")[0])
        downloads = [r for r in running.emulator.requests if r.path.startswith("/files/")]
    # The API was called at 127.0.0.1: storage answers as localhost, as a client can tell from the URL.
    assert url.startswith(f"http://localhost:{port}/files/batch/{job['id']}/0.jsonl?signature=")
    assert (plain.status_code, keyed.status_code, unsigned.status_code) == (200, 200, 403)
    assert plain.headers["content-type"].startswith("application/x-ndjson")
    assert json.loads(plain.text)["status"] == "ok"
    assert ["x-moondream-auth" in r.headers for r in downloads] == [False, True, False]


async def test_the_result_files_base_url_may_be_configured(api: Batches) -> None:
    api.emulator.config.batch_files_url = "http://storage.example:9000/"
    job = await api.finished((await api.submit(jsonl(detect_lines(1))))["id"])
    url = job["outputs"][0]["url"]
    assert url.startswith(f"http://storage.example:9000/files/batch/{job['id']}/0.jsonl?")


async def test_a_result_file_is_not_served_before_the_job_completes(api: Batches) -> None:
    api.emulator.hold_batches = True
    batch_id = (await api.submit(jsonl(detect_lines(1))))["id"]
    await api.wait(batch_id, "processing")
    refused(await api.call("GET", f"http://emulator/files/batch/{batch_id}/0.jsonl"), 404)


# --- the gate -------------------------------------------------------------------------------------


async def test_batch_calls_pass_the_same_gate_as_the_skills(api: Batches) -> None:
    no_key = {"X-Moondream-Auth": ""}
    refused(await api.call("POST", "/batch", params={"action": "mpu-create"}, headers=no_key), 401)
    upload = await api.create()
    api.emulator.inject(503, path="~/batch/", method="PUT")
    refused(await api.put(upload, 1, b"{}\n"), 503)
    assert (await api.put(upload, 1, b"{}\n")).status_code == 200
    assert [(r.method, r.path.removesuffix(upload["fileId"]), r.status) for r in api.emulator.requests] == [
        ("POST", "/v1/batch", 401),
        ("POST", "/v1/batch", 200),
        ("PUT", "/v1/batch/", 503),
        ("PUT", "/v1/batch/", 200),
    ]


async def test_an_injected_fault_may_name_a_method_and_a_path_it_ends_with(api: Batches) -> None:
    api.emulator.inject(502, path="/batch", method="GET", times=2)
    await api.create()  # POST: not hit
    refused(await api.call("GET", "/batch"), 502)
    assert (await api.call("GET", "/batch/01JUNKNOWNBATCH00000000000")).status_code == 404  # other path
    refused(await api.call("GET", "/batch"), 502)
    assert (await api.call("GET", "/batch")).status_code == 200


async def test_an_unknown_action_is_refused(api: Batches) -> None:
    refused(await api.call("POST", "/batch", params={"action": "mpu-start"}), 400, "action")
    refused(await api.call("POST", "/batch"), 400, "action")


async def test_moondream_station_has_no_batch_api() -> None:
    emulator = Emulator(EmulatorConfig(no_auth=True))
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://e/v1") as http:
        created = await http.post("/batch", params={"action": "mpu-create"})
        listed = await http.get("/batch")
    assert (created.status_code, listed.status_code) == (404, 404)
    assert set(created.json()) == {"error"}
