"""detect_video and redact_video through the protocol, on clips made here with PyAV: a red square moving
across white, one stored turned with display-rotation metadata, one with a sine tone."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client

from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal
from tests.support.clips import Clip, decode, is_red, moving_square, pixels_inside, rgb
from tests.support.pictures import assert_box, canvas, save
from tests.support.scripted_http import body, serving

pytestmark = pytest.mark.anyio


def lines(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def times(records: list[dict]) -> list[float]:
    return sorted(round(r["t"], 3) for r in records)


@pytest.fixture
def clip(workdir: Path) -> Clip:
    return moving_square(workdir / "square.mp4")


# ---- detect_video -------------------------------------------------------------------------------


async def test_detect_video_finds_the_square_in_each_sampled_frame_and_follows_it_as_one_track(
    client: Client, clip: Clip, workdir: Path
) -> None:
    out = await call(
        client, "detect_video", video=str(clip.path), object="red square", fps=4, output=str(workdir / "f.jsonl")
    )
    records = lines(out["output"])
    # Every quarter second, and the clip's last frame (47/24 s), so nothing after the last sample goes unseen.
    assert times(records) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 1.958]
    for record in records:
        assert record["ok"] is True and len(record["objects"]) == 1
        assert_box(record["objects"][0], clip.at(record["t"]), tolerance=0.02)
    assert out["video"] == {"width": 320, "height": 240, "fps": 24.0, "duration_s": 2.0, "audio": False}
    assert (out["frames_sampled"], out["frames_with_object"], out["failed"], out["resumed"]) == (9, 9, 0, 0)
    assert (out["first_seen_s"], out["last_seen_s"]) == (0.0, 1.958)
    assert out["count_over_time"] == [{"start_s": 0.0, "end_s": 1.958, "count": 1}]
    assert out["track_count"] == 1
    (only,) = out["tracks"]
    assert (only["id"], only["first_s"], only["last_s"], only["frames"]) == (1, 0.0, 1.958, 9)
    assert_box(dict(zip(("x_min", "y_min", "x_max", "y_max"), only["first"])), clip.squares[0])
    assert_box(dict(zip(("x_min", "y_min", "x_max", "y_max"), only["last"])), clip.squares[-1])
    assert out["sheet"] is None


@pytest.mark.parametrize("rotation", [90, 270])
async def test_detect_video_reports_boxes_as_the_viewer_sees_a_rotated_clip(
    client: Client, workdir: Path, rotation: int
) -> None:
    turned = moving_square(workdir / "turned.mp4", size=(240, 320), rotation=rotation)
    out = await call(client, "detect_video", video=str(turned.path), object="red", fps=2)
    assert (out["video"]["width"], out["video"]["height"]) == (240, 320)
    records = lines(out["output"])
    assert len(records) == 5
    for record in records:
        assert_box(record["objects"][0], turned.at(record["t"]), tolerance=0.02)
    assert out["track_count"] == 1


async def test_detect_video_points_at_the_square(client: Client, clip: Clip) -> None:
    out = await call(client, "detect_video", video=str(clip.path), object="red", skill="point", fps=2)
    for record in lines(out["output"]):
        ((x, y),) = [(p["x"], p["y"]) for p in record["points"]]
        x0, y0, x1, y1 = clip.at(record["t"])
        assert abs(x - (x0 + x1) / 2) < 0.02 and abs(y - (y0 + y1) / 2) < 0.02
    assert out["track_count"] == 1 and out["tracks"][0]["frames"] == 5


async def test_sampling_every_n_frames_within_a_range(client: Client, clip: Clip) -> None:
    out = await call(client, "detect_video", video=str(clip.path), object="red", every_n_frames=12, start=0.5, end=1.5)
    assert times(lines(out["output"])) == [0.5, 1.0, 1.5]
    assert (out["first_seen_s"], out["last_seen_s"]) == (0.5, 1.5)


async def test_max_frames_spreads_the_samples_over_the_whole_clip(client: Client, clip: Clip) -> None:
    out = await call(client, "detect_video", video=str(clip.path), object="red", fps=24, max_frames=5)
    assert times(lines(out["output"])) == [0.0, 0.5, 1.0, 1.5, 1.958]


async def test_a_frame_without_the_object_counts_as_zero(client: Client, clip: Clip) -> None:
    out = await call(client, "detect_video", video=str(clip.path), object="blue", fps=1)
    assert (out["frames_sampled"], out["frames_with_object"], out["track_count"]) == (3, 0, 0)
    assert out["first_seen_s"] is None and out["tracks"] == []
    assert out["count_over_time"] == [{"start_s": 0.0, "end_s": 1.958, "count": 0}]


async def test_a_rerun_with_the_same_output_resumes_without_asking_again(
    client: Client, clip: Clip, workdir: Path, emulator
) -> None:
    args = {"video": str(clip.path), "object": "red", "fps": 2, "output": str(workdir / "r.jsonl")}
    first = await call(client, "detect_video", **args)
    emulator.emulator.clear()
    again = await call(client, "detect_video", **args)
    assert emulator.emulator.requests == []
    assert (again["resumed"], again["frames_sampled"], again["tracks"]) == (5, 5, first["tracks"])
    assert len(lines(args["output"])) == 5
    before = Path(args["output"]).read_bytes()
    text = await refusal(client, "detect_video", **{**args, "fps": 4})
    assert text.endswith(not_ours(args["output"])), "other sampling is another job: not appended to this one's file"
    assert Path(args["output"]).read_bytes() == before
    other = await call(client, "detect_video", **{**args, "fps": 4, "output": str(workdir / "r4.jsonl")})
    assert other["resumed"] == 0


def not_ours(path: object) -> str:
    return (
        f"refused to write {path}: the file is there and is not an earlier detect_video output of this same job, so "
        "it was left untouched; give a new file name."
    )


@pytest.mark.parametrize("content", ["video", "notes", "photo", "other-job"])
async def test_an_output_that_is_not_this_jobs_results_file_is_left_untouched(
    client: Client, clip: Clip, workdir: Path, emulator, content: str
) -> None:
    target = {"video": clip.path, "notes": workdir / "notes.txt", "photo": workdir / "photo.png"}.get(
        content, workdir / "batch.jsonl"
    )
    if content == "notes":
        target.write_text("shopping: milk")  # no newline at the end: a torn line, were it a log
    elif content == "photo":
        save(canvas(), target)
    elif content == "other-job":
        await call(client, "batch", skill="caption", images=[save(canvas(), workdir / "a.png")], output=str(target))
    before = target.read_bytes()
    emulator.emulator.clear()
    text = await refusal(client, "detect_video", video=str(clip.path), object="red", output=str(target))
    assert text.endswith(not_ours(target))
    assert target.read_bytes() == before
    assert emulator.emulator.requests == []


async def test_an_output_made_for_a_video_that_cannot_be_read_is_removed(client: Client, workdir: Path) -> None:
    fake = workdir / "fake.mp4"
    fake.write_bytes(bytes(range(256)) * 64)
    text = await refusal(client, "detect_video", video=str(fake), object="red", output=str(workdir / "new.jsonl"))
    assert "not a video that can be read" in text
    assert sorted(p.name for p in workdir.iterdir()) == ["fake.mp4"]


async def test_progress_is_reported_for_every_sampled_frame(client: Client, clip: Clip) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    result = await client.call_tool(
        "detect_video", {"video": str(clip.path), "object": "red", "fps": 2}, progress_callback=on_progress
    )
    assert not result.is_error
    assert [p for p, _ in seen] == [1, 2, 3, 4, 5]
    assert all(t == 5 for _, t in seen)


async def test_annotate_returns_a_contact_sheet_that_is_also_saved(client: Client, clip: Clip) -> None:
    result = await client.call_tool(
        "detect_video", {"video": str(clip.path), "object": "red", "fps": 2, "annotate": True}
    )
    assert not result.is_error
    picture = result.content[1]
    assert picture.mime_type == "image/jpeg"
    jpeg = base64.b64decode(picture.data)
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) <= 1_000_000
    assert Path(result.structured_content["sheet"]).read_bytes() == jpeg


async def test_a_video_url_is_downloaded_through_the_url_guard(settings: Settings, clip: Clip) -> None:
    loopback = settings.model_copy(update={"allow_private_urls": True})
    async with serving() as server, Client(build_server(loopback)) as client:
        server.routes["/clip.mp4"] = body(clip.path.read_bytes(), "video/mp4")
        out = await call(client, "detect_video", video=f"{server.url}/clip.mp4", object="red", fps=2)
    assert out["frames_with_object"] == 5
    downloads = loopback.data_dir / "video" / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == [], "the download is removed afterwards"


async def test_a_video_url_to_loopback_is_refused_by_default(client: Client, clip: Clip, emulator) -> None:
    async with serving() as server:
        server.routes["/clip.mp4"] = body(clip.path.read_bytes(), "video/mp4")
        text = await refusal(client, "detect_video", video=f"{server.url}/clip.mp4", object="red")
        assert server.requests == []
    assert "refused to fetch" in text and "non-public address" in text
    assert emulator.emulator.requests == []


async def test_a_file_that_is_not_a_video_is_refused_clearly(client: Client, workdir: Path) -> None:
    fake = workdir / "fake.mp4"
    fake.write_bytes(bytes(range(256)) * 64)
    text = await refusal(client, "detect_video", video=str(fake), object="red")
    assert text.endswith(f"{fake} is not a video that can be read (FFmpeg could not open it).")


async def test_fps_and_every_n_frames_together_are_refused(client: Client, clip: Clip) -> None:
    text = await refusal(client, "detect_video", video=str(clip.path), object="red", fps=2, every_n_frames=3)
    assert text.endswith("give fps or every_n_frames, not both")


async def test_a_start_past_the_end_is_refused(client: Client, clip: Clip) -> None:
    text = await refusal(client, "detect_video", video=str(clip.path), object="red", start=30)
    assert text.endswith(f"{clip.path} has no video frames after 30 s.")


async def test_without_pyav_the_video_tools_name_the_extra_to_install(
    client: Client, clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets when PyAV is not installed
    text = await refusal(client, "detect_video", video=str(clip.path), object="red")
    assert text.endswith(
        "the video tools need PyAV, which is not installed; install the video extra: pip install -e '.[video]' "
        "in the server's clone (or pip install av)."
    )
    text = await refusal(
        client, "redact_video", video=str(clip.path), objects=["red"], output=str(clip.path.with_name("o.mp4"))
    )
    assert "video extra" in text


# ---- redact_video -------------------------------------------------------------------------------


def assert_same_timing(source: Path, output: Path) -> None:
    before, after = decode(source), decode(output)
    assert len(after.frames) == len(before.frames)
    assert after.fps == before.fps
    # Matroska keeps milliseconds.
    assert after.times == pytest.approx(before.times, abs=0.0005)
    assert after.duration == pytest.approx(before.duration, abs=1 / before.fps)
    assert [f.size for f in after.frames] == [f.size for f in before.frames]


def far_from(
    rect: tuple[float, float, float, float], size: tuple[int, int], margin: int = 30
) -> tuple[int, int, int, int]:
    w, h = size
    return (
        round(rect[0] * w) - margin,
        round(rect[1] * h) - margin,
        round(rect[2] * w) + margin,
        round(rect[3] * h) + margin,
    )


def assert_unchanged_outside(before, after, rect, margin: int = 30) -> None:
    """Pixels more than `margin` from the square are as they were, within the codec's tolerance."""
    x0, y0, x1, y1 = far_from(rect, before.size, margin)
    a, b = before.load(), after.load()
    w, h = before.size
    worst = 0
    for y in range(0, h, 2):
        for x in range(0, w, 2):
            if x0 <= x < x1 and y0 <= y < y1:
                continue
            worst = max(worst, *(abs(p - q) for p, q in zip(a[x, y], b[x, y])))
    assert worst <= 16, f"a pixel away from the square changed by {worst}"


async def test_redact_video_boxes_out_the_square_in_every_frame_and_leaves_the_rest(
    client: Client, clip: Clip, workdir: Path
) -> None:
    output = workdir / "hidden.mp4"
    result = await client.call_tool(
        "redact_video", {"video": str(clip.path), "objects": ["red square"], "style": "box", "output": str(output)}
    )
    assert not result.is_error, result.content[0].text
    out = result.structured_content
    assert out["output"] == str(output)
    # 2 samples a second by default, and the last frame: the other 43 frames are covered by the track.
    assert (out["frames_written"], out["frames_sampled"], out["frames_redacted"]) == (48, 5, 48)
    assert out["objects"] == [{"object": "red square", "frames_with_object": 5, "tracks": 1}]
    assert_same_timing(clip.path, output)
    source, hidden = decode(clip.path), decode(output)
    for i, (before, after) in enumerate(zip(source.frames, hidden.frames)):
        square = clip.squares[i]
        assert sum(map(is_red, pixels_inside(before, square))) > 1000
        assert not any(map(is_red, pixels_inside(after, square, inset=0))), f"frame {i} shows the square"
        assert_unchanged_outside(before, after, square)
    picture = base64.b64decode(result.content[1].data)
    assert picture[:2] == b"\xff\xd8" and len(picture) <= 1_000_000
    assert Path(out["sheet"]).read_bytes() == picture


async def test_redact_video_keeps_the_audio(client: Client, workdir: Path) -> None:
    loud = moving_square(workdir / "loud.mp4", audio=True)
    output = workdir / "quiet-square.mov"
    await call(client, "redact_video", video=str(loud.path), objects=["red"], style="box", output=str(output))
    source, hidden = decode(loud.path), decode(output)
    assert source.audio_samples and hidden.audio_samples == source.audio_samples
    assert_same_timing(loud.path, output)


@pytest.mark.parametrize("rotation", [90, 270])
async def test_redact_video_hides_the_square_as_the_viewer_sees_a_rotated_clip(
    client: Client, workdir: Path, rotation: int
) -> None:
    turned = moving_square(workdir / "turned.mp4", size=(240, 320), rotation=rotation)
    output = workdir / "turned-hidden.mkv"
    await call(client, "redact_video", video=str(turned.path), objects=["red"], style="box", output=str(output))
    assert_same_timing(turned.path, output)
    source, hidden = decode(turned.path), decode(output)
    for i, (before, after) in enumerate(zip(source.frames, hidden.frames)):
        assert not any(map(is_red, pixels_inside(after, turned.squares[i], inset=0))), f"frame {i} shows the square"
        assert_unchanged_outside(before, after, turned.squares[i])


@pytest.mark.parametrize("style", ["blur", "pixelate"])
async def test_blur_and_pixelate_change_the_square_in_every_frame_and_nothing_far_from_it(
    client: Client, clip: Clip, workdir: Path, style: str
) -> None:
    output = workdir / f"{style}.mp4"
    await call(client, "redact_video", video=str(clip.path), objects=["red"], style=style, output=str(output))
    source, hidden = decode(clip.path), decode(output)
    for i, (before, after) in enumerate(zip(source.frames, hidden.frames)):
        x0, y0, x1, y1 = far_from(clip.squares[i], before.size, margin=8)
        region = (max(0, x0), max(0, y0), x1, y1)
        original, redacted = rgb(before.crop(region)), rgb(after.crop(region))
        changed = sum(1 for p, q in zip(original, redacted) if max(abs(a - b) for a, b in zip(p, q)) > 40)
        assert changed > 0.15 * len(original), f"frame {i}: only {changed} pixels changed"
        assert_unchanged_outside(before, after, clip.squares[i])


async def test_a_sample_that_could_not_be_checked_writes_nothing(
    client: Client, clip: Clip, workdir: Path, emulator
) -> None:
    emulator.emulator.inject(400, times=1, path="/detect")
    output = workdir / "never.mp4"
    text = await refusal(client, "redact_video", video=str(clip.path), objects=["red"], output=str(output))
    assert "nothing was written" in text
    assert sorted(p.name for p in workdir.iterdir()) == ["square.mp4"]


async def test_a_cancelled_redaction_leaves_no_file_behind(settings: Settings, workdir: Path) -> None:
    long = moving_square(workdir / "long.mp4", frames=240)
    output = workdir / "cut.mp4"
    async with Client(build_server(settings)) as client:
        writing = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if message == "writing":
                writing.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                arguments = {"video": str(long.path), "objects": ["red"], "output": str(output)}
                tasks.start_soon(lambda: client.call_tool("redact_video", arguments, progress_callback=on_progress))
                await writing.wait()
                tasks.cancel_scope.cancel()
    assert sorted(p.name for p in workdir.iterdir()) == ["long.mp4"]


async def test_redact_video_never_writes_over_an_existing_file(client: Client, clip: Clip, workdir: Path) -> None:
    existing = workdir / "keep.mp4"
    existing.write_bytes(b"precious")
    text = await refusal(client, "redact_video", video=str(clip.path), objects=["red"], output=str(existing))
    assert text.endswith(f"{existing} already exists; choose a new output file.")
    assert existing.read_bytes() == b"precious"
    text = await refusal(client, "redact_video", video=str(clip.path), objects=["red"], output=str(clip.path))
    assert "already exists" in text


async def test_redact_video_refuses_an_output_it_cannot_write(
    client: Client, clip: Clip, workdir: Path, tmp_path: Path
) -> None:
    text = await refusal(client, "redact_video", video=str(clip.path), objects=["red"], output=str(tmp_path / "o.mp4"))
    assert "outside the allowed directories" in text
    text = await refusal(client, "redact_video", video=str(clip.path), objects=["red"], output=str(workdir / "o.avi"))
    assert text.endswith("cannot write a .avi video; name the output .mp4, .mov or .mkv.")


async def test_redact_video_output_through_a_symlink_leading_outside_is_refused(
    client: Client, clip: Clip, workdir: Path, tmp_path: Path, emulator
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workdir / "out.mp4").symlink_to(outside / "planted.mp4")  # dangling: a write would create it out there
    text = await refusal(client, "redact_video", video=str(clip.path), objects=["red"], output=str(workdir / "out.mp4"))
    assert "outside the allowed directories" in text
    assert list(outside.iterdir()) == []
    assert emulator.emulator.requests == []


async def test_a_video_swapped_on_disk_mid_run_is_still_read_from_the_file_first_opened(
    client: Client, clip: Clip, workdir: Path, emulator
) -> None:
    output = workdir / "hidden.mp4"
    emulator.emulator.config.latency = 0.5  # every answer held back: the swap lands before the video is rewritten
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                outcome: list = []

                async def run() -> None:
                    arguments = {"video": str(clip.path), "objects": ["red"], "style": "box", "output": str(output)}
                    outcome.append(await client.call_tool("redact_video", arguments))

                tasks.start_soon(run)
                # No event crosses from the emulator's thread: poll, bounded by fail_after.
                while not emulator.emulator.requests:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                clip.path.rename(workdir / "moved.mp4")
                clip.path.write_bytes(b"not the video that was asked for")
    finally:
        emulator.emulator.config.latency = 0.0
    [result] = outcome
    assert not result.is_error, result.content[0].text
    assert result.structured_content["frames_written"] == 48
    assert_same_timing(workdir / "moved.mp4", output)


# ---- what a video may not reach -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "listing"),
    [
        ("list.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n"),
        ("list.ffconcat", "ffconcat version 1.0\nfile '{secret}'\n"),
    ],
)
@pytest.mark.parametrize("where", ["file", "url"])
async def test_a_playlist_naming_another_video_is_refused_without_opening_it(
    client: Client, workdir: Path, tmp_path: Path, emulator, name: str, listing: str, where: str
) -> None:
    # FFmpeg's playlist demuxers open what a playlist names: a file past the guard, or a URL past the URL guard.
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = moving_square(outside / "secret.mp4")
    async with serving() as server:
        server.routes["/secret.mp4"] = body(secret.path.read_bytes(), "video/mp4")
        fifo = outside / "witness.mp4"  # opening a FIFO for reading would block until a writer came: it must not
        os.mkfifo(fifo)
        named = {"file": str(fifo), "url": f"{server.url}/secret.mp4"}[where]
        playlist = workdir / name
        playlist.write_text(listing.format(secret=named))
        text = await refusal(client, "detect_video", video=str(playlist), object="red")
        assert server.requests == []
    assert (
        text.endswith(f"{playlist} is not a video that can be read (FFmpeg could not open it).")
        or "not a single video file" in text
    )
    assert emulator.emulator.requests == []


async def test_a_symlink_to_a_video_outside_the_allowed_directories_is_refused(
    client: Client, workdir: Path, tmp_path: Path, emulator
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = moving_square(outside / "secret.mp4")
    link = workdir / "innocent.mp4"
    link.symlink_to(secret.path)
    text = await refusal(client, "detect_video", video=str(link), object="red")
    assert "outside the allowed directories" in text
    assert emulator.emulator.requests == []
