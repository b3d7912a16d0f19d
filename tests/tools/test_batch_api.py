"""The Batch API tools through the protocol: a multipart upload, polling, results mapped back to images."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client
from PIL import Image, ImageDraw
from pydantic import ValidationError

from moondream_emulator.batch import jobs as batch_jobs
from moondream_mcp.client.batch import MIN_PART_BYTES
from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal
from tests.support.pictures import assert_box, canvas, save

pytestmark = pytest.mark.anyio


@pytest.fixture
async def smallest_parts(settings: Settings):
    """A client whose uploads are cut into parts of 5 MiB, the least the storage takes."""
    async with Client(build_server(settings.model_copy(update={"batch_part_bytes": MIN_PART_BYTES}))) as client:
        yield client


def photos(folder: Path, count: int) -> dict[str, tuple[float, float, float, float]]:
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for i in range(count):
        box = (0.1 + 0.05 * i, 0.2, 0.4 + 0.05 * i, 0.6)
        made[save(canvas((400, 300), [("red", box)]), folder / f"p{i}.jpg", quality=95)] = box
    return made


def grainy_photos(folder: Path, count: int) -> dict[str, tuple[float, float, float, float]]:
    """Photos of ~1.5 MB each once prepared (grain does not compress), each with a red square of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    grain = Image.merge("RGB", [Image.effect_noise((1400, 1000), 40) for _ in range(3)])
    made = {}
    for i in range(count):
        box = (0.1 + 0.05 * i, 0.2, 0.4 + 0.05 * i, 0.6)
        image = grain.copy()
        ImageDraw.Draw(image).rectangle([round(box[0] * 1400), 200, round(box[2] * 1400) - 1, 599], fill="red")
        made[save(image, folder / f"p{i}.jpg", quality=90)] = box
    return made


async def test_a_batch_job_round_trips_in_equal_parts_with_every_result_mapped_to_its_image(
    smallest_parts: Client, workdir: Path, emulator
) -> None:
    made = grainy_photos(workdir / "shoot", 8)
    (workdir / "shoot" / "broken.jpg").write_bytes(b"no image here")
    submitted = await call(smallest_parts, "submit_batch", skill="detect", images=str(workdir / "shoot"), object="red")
    assert submitted["lines"] == 8 and submitted["parts"] >= 2
    assert [f["count"] for f in submitted["skipped"]] == [1]
    uploads = [int(r.headers["content-length"]) for r in emulator.emulator.requests if r.method == "PUT"]
    assert len(uploads) == submitted["parts"] and sum(uploads) == submitted["bytes"]
    # As the storage underneath demands (and the emulator checks): every part but the last is 5 MiB.
    assert set(uploads[:-1]) == {MIN_PART_BYTES} and 0 < uploads[-1] <= MIN_PART_BYTES
    assert list((settings_dir := workdir.parent / "data" / "batch-uploads").iterdir()) == [], settings_dir

    results = await call(
        smallest_parts,
        "batch_results",
        batch_id=submitted["batch_id"],
        output=str(workdir / "results.jsonl"),
        wait_seconds=30,
    )
    assert (results["lines"], results["succeeded"], results["failed"]) == (8, 8, 0)
    lines = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
    assert sorted(line["image"] for line in lines) == sorted(made)
    for line in lines:
        assert_box(line["result"]["objects"][0], made[line["image"]])
    files = [r for r in emulator.emulator.requests if r.method == "GET" and "/v1/" not in r.path]
    assert files and all("x-moondream-auth" not in r.headers for r in files), "the key stays with the API"


def test_parts_under_the_storage_minimum_cannot_be_configured(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="batch_part_bytes"):
        Settings.model_validate({**settings.model_dump(), "batch_part_bytes": 20_000})


async def test_query_lines_reason_only_when_asked(client: Client, workdir: Path, emulator) -> None:
    made = photos(workdir / "q", 1)
    answers = {}
    for reasoning in (False, True):
        submitted = await call(
            client,
            "submit_batch",
            skill="query",
            images=list(made),
            question="How many red shapes?",
            reasoning=reasoning,
        )
        output = workdir / f"q-{reasoning}.jsonl"
        await call(client, "batch_results", batch_id=submitted["batch_id"], output=str(output), wait_seconds=30)
        (answers[reasoning],) = [json.loads(line)["result"] for line in output.read_text().splitlines()]
    # The Batch API reasons unless a line says not to (and bills for it): the line must say so.
    assert "reasoning" not in answers[False] and answers[True]["reasoning"]["text"]
    assert answers[False]["answer"] == answers[True]["answer"] == "1"


async def test_sampling_settings_on_detect_lines_are_refused_before_anything_is_sent(
    client: Client, workdir: Path, emulator
) -> None:
    made = photos(workdir / "s", 1)
    text = await refusal(client, "submit_batch", skill="detect", images=list(made), object="red", temperature=0.5)
    assert "caption and query" in text
    assert not [r for r in emulator.emulator.requests if "/batch" in r.path]


async def test_a_failed_batch_is_reported_with_the_apis_reason(
    client: Client, workdir: Path, emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_jobs, "MAX_LINES", 1)
    made = photos(workdir / "x", 2)
    submitted = await call(client, "submit_batch", skill="point", images=list(made), object="red")
    with anyio.fail_after(30):
        await emulator.emulator.wait_for_batch(submitted["batch_id"])
    status = await call(client, "batch_status", batch_id=submitted["batch_id"])
    assert status["status"] == "failed" and status["error"].startswith("limit_exceeded: ")
    text = await refusal(client, "batch_results", batch_id=submitted["batch_id"], output=str(workdir / "x.jsonl"))
    assert "failed (limit_exceeded: " in text and "no results" in text
    assert not (workdir / "x.jsonl").exists()


async def test_results_of_a_job_still_processing_say_so(client: Client, workdir: Path, emulator) -> None:
    photos(workdir / "h", 2)
    emulator.emulator.hold_batches = True
    try:
        submitted = await call(client, "submit_batch", skill="caption", images=str(workdir / "h"), length="short")
        status = await call(client, "batch_status", batch_id=submitted["batch_id"])
        assert status["status"] in ("chunking", "processing")
        result = await client.call_tool(
            "batch_results", {"batch_id": submitted["batch_id"], "output": str(workdir / "early.jsonl")}
        )
        assert result.is_error and "still" in result.content[0].text
        assert not (workdir / "early.jsonl").exists()
    finally:
        emulator.emulator.hold_batches = False
        emulator.emulator.release_batches()
    listed = await call(client, "list_batches", limit=100)
    assert submitted["batch_id"] in [b["batch_id"] for b in listed["batches"]]


async def test_failed_lines_come_back_as_failed_images(client: Client, workdir: Path, emulator) -> None:
    made = photos(workdir / "f", 3)
    emulator.emulator.fail_batch_lines(2)
    submitted = await call(client, "submit_batch", skill="point", images=list(made), object="red")
    results = await call(
        client, "batch_results", batch_id=submitted["batch_id"], output=str(workdir / "f.jsonl"), wait_seconds=30
    )
    assert (results["succeeded"], results["failed"]) == (1, 2)
    assert results["failures"][0]["count"] == 2
    assert all(image in made for image in results["failures"][0]["images"])


async def test_a_failed_upload_is_aborted(client: Client, workdir: Path, emulator) -> None:
    photos(workdir / "a", 3)
    emulator.emulator.inject(413, method="PUT", times=10)
    result = await client.call_tool("submit_batch", {"skill": "detect", "images": str(workdir / "a"), "object": "red"})
    assert result.is_error and "413" in result.content[0].text
    assert [r.method for r in emulator.emulator.requests if r.method == "DELETE"] == ["DELETE"]


async def test_a_job_reports_its_times_in_unix_milliseconds(client: Client, workdir: Path) -> None:
    photos(workdir / "t", 1)
    before = time.time() * 1000
    submitted = await call(client, "submit_batch", skill="caption", images=str(workdir / "t"))
    await call(
        client, "batch_results", batch_id=submitted["batch_id"], output=str(workdir / "t.jsonl"), wait_seconds=30
    )
    status = await call(client, "batch_status", batch_id=submitted["batch_id"])
    after = time.time() * 1000
    # The emulator words them as ISO 8601 strings, as the API does.
    assert before - 1000 <= status["created_at_ms"] <= status["completed_at_ms"] <= after + 1000
    assert status["expires_at_ms"] > status["completed_at_ms"]
