"""redact_video: objects found in sampled frames, followed by their tracks through every frame between
(interpolated, padded, carried a sample's length past each end), and hidden in a new video of the same
frames, timing, size and audio. Knows nothing of MCP."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread
from PIL import Image
from pydantic import BaseModel, Field

from ..client import MoondreamClient
from ..failures import EXPECTED, Explain, FailureGroups
from ..files import FileGuard, OutputFile
from ..outputs import save_own
from .detection import STILL_PIXELS, Progress, VideoFacts, facts, key_frames, look, shapes_of
from .errors import VideoError, require_av
from .sampling import Sampling
from .sheets import Tile, sheet
from .source import Source
from .tracking import Shape, Timeline, Track, track

if TYPE_CHECKING:
    from av.video.frame import VideoFrame

    from .reading import Frame
    from .redaction import Style
    from .scanning import Scan

SHEET_PAIRS = 4
_PROGRESS_EVERY = 0.25  # seconds between progress reports while writing


class ObjectFound(BaseModel):
    object: str
    frames_with_object: int = Field(description="Sampled frames it was found in.")
    tracks: int


class VideoRedaction(BaseModel):
    output: str = Field(description="The new video.")
    video: VideoFacts
    frames_written: int
    frames_sampled: int
    frames_redacted: int = Field(description="Frames with at least one region hidden.")
    objects: list[ObjectFound]
    sheet: str = Field(description="Contact sheet of frames before and after (JPEG).")
    message: str


@dataclass
class Redacted:
    summary: VideoRedaction
    sheet: bytes


async def redact_video(
    source: Source,
    *,
    client: MoondreamClient,
    objects: list[str],
    style: Style,
    sampling: Sampling,
    target: OutputFile,
    fmt: str,
    files: FileGuard,
    max_pixels: int,
    explain: Explain,
    progress: Progress | None = None,
) -> Redacted:
    """Write `target`, a file this call created, from `source` as `fmt` with every object hidden; the contact
    sheet goes to the data directory. On failure the caller discards `target`."""
    require_av()
    from .scanning import Sample, scan

    found: dict[str, dict[int, tuple[float, list[Shape]]]] = {o: {} for o in objects}
    failures = FailureGroups()
    planned: Scan | None = None
    answered = 0

    async def started(outcome: Scan) -> None:
        nonlocal planned
        planned = outcome

    async def work(sample: Sample) -> None:
        nonlocal answered
        for name in objects:
            try:
                record = await look(client, "detect", sample.image.data_url, name, None)
            except EXPECTED as exc:
                failures.add(explain(exc), f"{sample.t:.3f}s")
                continue
            found[name][sample.pts] = (sample.t, shapes_of(record))
        answered += 1
        if progress is not None and planned is not None:
            await progress(answered, planned.planned + _frames_estimate(planned), f"looked at {sample.t:.2f} s")

    outcome = await scan(source, sampling, work, max_pixels=max_pixels, started=started)
    if len(failures):
        reason, count, _ = failures.grouped()[0]
        raise VideoError(
            f"{len(failures)} detection requests failed ({count}: {reason}); nothing was written, to leave no "
            "frame unchecked. Try again."
        )
    if outcome.truncated:
        raise VideoError(
            f"the video's length is unknown and sampling stopped at max_frames ({sampling.max_frames}) at "
            f"{outcome.last_t:.2f} s; nothing was written. Raise max_frames or set start and end."
        )

    times = sorted({t for per in found.values() for t, _ in per.values()})
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # A track is carried this far past its first and last samples: up to the samples where it was not seen.
    reach = max(gaps) if gaps else math.inf
    tracks: dict[str, list[Track]] = {name: track(sorted(per.values())) for name, per in found.items()}
    timeline = Timeline([tr for per in tracks.values() for tr in per], reach)
    everything: dict[int, tuple[float, list[Shape]]] = {}
    for per in found.values():
        for pts, (t, shapes) in per.items():
            everything.setdefault(pts, (t, []))[1].extend(shapes)
    keys = set(key_frames(everything, SHEET_PAIRS))

    info = outcome.info
    low = sampling.start
    high = sampling.end if sampling.end is not None else math.inf
    half = 0.5 / info.fps if info.fps else 0.0
    before: dict[int, tuple[float, Image.Image, list[Shape]]] = {}
    after: dict[int, Image.Image] = {}
    redacted = 0
    total = outcome.planned + _frames_estimate(outcome)
    last_report = 0.0

    def edit(frame: Frame) -> VideoFrame:
        from .reading import picture
        from .redaction import redact

        nonlocal redacted
        shapes = timeline.at(frame.t) if low - half <= frame.t <= high + half else []
        if frame.pts in keys:
            before[frame.pts] = (frame.t, picture(frame.frame, info.rotation, STILL_PIXELS), shapes)
        if not shapes:
            return frame.frame
        redacted += 1
        edited = redact(frame.frame, shapes, info.rotation, style)
        if frame.pts in keys:
            after[frame.pts] = picture(edited, info.rotation, STILL_PIXELS)
        return edited

    def written(count: int) -> None:
        nonlocal last_report
        now = time.monotonic()
        if progress is not None and now - last_report >= _PROGRESS_EVERY:
            last_report = now
            anyio.from_thread.run(progress, outcome.sampled + count, max(total, outcome.sampled + count), "writing")

    from .writing import rewrite

    result = await anyio.to_thread.run_sync(
        partial(rewrite, source, target, fmt, edit, checkpoint=anyio.from_thread.check_cancelled, on_frame=written)
    )

    tiles: list[Tile] = []
    for pts in sorted(before, key=lambda p: before[p][0]):
        t, picture_before, shapes = before[pts]
        tiles.append(Tile(picture_before, f"before, {t:.2f} s", shapes))
        tiles.append(Tile(after.get(pts, picture_before), f"after, {t:.2f} s"))
    jpeg = await anyio.to_thread.run_sync(partial(sheet, tiles, columns=4 if len(tiles) > 2 else 2))
    sheet_name = f"{target.path.stem}-{uuid.uuid4().hex[:8]}.jpg"
    sheet_path = (await anyio.to_thread.run_sync(save_own, files, "video/sheets", sheet_name, jpeg)).path

    summary = VideoRedaction(
        output=str(target.path),
        video=facts(info),
        frames_written=result.frames,
        frames_sampled=outcome.sampled,
        frames_redacted=redacted,
        objects=[
            ObjectFound(
                object=name,
                frames_with_object=sum(1 for _, shapes in found[name].values() if shapes),
                tracks=len(tracks[name]),
            )
            for name in objects
        ],
        sheet=str(sheet_path),
        message=(
            f"{result.frames} frames written, {redacted} with regions hidden ({style}), from {outcome.sampled} "
            f"sampled frames; audio {'kept' if result.audio else 'absent in the source'}."
        ),
    )
    return Redacted(summary, jpeg)


def _frames_estimate(outcome: Scan) -> int:
    info = outcome.info
    if info.frames:
        return int(info.frames)
    return round(info.duration * info.fps) if info.duration and info.fps else 0
