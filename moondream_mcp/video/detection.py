"""detect_video: an object found (boxes) or pointed at in sampled frames of a video, each frame's answer
appended to a JSONL file as it comes (a rerun with the same file resumes), summarized over time and joined
into tracks. Knows nothing of MCP."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import anyio
import anyio.to_thread
from pydantic import BaseModel, Field

from ..client import MoondreamClient
from ..failures import EXPECTED, Explain, FailureGroups
from ..files import FileGuard, OutputFile
from ..jsonl import LineWriter, job_id
from .errors import require_av
from .sampling import Sampling, VideoInfo
from .sheets import Tile, sheet
from .source import Source
from .tracking import Shape, Track, track

Skill = Literal["detect", "point"]
Progress = Callable[[float, float | None, str | None], Coroutine[Any, Any, None]]

MAX_SPANS = 32
MAX_TRACKS = 20
SHEET_FRAMES = 12
STILL_PIXELS = 640 * 360  # a contact sheet's frames need no more


class VideoFacts(BaseModel):
    width: int = Field(description="As displayed (rotation applied).")
    height: int
    fps: float
    duration_s: float | None
    audio: bool


class CountSpan(BaseModel):
    start_s: float
    end_s: float
    count: int = Field(description="Most found in one sampled frame of the span.")


class TrackSummary(BaseModel):
    id: int
    first_s: float
    last_s: float
    frames: int = Field(description="Sampled frames it was found in.")
    first: list[float] = Field(description="Where first seen: [x_min, y_min, x_max, y_max] or [x, y].")
    last: list[float] = Field(description="Where last seen.")


class VideoDetection(BaseModel):
    video: VideoFacts
    frames_sampled: int
    frames_with_object: int
    failed: int = Field(description="Sampled frames whose request failed (a rerun retries them).")
    resumed: int = Field(description="Frames already in the output from an earlier run, not asked again.")
    first_seen_s: float | None
    last_seen_s: float | None
    count_over_time: list[CountSpan] = Field(description=f"Runs of samples (at most {MAX_SPANS}).")
    tracks: list[TrackSummary] = Field(description=f"The {MAX_TRACKS} longest tracks, by id.")
    track_count: int
    output: str = Field(description="JSONL: one line per sampled frame, {t, pts, ok, objects | points | error}.")
    sheet: str | None = Field(description="Contact sheet of key frames (JPEG), when annotate is set.")
    message: str


def shapes_of(record: dict[str, Any]) -> list[Shape]:
    if "objects" in record:
        return [(b["x_min"], b["y_min"], b["x_max"], b["y_max"]) for b in record["objects"]]
    return [(p["x"], p["y"], p["x"], p["y"]) for p in record.get("points", [])]


def _readable(record: dict[str, Any]) -> bool:
    try:
        return all(isinstance(v, (int, float)) for shape in shapes_of(record) for v in shape)
    except (KeyError, TypeError, AttributeError):
        return False


class FrameLog:
    """One line per sampled frame, appended to a JSONL file that is this job's own (jsonl.LineWriter)."""

    def __init__(self, lines: LineWriter) -> None:
        self.lines = lines

    def done(self) -> dict[int, dict[str, Any]]:
        """This job's frames answered in earlier runs, by pts."""
        found: dict[int, dict[str, Any]] = {}
        for record in self.lines.records():
            if (
                record.get("job") == self.lines.job
                and record.get("ok") is True
                and isinstance(record.get("pts"), int)
                and isinstance(record.get("t"), (int, float))
                and _readable(record)
            ):
                found[record["pts"]] = record
        return found

    def append(self, record: dict[str, Any]) -> None:
        self.lines.write(record)

    def close(self, *, failed: bool = False) -> None:
        """Let the file go; after a failure, one this call created and left empty goes too."""
        output = self.lines.output
        if failed and output.created and output.fd >= 0 and os.fstat(output.fd).st_size == 0:
            self.lines.abandon()
        else:
            self.lines.close()


def video_job(source: Source, **parameters: Any) -> str:
    return job_id(tool="detect_video", video=source.identity, **parameters)


async def look(client: MoondreamClient, skill: Skill, data_url: str, object: str, model: str | None) -> dict[str, Any]:
    """One frame's answer as a JSONL field: {"objects": [...]} or {"points": [...]}."""
    if skill == "detect":
        found = await client.skills.detect(data_url, object, model=model)
        return {"objects": [b.model_dump() for b in found.objects]}
    pointed = await client.skills.point(data_url, object, model=model)
    return {"points": [p.model_dump() for p in pointed.points]}


def facts(info: VideoInfo) -> VideoFacts:
    duration = round(info.duration, 3) if info.duration is not None else None
    return VideoFacts(
        width=info.width, height=info.height, fps=round(info.fps, 3), duration_s=duration, audio=info.audio
    )


def count_spans(samples: list[tuple[float, int]]) -> list[CountSpan]:
    """Runs of equal counts; past MAX_SPANS runs, equal slices of the samples with their highest count."""
    if not samples:
        return []
    groups: list[list[tuple[float, int]]] = []
    for sample in samples:
        if groups and groups[-1][-1][1] == sample[1]:
            groups[-1].append(sample)
        else:
            groups.append([sample])
    if len(groups) > MAX_SPANS:
        size = -(-len(samples) // MAX_SPANS)
        groups = [samples[i : i + size] for i in range(0, len(samples), size)]
    spans = [CountSpan(start_s=round(g[0][0], 3), end_s=round(g[-1][0], 3), count=max(c for _, c in g)) for g in groups]
    merged: list[CountSpan] = []
    for span in spans:
        if merged and merged[-1].count == span.count:
            merged[-1].end_s = span.end_s
        else:
            merged.append(span)
    return merged


def summarize_tracks(tracks: list[Track]) -> list[TrackSummary]:
    def where(shape: Shape) -> list[float]:
        x0, y0, x1, y1 = (round(v, 4) for v in shape)
        return [x0, y0] if (x0, y0) == (x1, y1) else [x0, y0, x1, y1]

    longest = sorted(tracks, key=lambda tr: (-len(tr.times), tr.id))[:MAX_TRACKS]
    return [
        TrackSummary(
            id=tr.id,
            first_s=round(tr.times[0], 3),
            last_s=round(tr.times[-1], 3),
            frames=len(tr.times),
            first=where(tr.shapes[0]),
            last=where(tr.shapes[-1]),
        )
        for tr in sorted(longest, key=lambda tr: tr.id)
    ]


def key_frames(results: dict[int, tuple[float, list[Shape]]], count: int) -> list[int]:
    """Up to `count` sampled frames spread over time, those with something found first."""
    ordered = sorted(results, key=lambda pts: results[pts][0])
    found = [pts for pts in ordered if results[pts][1]]
    pool = found if found else ordered
    if len(pool) <= count:
        return pool
    step = (len(pool) - 1) / (count - 1) if count > 1 else 0
    return sorted({pool[round(i * step)] for i in range(count)}, key=lambda pts: results[pts][0])


@dataclass
class Detected:
    summary: VideoDetection
    results: dict[int, tuple[float, list[Shape]]]  # pts -> (seconds, shapes)
    job: str


async def detect_video(
    source: Source,
    *,
    client: MoondreamClient,
    skill: Skill,
    object: str,
    sampling: Sampling,
    model: str | None,
    output: OutputFile | None,
    files: FileGuard,
    max_pixels: int,
    explain: Explain,
    progress: Progress | None = None,
) -> Detected:
    """Detect or point at `object` in the sampled frames, appending one line per frame to `output` (default:
    a file of the server's own named after the job), once it is claimed as this job's (jsonl.LineWriter)."""
    require_av()
    from .scanning import Sample, Scan, scan

    job = video_job(source, skill=skill, object=object, model=model, sampling=sampling.as_dict())

    def claim() -> LineWriter:
        opened = output if output is not None else files.open_own("video", f"{skill}-{job}.jsonl")
        return LineWriter.claim(opened, job, "resume", tool="detect_video")

    lines = await anyio.to_thread.run_sync(claim)
    path = lines.output.path
    log = FrameLog(lines)
    try:
        done = await anyio.to_thread.run_sync(log.done)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(partial(log.close, failed=True))
        raise
    results: dict[int, tuple[float, list[Shape]]] = {pts: (r["t"], shapes_of(r)) for pts, r in done.items()}
    failures = FailureGroups()
    answered = 0
    planned: Scan | None = None

    async def started(outcome: Scan) -> None:
        nonlocal planned
        planned = outcome

    async def work(sample: Sample) -> None:
        nonlocal answered
        record: dict[str, Any] = {"t": round(sample.t, 6), "pts": sample.pts}
        try:
            record |= {"ok": True, **await look(client, skill, sample.image.data_url, object, model)}
        except EXPECTED as exc:
            message = explain(exc)
            failures.add(message, f"{sample.t:.3f}s")
            record |= {"ok": False, "error": message}
        with anyio.CancelScope(shield=True):  # an answer in hand is written whole
            await anyio.to_thread.run_sync(log.append, record)
        if record["ok"]:
            results[sample.pts] = (sample.t, shapes_of(record))
        answered += 1
        if progress is not None and planned is not None:
            total = max(planned.planned, planned.sampled)
            await progress(answered + len(done), total, f"frame at {sample.t:.2f} s: {len(shapes_of(record))} found")

    try:
        outcome = await scan(source, sampling, work, max_pixels=max_pixels, skip=done, started=started)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(partial(log.close, failed=True))
        raise
    await anyio.to_thread.run_sync(log.close)

    ordered = sorted(results.values())
    seen = [t for t, shapes in ordered if shapes]
    tracks = track(ordered)
    parts = [f"{outcome.sampled} frames sampled, the object in {len(seen)}"]
    resumed = len(done)
    if resumed:
        parts.append(f"{resumed} already done in {path}")
    if len(failures):
        parts.append(f"{len(failures)} failed ({failures.grouped()[0][0]}); rerun with the same output to retry them")
    if outcome.truncated:
        parts.append(f"stopped at max_frames at {outcome.last_t:.2f} s; raise max_frames or set start/end")
    summary = VideoDetection(
        video=facts(outcome.info),
        frames_sampled=outcome.sampled,
        frames_with_object=len(seen),
        failed=len(failures),
        resumed=resumed,
        first_seen_s=round(seen[0], 3) if seen else None,
        last_seen_s=round(seen[-1], 3) if seen else None,
        count_over_time=count_spans([(t, len(shapes)) for t, shapes in ordered]),
        tracks=summarize_tracks(tracks),
        track_count=len(tracks),
        output=str(path),
        sheet=None,
        message="; ".join(parts) + ".",
    )
    return Detected(summary, results, job)


async def draw_sheet(source: Source, detected: Detected) -> bytes:
    """Key frames with what was found drawn on them, as one JPEG."""
    from .scanning import stills

    keys = key_frames(detected.results, SHEET_FRAMES)
    pictures = await stills(source, [(pts, detected.results[pts][0]) for pts in keys], max_pixels=STILL_PIXELS)
    tiles = [
        Tile(pictures[pts], f"{detected.results[pts][0]:.2f} s", detected.results[pts][1])
        for pts in keys
        if pts in pictures
    ]
    columns = 4 if len(tiles) > 6 else min(3, max(1, len(tiles)))
    return await anyio.to_thread.run_sync(partial(sheet, tiles, columns=columns))
