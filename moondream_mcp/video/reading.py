"""Decoding a video as a stream of frames, each with its time, and turning a frame the way the viewer sees it
(by the container's display matrix). Blocking: called from worker threads, one frame in memory at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import av
import av.error
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from ..images.encode import fit_within
from .errors import VideoError
from .sampling import VideoInfo
from .source import Source

# Single-file containers only: playlists and concatenations (hls, concat, dash...) open further files or URLs
# named inside the video, past the file guard and the URL guard. Nested opens are refused as well.
CONTAINERS = frozenset(
    {"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "flv", "ogg", "asf", "mpeg"}
)
_READ_BUFFER = 1 << 20
_UPRIGHT = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}

Checkpoint = Callable[[], None]  # raises when the caller was cancelled; called once per decoded frame


@dataclass(frozen=True)
class Frame:
    index: int  # counted from the first frame of the range
    pts: int  # in the stream's time base: the frame's identity
    t: float  # seconds from the start of the video
    frame: VideoFrame


def _refuse_nested_open(url: str, flags: int, options: dict[str, Any]) -> Any:
    raise PermissionError("a video may not open other files")


def _turns(frame: VideoFrame) -> int:
    try:
        degrees = frame.rotation
    except (ValueError, TypeError, AttributeError):
        return 0
    return (round(degrees / 90) * 90) % 360


def open_input(file: BinaryIO, label: str) -> InputContainer:
    """The container in `file`; anything but a single-file container with a video stream is refused."""
    try:
        container = av.open(file, "r", buffer_size=_READ_BUFFER, io_open=_refuse_nested_open)
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        raise VideoError(f"{label} is not a video that can be read (FFmpeg could not open it).") from None
    problem = None
    if not set(container.format.name.split(",")) & CONTAINERS:
        problem = (
            f"{label} is a {container.format.name} file, not a single video file; give an MP4, MOV, MKV, WebM, "
            "AVI or MPEG-TS video."
        )
    elif not container.streams.video:
        problem = f"{label} has no video stream."
    if problem:
        container.close()
        raise VideoError(problem)
    return container


class Reader:
    """One pass over the frames of a video between `start` and `end` seconds, decoded as a stream."""

    def __init__(
        self,
        source: Source,
        *,
        start: float = 0.0,
        end: float | None = None,
        checkpoint: Checkpoint | None = None,
        other_packets: Callable[[Packet], None] | None = None,
    ) -> None:
        """`other_packets`, when given, receives the first audio stream's packets as they are demuxed."""
        self.label = source.label
        self._file = source.open()
        try:
            self.container = open_input(self._file, source.label)
        except BaseException:
            self._file.close()
            raise
        self.stream: VideoStream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"  # frame threads: decoding keeps up with sampling at 1080p
        self._start, self._end = start, end
        self._checkpoint = checkpoint or (lambda: None)
        self._other = other_packets
        try:
            self._frames = self._decode()
            first = next(self._frames, None)
        except BaseException:
            self.close()
            raise
        if first is None:
            self.close()
            where = f" after {start:g} s" if start else ""
            raise VideoError(f"{source.label} has no video frames{where}.")
        self._first: Frame | None = first
        self.info = self._describe(first)

    @property
    def time_base(self) -> Fraction:
        return self.stream.time_base or Fraction(1, 90_000)

    def frames(self) -> Iterator[Frame]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._frames

    def close(self) -> None:
        self.container.close()
        self._file.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _describe(self, first: Frame) -> VideoInfo:
        stream, rotation = self.stream, _turns(first.frame)
        width, height = first.frame.width, first.frame.height
        if rotation in (90, 270):
            width, height = height, width
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration: float | None = None
        if stream.duration:
            duration = float(stream.duration * self.time_base)
        elif self.container.duration:
            duration = self.container.duration / av.time_base
        return VideoInfo(
            width=width,
            height=height,
            rotation=rotation,
            fps=float(rate) if rate else 0.0,
            duration=duration,
            frames=stream.frames or None,
            audio=bool(self.container.streams.audio),
        )

    def _decode(self) -> Iterator[Frame]:
        tb = self.time_base
        origin = self.stream.start_time
        if self._start > 0:
            # To the key frame at or before `start`; the frames before it are decoded and dropped. A file that
            # cannot seek is decoded from its beginning instead.
            try:
                self.container.seek(round(self._start / tb) + (origin or 0), stream=self.stream, backward=True)
            except (av.error.FFmpegError, OSError, ValueError):
                pass
        rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(30)
        step = max(1, round(1 / (rate * tb)))  # a frame's length in pts, for streams that lose timestamps
        half = 0.5 / float(rate)
        index, previous = 0, None
        streams: list[Any] = [self.stream]
        if self._other is not None:
            streams += self.container.streams.audio[:1]
        try:
            for packet in self.container.demux(*streams):
                if packet.stream.index != self.stream.index:
                    if self._other is not None:
                        self._other(packet)
                    continue
                for frame in packet.decode():
                    self._checkpoint()
                    pts = frame.pts if frame.pts is not None else (previous + step if previous is not None else 0)
                    previous = pts
                    if origin is None:
                        origin = pts if not self._start else 0
                    t = float((pts - origin) * tb)
                    if t < self._start - half:
                        continue
                    if self._end is not None and t > self._end + half:
                        return
                    yield Frame(index, pts, t, frame)
                    index += 1
        except (av.error.FFmpegError, OSError, ValueError):
            raise VideoError(f"{self.label} could not be decoded: the video data is truncated or corrupt.") from None


def picture(frame: VideoFrame, rotation: int, max_pixels: int) -> Image.Image:
    """The frame as the viewer sees it, scaled down (by FFmpeg, before any RGB copy) to `max_pixels`."""
    stored_w, stored_h = frame.width, frame.height
    shown = (stored_h, stored_w) if rotation in (90, 270) else (stored_w, stored_h)
    w, h = fit_within(*shown, max_pixels)
    if rotation in (90, 270):
        w, h = h, w
    image = frame.to_image(width=w, height=h, interpolation="AREA" if (w, h) != (stored_w, stored_h) else None)
    return image.transpose(_UPRIGHT[rotation]) if rotation in _UPRIGHT else image
