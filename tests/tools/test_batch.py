"""The batch tool through the protocol: folders and globs, resumable JSONL, grouped failures, the rate limit."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import anyio
import pytest
from mcp import Client

from moondream_emulator import Emulator, EmulatorConfig, running_emulator
from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal
from tests.support.keys import API_KEY
from tests.support.pictures import assert_box, canvas, save

pytestmark = pytest.mark.anyio


def shoot(folder: Path, count: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """`count` photos, each with one red square somewhere else."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        box = (0.05 + 0.08 * i % 0.6, 0.1, 0.3 + 0.08 * i % 0.6, 0.5)
        made.append((save(canvas((200, 150), [("red", box)]), folder / f"img{i:03}.png"), box))
    return made


def lines(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


async def test_a_folder_is_detected_image_by_image_into_jsonl(client: Client, workdir: Path) -> None:
    made = dict(shoot(workdir / "shoot", 5))
    (workdir / "shoot" / "notes.txt").write_text("not an image")
    save(canvas(), workdir / "shoot" / ".hidden.png")
    out = await call(
        client,
        "batch",
        skill="detect",
        images=str(workdir / "shoot"),
        object="red",
        output=str(workdir / "boxes.jsonl"),
    )
    assert (out["total"], out["succeeded"], out["failed"], out["skipped"]) == (5, 5, 0, 0)
    records = lines(out["output"])
    assert sorted(r["image"] for r in records) == sorted(made)
    for record in records:
        assert record["ok"] is True
        assert_box(record["result"]["objects"][0], made[record["image"]])
    assert len(out["samples"]) == 3


async def test_a_glob_reaches_into_subfolders(client: Client, workdir: Path) -> None:
    shoot(workdir / "a", 2)
    shoot(workdir / "a" / "b", 2)
    out = await call(client, "batch", skill="caption", images=str(workdir / "a" / "**" / "*.png"), length="short")
    assert out["total"] == 4 and out["succeeded"] == 4
    assert Path(out["output"]).is_file()


async def test_a_rerun_with_the_same_output_skips_what_is_done(client: Client, workdir: Path, emulator) -> None:
    shoot(workdir / "s", 4)
    args = {"skill": "point", "images": str(workdir / "s"), "object": "red", "output": str(workdir / "p.jsonl")}
    await call(client, "batch", **args)
    emulator.emulator.clear()
    again = await call(client, "batch", **args)
    assert (again["skipped"], again["succeeded"]) == (4, 0)
    assert "already done" in again["message"]
    assert emulator.emulator.requests == []
    before = Path(args["output"]).read_bytes()
    text = await refusal(client, "batch", **{**args, "object": "blue"})
    assert text == (
        f"Error executing tool batch: refused to write {args['output']}: the file is there and is not an earlier "
        "batch output of this same job, so it was left untouched; give a new file name."
    ), "other parameters are another job: not appended to this one's file"
    assert Path(args["output"]).read_bytes() == before
    other = await call(client, "batch", **{**args, "object": "blue", "output": str(workdir / "blue.jsonl")})
    assert other["skipped"] == 0


async def test_failures_are_reported_per_image_and_grouped(client: Client, workdir: Path, tmp_path: Path) -> None:
    good = [ref for ref, _ in shoot(workdir / "g", 2)]
    broken = []
    for name in ("x.jpg", "y.jpg"):
        (workdir / name).write_bytes(b"not an image at all")
        broken.append(str(workdir / name))
    outside = save(canvas(), tmp_path / "outside.png")
    out = await call(client, "batch", skill="detect", images=good + broken + [outside], object="red")
    assert (out["succeeded"], out["failed"]) == (2, 3)
    reasons = {f["reason"]: f for f in out["failures"]}
    assert len(reasons) == 2
    assert max(f["count"] for f in out["failures"]) == 2
    assert {r["image"]: r["ok"] for r in lines(out["output"])} == {
        **{g: True for g in good},
        **{b: False for b in broken},
        outside: False,
    }


async def test_progress_is_reported_up_to_the_total(client: Client, workdir: Path) -> None:
    shoot(workdir / "pr", 3)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await client.call_tool(
        "batch", {"skill": "detect", "images": str(workdir / "pr"), "object": "red"}, progress_callback=on_progress
    )
    assert not result.is_error
    assert [p for p, _, _ in seen] == [1, 2, 3] and all(t == 3 for _, t, _ in seen)


async def test_an_output_outside_the_allowed_directories_is_refused(
    client: Client, workdir: Path, tmp_path: Path
) -> None:
    shoot(workdir / "o", 1)
    result = await client.call_tool(
        "batch",
        {"skill": "detect", "images": str(workdir / "o"), "object": "red", "output": str(tmp_path / "elsewhere.jsonl")},
    )
    assert result.is_error and "outside the allowed directories" in result.content[0].text


async def test_a_cancelled_batch_leaves_whole_lines_and_a_rerun_finishes_it(
    settings: Settings, workdir: Path, emulator
) -> None:
    shoot(workdir / "c", 12)
    emulator.emulator.config.latency = 0.1
    args = {"skill": "detect", "images": str(workdir / "c"), "object": "red", "output": str(workdir / "c.jsonl")}
    try:
        async with Client(build_server(settings)) as client:
            enough = anyio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                if progress >= 3:
                    enough.set()

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(lambda: client.call_tool("batch", args, progress_callback=on_progress))
                    await enough.wait()
                    tasks.cancel_scope.cancel()
        written = lines(args["output"])  # every line parses: none torn
        assert 3 <= len(written) < 12
        async with Client(build_server(settings)) as client:
            rest = await call(client, "batch", **args)
    finally:
        emulator.emulator.config.latency = 0.0
    assert rest["skipped"] == len(written) and rest["succeeded"] == 12 - len(written)
    assert sorted(r["image"] for r in lines(args["output"])) == sorted(str(p) for p in (workdir / "c").iterdir())


async def test_the_rate_limit_is_never_exceeded(workdir: Path, tmp_path: Path) -> None:
    shoot(workdir / "r", 12)
    limited = Emulator(EmulatorConfig(keys=frozenset({API_KEY}), rate_limit=4))
    with running_emulator(limited) as running:
        settings = Settings(
            api_key=API_KEY, endpoint=running.url, allowed_dirs=[workdir], data_dir=tmp_path / "data", rate_limit=4
        )
        async with Client(build_server(settings)) as client:
            out = await call(client, "batch", skill="detect", images=str(workdir / "r"), object="red")
    assert out["succeeded"] == 12
    statuses = [r.status for r in limited.requests]
    assert statuses.count(429) == 0, "the emulator answers 429 above 4 requests in any 1-second window"
    # Measured where the limit is counted: no 1-second window of arrivals at the server holds more than 4.
    arrivals = sorted(r.at for r in limited.requests)
    busiest = max(bisect.bisect_right(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))
    assert busiest <= 4, arrivals
    assert out["images_per_second"] <= 4.4


async def test_a_slow_api_is_kept_busy_with_rate_times_latency_requests_in_flight(
    workdir: Path, tmp_path: Path
) -> None:
    # 0.3 s a request and 100 a second allowed: about 30 must be in flight. A pool of IN_FLIGHT (8) workers,
    # each waiting for its answer before the next, could never start more than 8 within one latency.
    shoot(workdir / "s", 90)
    slow = Emulator(EmulatorConfig(keys=frozenset({API_KEY}), latency=0.3, rate_limit=100))
    with running_emulator(slow) as running:
        settings = Settings(
            api_key=API_KEY, endpoint=running.url, allowed_dirs=[workdir], data_dir=tmp_path / "data", rate_limit=100
        )
        async with Client(build_server(settings)) as client:
            out = await call(client, "batch", skill="point", images=str(workdir / "s"), object="red")

    assert out["succeeded"] == 90
    arrivals = sorted(r.at for r in slow.requests)
    within_one_latency = max(sum(1 for t in arrivals[i:] if t < start + 0.3) for i, start in enumerate(arrivals))
    assert within_one_latency > 8


@pytest.mark.real_backoff
async def test_without_a_rate_limit_configured_429s_are_ridden_out_not_surfaced(workdir: Path, tmp_path: Path) -> None:
    shoot(workdir / "q", 24)
    limited = Emulator(EmulatorConfig(keys=frozenset({API_KEY}), rate_limit=6))
    with running_emulator(limited) as running:
        settings = Settings(
            api_key=API_KEY,
            endpoint=running.url,
            allowed_dirs=[workdir],
            data_dir=tmp_path / "data",
            retry_after_cap=1,
        )
        assert settings.requests_per_second is None  # not the cloud, none set: the client does not pace
        async with Client(build_server(settings)) as client:
            out = await call(client, "batch", skill="detect", images=str(workdir / "q"), object="red")

    assert (out["succeeded"], out["failed"]) == (24, 0)
    assert [r.status for r in limited.requests].count(429) > 0  # the limit was hit, and ridden out


@pytest.mark.parametrize("skill", ["caption", "detect", "point", "segment"])
async def test_every_skill_asks_the_model_it_is_given(client: Client, workdir: Path, skill: str) -> None:
    shoot(workdir / "m", 2)
    out = await call(
        client,
        "batch",
        skill=skill,
        images=str(workdir / "m"),
        object="red",
        model="moondream3-preview/no-such-finetune@1",
        output=str(workdir / f"{skill}.jsonl"),
    )
    assert (out["succeeded"], out["failed"]) == (0, 2)
    assert "checkpoint not found" in out["failures"][0]["reason"]
