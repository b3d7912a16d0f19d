"""Which frames of a video to look at: the sampling an agent asks for, and the sampler that applies it to
frames as they are decoded. Pure logic: no decoding here."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .errors import VideoError

if TYPE_CHECKING:
    from .reading import Frame


@dataclass(frozen=True)
class Sampling:
    """Which frames to look at: `fps` samples per second or every `every_n_frames`-th frame, at most
    `max_frames`, between `start` and `end` seconds."""

    fps: float | None = None
    every_n_frames: int | None = None
    max_frames: int = 300
    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        if self.fps is not None and self.every_n_frames is not None:
            raise VideoError("give fps or every_n_frames, not both")
        if self.end is not None and self.end <= self.start:
            raise VideoError(f"end ({self.end:g} s) must be after start ({self.start:g} s)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as displayed
    height: int
    rotation: int  # degrees counter-clockwise that turn the stored frames upright: 0, 90, 180 or 270
    fps: float
    duration: float | None  # seconds, when the container says
    frames: int | None  # when the container says
    audio: bool


class Sampler:
    """Which frames of the range are sampled: one per 1/fps seconds or every n-th frame, at most max_frames,
    spread over the whole range when its length is known. The range's last frame is always sampled, so
    nothing after the last sample goes unseen."""

    def __init__(self, sampling: Sampling, info: VideoInfo) -> None:
        self.sampling = sampling
        self.truncated = False  # stopped at max_frames before the end (the video's length was unknown)
        end = sampling.end if sampling.end is not None else info.duration
        if end is not None and info.duration is not None:
            end = min(end, info.duration)
        span = max(0.0, end - sampling.start) if end is not None else None
        cap = sampling.max_frames
        self._half = 0.5 / info.fps if info.fps else 0.0
        self._interval = 0.0
        self._step = 1
        if sampling.every_n_frames is not None:
            self._step = sampling.every_n_frames
            in_range = round(span * info.fps) if span is not None and info.fps else None
            if in_range is not None and cap > 1 and in_range / self._step + 1 > cap:
                self._step = math.ceil(in_range / (cap - 1))
            self.planned = min(cap, in_range // self._step + 1) if in_range is not None else cap
        else:
            self._interval = 1 / (sampling.fps or 1.0)
            if span is not None and cap > 1 and span / self._interval + 1 > cap:
                self._interval = span / (cap - 1)
            self.planned = min(cap, math.floor(span / self._interval) + 1) if span is not None else cap

    def sampled(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        start, cap = self.sampling.start, self.sampling.max_frames
        count, due = 0, start
        last: Frame | None = None
        last_taken = False
        for frame in frames:
            take = frame.t >= due - self._half if self._interval else frame.index % self._step == 0
            if take and count >= cap:  # a sample is due, and none is left
                self.truncated = True
                return
            if take:
                if self._interval:
                    due = start + (math.floor((frame.t - start + self._half) / self._interval) + 1) * self._interval
                count += 1
                yield frame
            last, last_taken = frame, take
        if last is not None and not last_taken and count < cap:
            yield last
