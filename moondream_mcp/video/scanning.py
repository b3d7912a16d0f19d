"""Sampled frames of a video, decoded one at a time and handed to `concurrency` workers as JPEGs ready to
send: the pipeline that keeps the API busy up to the shared rate limit while a single frame is decoded at a
time. Knows nothing of the API or of MCP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Iterator
from dataclasses import dataclass
from functools import partial

import anyio
import anyio.from_thread
import anyio.to_thread
from PIL import Image

from ..config import IN_FLIGHT
from ..images import PreparedImage
from ..images.encode import from_pixels
from .reading import Frame, Reader, picture
from .sampling import Sampler, Sampling, VideoInfo
from .source import Source


@dataclass(frozen=True)
class Sample:
    pts: int
    t: float  # seconds from the start of the video
    image: PreparedImage  # the frame as displayed, within the pixel budget


@dataclass
class Scan:
    info: VideoInfo
    planned: int  # samples expected, for progress
    sampled: int = 0  # samples taken, those skipped as already done included
    truncated: bool = False  # stopped at max_frames before the range's end (its length was unknown)
    last_t: float = 0.0  # the last sampled time


async def open_reader(source: Source, sampling: Sampling) -> Reader:
    return await anyio.to_thread.run_sync(
        partial(Reader, source, start=sampling.start, end=sampling.end, checkpoint=anyio.from_thread.check_cancelled)
    )


async def scan(
    source: Source,
    sampling: Sampling,
    work: Callable[[Sample], Awaitable[None]],
    *,
    max_pixels: int,
    skip: Container[int] = (),
    concurrency: int = IN_FLIGHT,
    started: Callable[[Scan], Awaitable[None]] | None = None,
) -> Scan:
    """Run `work` on every sampled frame whose pts is not in `skip`, `concurrency` at a time, in about time
    order. Memory: a frame per worker, whatever the video's length."""
    reader = await open_reader(source, sampling)
    try:
        sampler = Sampler(sampling, reader.info)
        outcome = Scan(info=reader.info, planned=sampler.planned)
        if started is not None:
            await started(outcome)
        frames: Iterator[Frame] = sampler.sampled(reader.frames())

        def take() -> tuple[Frame, Image.Image] | None:
            for frame in frames:
                outcome.sampled += 1
                outcome.last_t = frame.t
                if frame.pts not in skip:
                    return frame, picture(frame.frame, reader.info.rotation, max_pixels)
            outcome.truncated = sampler.truncated
            return None

        turn = anyio.Lock()  # one decoder: frames are taken one worker at a time

        async def worker() -> None:
            while True:
                async with turn:
                    taken = await anyio.to_thread.run_sync(take)
                if taken is None:
                    return
                frame, pixels = taken
                prepared = await anyio.to_thread.run_sync(partial(from_pixels, pixels, max_pixels=max_pixels))
                await work(Sample(frame.pts, frame.t, prepared))

        async with anyio.create_task_group() as tasks:
            for _ in range(max(1, concurrency)):
                tasks.start_soon(worker)
        return outcome
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(reader.close)


async def stills(source: Source, times: list[tuple[int, float]], *, max_pixels: int) -> dict[int, Image.Image]:
    """The frames with these (pts, seconds), as displayed: a seek to each, not a pass over the video."""

    def grab() -> dict[int, Image.Image]:
        found: dict[int, Image.Image] = {}
        for pts, t in times:
            with Reader(source, start=t) as reader:
                for frame in reader.frames():
                    if frame.pts >= pts:
                        found[pts] = picture(frame.frame, reader.info.rotation, max_pixels)
                        break
        return found

    return await anyio.to_thread.run_sync(grab)
